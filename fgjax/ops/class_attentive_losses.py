r"""Losses of method A (class-attentive contrastive learning): pure, config-free JAX.

The seed paper ("Fine-Grained Classification via Class-Attentive Contrastive
Representation Learning") numbers none of its equations; the references below
are to its sections:

* the attentive embedding ``z' = z (.) w_y`` (Sec. 3.3; :func:`attend`);
* its only loss, ``l_mod = 1 - <z'_i, z'_j> / (|z'_i| |z'_j|)`` on positive pairs
  (Sec. 3.4; :func:`class_attentive_cosine_loss`).

With positive pairs only, ``l_mod = 0`` is reached by mapping every sample to one
direction (collapse). Sec. 3.2 mentions different-class negatives but the loss
omits them; the two forms that add them are ours:

* ``margin`` (Siamese contrastive, Hadsell et al. 2006, on the cosine):
  ``l_v = (1 - s(v, v+)) + lambda * mean_{u: y_u != y_v} max(0, s(v, u) - m)``
  (:func:`margin_contrastive_loss`);
* ``infonce``: ``l_v = -log( exp(s(v, v+)/tau) / (exp(s(v, v+)/tau) + sum_{u: y_u != y_v} exp(s(v, u)/tau)) )``
  (:func:`info_nce_loss`);

both on a similarity matrix ``s`` of every ordered pair of views
(:func:`pair_similarities`), whose ``negative_weights`` argument says which class's
weights view a negative (``'anchor'``: the anchor's, the default; ``'own'`` lets the
weights alone separate the classes -- see that function).

Every function takes arrays and static numbers and returns arrays; tested against
NumPy references in ``tests/test_class_attentive.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


_EPS = 1e-8


def _normalise(x: jax.Array) -> jax.Array:
  # max(|x|^2, eps^2) rather than |x| + eps: the gradient stays finite at x = 0.
  return x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), _EPS ** 2))


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """cos(a, b) along the last axis: ``[..., d], [..., d] -> [...]`` (0 for a zero vector)."""
  return jnp.sum(_normalise(a) * _normalise(b), axis=-1)


def attend(z: jax.Array, class_weights: jax.Array, labels: jax.Array) -> jax.Array:
  """The attentive embedding ``z' = z (.) w_y`` (Sec. 3.3).

  Args:
    z: [B, d] embeddings.
    class_weights: [C, d], row c is w_c.
    labels: [B] int class ids.

  Returns:
    [B, d]: row b is ``z[b] * class_weights[labels[b]]``.
  """
  return z * class_weights[labels]


def class_attentive_cosine_loss(z_i: jax.Array, z_j: jax.Array, w_yi: jax.Array) -> jax.Array:
  """The paper's modified contrastive loss l_mod (Sec. 3.4), per positive pair.

  ``l_mod = 1 - <z'_i, z'_j> / (|z'_i| |z'_j|)`` with ``z' = z (.) w_y`` and both
  samples of class y.

  Args:
    z_i: [B, d] embeddings of the first samples.
    z_j: [B, d] embeddings of their positive partners (same class).
    w_yi: [B, d] the class weights of each pair's class (``class_weights[y]``).

  Returns:
    [B] losses in [0, 2].
  """
  return 1.0 - cosine_similarity(z_i * w_yi, z_j * w_yi)


def pair_similarities(z: jax.Array, labels: jax.Array, class_weights: jax.Array,
                      negative_weights: str = "anchor") -> jax.Array:
  """Cosine similarities of every ordered pair of views, seen through class weights.

  Why ``'anchor'`` is the default: with ``'own'``, disjoint supports of the
  ``w_c`` make every different-class cosine 0, so a constant ``z`` minimises
  any loss on these similarities -- the label does the work, and an embedding
  evaluated without the label has learnt nothing.

  Args:
    z: [N, d] embeddings.
    labels: [N] class ids.
    class_weights: [C, d].
    negative_weights: 'anchor': ``S[v, u] = cos(z_v (.) w_{y_v}, z_u (.) w_{y_v})`` (row v's
      class views both); 'own': ``S[v, u] = cos(z_v (.) w_{y_v}, z_u (.) w_{y_u})``.
      The two agree wherever ``y_u == y_v``.

  Returns:
    [N, N] similarities.
  """
  anchors = _normalise(attend(z, class_weights, labels))  # [N, d]
  if negative_weights == "own":
    return anchors @ anchors.T
  if negative_weights != "anchor":
    raise ValueError(f"negative_weights must be 'anchor' or 'own', got {negative_weights!r}")
  per_class = _normalise(z[None, :, :] * class_weights[:, None, :])  # [C, N, d]: z_u (.) w_c
  return jnp.einsum("vd,vud->vu", anchors, per_class[labels])


def negative_mask(labels: jax.Array) -> jax.Array:
  """``[N] -> [N, N]`` booleans: True where views v and u are of different classes."""
  return labels[:, None] != labels[None, :]


def margin_contrastive_loss(sim: jax.Array, partner: jax.Array, labels: jax.Array, *,
                            margin: float = 0.0, negative_weight: float = 1.0) -> jax.Array:
  """Siamese contrastive loss on cosine similarities, per anchor.

  ``l_v = (1 - S[v, partner_v]) + lambda * mean_{u: y_u != y_v} max(0, S[v, u] - margin)``:
  l_mod for the positive, a hinge for different-class pairs (Hadsell et al. 2006
  with the cosine distance). An anchor with no negative in the batch gets no hinge.

  Args:
    sim: [N, N] similarities (:func:`pair_similarities`).
    partner: [N] index of each view's positive partner.
    labels: [N] class ids.
    margin: cosines above it are penalised.
    negative_weight: lambda.

  Returns:
    [N] losses.
  """
  positive = jnp.take_along_axis(sim, partner[:, None], axis=1)[:, 0]
  negatives = negative_mask(labels)
  hinge = jnp.where(negatives, jax.nn.relu(sim - margin), 0.0).sum(1)
  return (1.0 - positive) + negative_weight * hinge / jnp.maximum(negatives.sum(1), 1)


def info_nce_loss(sim: jax.Array, partner: jax.Array, labels: jax.Array, *,
                  temperature: float = 0.1) -> jax.Array:
  """InfoNCE with different-class negatives, per anchor.

  ``l_v = -log softmax_{u in {v+} U N(v)}(S[v, u] / tau)[v+]`` with N(v) the views of
  other classes; 0 for an anchor without negatives.

  Args:
    sim: [N, N] similarities; partner: [N]; labels: [N]; temperature: tau > 0.

  Returns:
    [N] losses.
  """
  n = sim.shape[0]
  keep = negative_mask(labels) | (jnp.arange(n)[None, :] == partner[:, None])
  logits = jnp.where(keep, sim / temperature, -jnp.inf)
  positive = jnp.take_along_axis(sim, partner[:, None], axis=1)[:, 0] / temperature
  return jax.nn.logsumexp(logits, axis=1) - positive
