"""Self-supervised losses of the Perturb-SSL method (P): MoCo InfoNCE, NT-Xent, SimSiam.

All functions are pure, jit-able and return *per-example* losses ``[B]``; the
caller takes the mean (or a masked mean). Inputs of any floating dtype are cast
to at least float32 before any arithmetic, because a contrastive loss divides
cosine similarities by a small temperature (0.2) and exponentiates them:
bfloat16 logits would lose most of the signal. float64 inputs (``jax_enable_x64``)
stay float64, which the gradient-check tests rely on.

Matrix products use ``Precision.HIGHEST`` so that accelerators which would
otherwise use TF32/bf16 passes for float32 matmuls compute the logits in true
float32; their cost (``[B, K] @ [K, Q]``) is negligible next to the encoder.

References:
  * MoCo v2 / InfoNCE: He et al. 2020 (Eq. 1), Chen et al. 2020 ("Improved
    baselines"); official code uses cross-entropy with the positive at index 0.
  * NT-Xent: Chen et al. 2020 (SimCLR, Eq. 1); Perturb-SSL paper Eq. 1 and Eq. 7
    (literal form excludes the positive from the denominator, as the
    "decoupled" loss of Yeh et al. 2022).
  * SimSiam: Chen & He 2021, Eq. 1-2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


# Logits must be computed in real float32 (see module docstring).
_PRECISION = jax.lax.Precision.HIGHEST


def _at_least_float32(x: jax.Array) -> jax.Array:
  """Casts ``x`` to float32 unless it is already float32 or wider (float64)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """L2-normalises ``x`` along ``axis``: ``x / max(||x||, eps)``.

  >>> import jax.numpy as jnp
  >>> l2_normalize(jnp.array([[3.0, 4.0], [0.0, 0.0]])).tolist()  # [B=2, K=2]; a zero row stays zero
  [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]

  Args:
    x: any shape, e.g. ``[B, K]``.
    axis: the axis holding the vector components.
    eps: lower bound on the norm, so a zero vector maps to zero (not NaN) and
      its gradient is finite.

  Returns:
    An array of the shape of ``x``, in at least float32.
  """
  x = _at_least_float32(x)
  sum_sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  # rsqrt(max(|x|^2, eps^2)) == 1 / max(|x|, eps); clamping the squared norm
  # avoids the infinite derivative of sqrt at 0.
  return x * jax.lax.rsqrt(jnp.maximum(sum_sq, eps * eps))


def infonce_with_queue(
    *,
    query: jax.Array,
    key: jax.Array,
    queue: jax.Array,
    temperature: float,
) -> jax.Array:
  """Per-example MoCo InfoNCE loss with a queue of negatives.

  ``logits = [q . k, q . queue_1, ..., q . queue_Q] / temperature`` and
  ``loss = logsumexp(logits) - logits[0]``, i.e. cross-entropy with the positive
  at index 0, the positive included in the denominator (MoCo Eq. 1 and the
  official implementation). This is ``L_C`` of Perturb-SSL Eq. 8 for the MoCo
  base, and the target of the Grad-CAM scores (Eq. 3).

  No ``stop_gradient`` is applied: in MoCo the keys come from the momentum
  encoder and the queue is state, so the caller supplies them without a
  gradient path; gradients w.r.t. ``key``/``queue`` are exact if requested.

  Args:
    query: ``[B, K]`` query embeddings, assumed L2-normalised.
    key: ``[B, K]`` positive key embeddings, assumed L2-normalised.
    queue: ``[Q, K]`` negative key embeddings, assumed L2-normalised.
    temperature: softmax temperature tau (MoCo v2 uses 0.2).

  Returns:
    ``[B]`` per-example losses, in at least float32.
  """
  query = _at_least_float32(query)
  key = _at_least_float32(key)
  queue = _at_least_float32(queue)
  positive_logits = jnp.sum(query * key, axis=-1, keepdims=True)  # [B, 1]
  negative_logits = jnp.matmul(query, queue.T, precision=_PRECISION)  # [B, Q]
  logits = jnp.concatenate([positive_logits, negative_logits], axis=-1)
  logits = logits / temperature
  return jax.nn.logsumexp(logits, axis=-1) - logits[:, 0]


def nt_xent(
    *,
    z_a: jax.Array,
    z_b: jax.Array,
    temperature: float,
    include_positive_in_denominator: bool = True,
) -> jax.Array:
  """Per-pair NT-Xent loss over the ``2B`` embeddings of a batch of pairs.

  The ``2B`` embeddings are ``e = concat([z_a, z_b])``. For anchor ``a_i`` the
  positive is ``b_i`` and the negatives are the other ``2B - 2`` embeddings
  (``a_j``, ``b_j`` for ``j != i``); the self-similarity ``a_i . a_i`` is never
  in the denominator. Symmetrically for anchor ``b_i``. The loss of pair ``i``
  is the mean of the two directions ``a_i -> b_i`` and ``b_i -> a_i``.

  Two denominators (``l_ij = e_i . e_j / temperature``):

  * ``include_positive_in_denominator=True`` (default, SimCLR Eq. 1):
    ``-l_ip + log(exp(l_ip) + sum_neg exp(l_in))``, the usual cross-entropy
    form; always ``>= 0`` (``> 0`` when ``B >= 2``).
  * ``include_positive_in_denominator=False``: the *literal* Perturb-SSL
    Eq. 1 / Eq. 7 (``L_Cp`` on reconstructions ``z_hat``, ``z_hat_p``), whose
    denominator sums over ``z_i != z, z_i != z_p``, i.e. the negatives only
    (the "decoupled" contrastive loss of Yeh et al. 2022):
    ``-l_ip + log(sum_neg exp(l_in))``. It can be negative, and needs
    ``B >= 2`` (otherwise there are no negatives and it is undefined).

  Args:
    z_a: ``[B, K]`` first-view embeddings, assumed L2-normalised.
    z_b: ``[B, K]`` second-view embeddings, assumed L2-normalised; row ``i``
      is the positive of ``z_a[i]``.
    temperature: softmax temperature tau.
    include_positive_in_denominator: see above. A static Python bool.

  Returns:
    ``[B]`` per-pair losses, in at least float32.

  Raises:
    ValueError: (at trace time) if shapes differ, or ``B < 2`` with the
      positive excluded from the denominator.
  """
  if z_a.shape != z_b.shape or z_a.ndim != 2:
    raise ValueError(
        f"nt_xent: z_a and z_b must both be [B, K]; got {z_a.shape}, {z_b.shape}.")
  batch = z_a.shape[0]
  if batch < 2 and not include_positive_in_denominator:
    raise ValueError(
        "nt_xent: with include_positive_in_denominator=False there are no "
        f"negatives for a batch of {batch}; need B >= 2.")
  embeddings = jnp.concatenate(
      [_at_least_float32(z_a), _at_least_float32(z_b)], axis=0)  # [2B, K]
  logits = jnp.matmul(
      embeddings, embeddings.T, precision=_PRECISION) / temperature  # [2B, 2B]

  index = jnp.arange(2 * batch)
  positive_index = (index + batch) % (2 * batch)  # a_i <-> b_i
  positive_logits = logits[index, positive_index]  # [2B]

  # Entries that enter the denominator: never the anchor itself; the positive
  # only in the SimCLR form.
  in_denominator = index[:, None] != index[None, :]
  if not include_positive_in_denominator:
    in_denominator &= positive_index[:, None] != index[None, :]
  # -inf contributes exp(-inf) = 0 to logsumexp; every row keeps >= 1 finite
  # entry (checked above), so no NaN.
  masked_logits = jnp.where(in_denominator, logits, -jnp.inf)
  per_anchor = jax.nn.logsumexp(masked_logits, axis=-1) - positive_logits  # [2B]
  return 0.5 * (per_anchor[:batch] + per_anchor[batch:])


def pair_top1_accuracy(z_a: jax.Array, z_b: jax.Array) -> jax.Array:
  """The pair task's top-1: how often a pair's partner is its nearest of the ``2B - 1`` others.

  The retrieval task NT-Xent trains (:func:`nt_xent`): for each of the ``2B``
  anchors of ``e = concat([z_a, z_b])``, whether its partner (``b_i`` for
  ``a_i`` and back) has the highest cosine similarity among all other
  embeddings. A diagnostic (no gradient): 1/(2B - 1) is chance, 1 a solved task.

  Args:
    z_a: ``[B, K]`` first embeddings of the pairs (need not be normalised).
    z_b: ``[B, K]`` their partners, row ``i`` the partner of ``z_a[i]``.

  Returns:
    A float32 scalar in [0, 1].
  """
  if z_a.shape != z_b.shape or z_a.ndim != 2:
    raise ValueError(f"pair_top1_accuracy: z_a and z_b must both be [B, K]; got {z_a.shape}, {z_b.shape}.")
  batch = z_a.shape[0]
  e = l2_normalize(jax.lax.stop_gradient(jnp.concatenate([_at_least_float32(z_a), _at_least_float32(z_b)])))
  similarity = jnp.matmul(e, e.T, precision=_PRECISION)
  index = jnp.arange(2 * batch)
  similarity = jnp.where(index[:, None] == index[None, :], -jnp.inf, similarity)  # never the anchor itself
  return jnp.mean((jnp.argmax(similarity, axis=-1) == (index + batch) % (2 * batch)).astype(jnp.float32))


def _negative_cosine(p: jax.Array, z: jax.Array) -> jax.Array:
  """``D(p, z) = -cos(p, z)`` per row; ``[B, K], [B, K] -> [B]``."""
  return -jnp.sum(l2_normalize(p) * l2_normalize(z), axis=-1)


def simsiam_loss(
    *,
    p1: jax.Array,
    z2: jax.Array,
    p2: jax.Array,
    z1: jax.Array,
) -> jax.Array:
  """Per-example symmetric SimSiam loss (Chen & He 2021, Eq. 1-2).

  ``L = 0.5 * (D(p1, sg(z2)) + D(p2, sg(z1)))`` with ``D(p, z) = -cos(p, z)``
  and ``sg`` = stop-gradient: the projections ``z`` are targets, only the
  predictions ``p`` receive gradient (the stop-gradient is what prevents
  collapse in SimSiam). Inputs need not be normalised. Range ``[-1, 1]``;
  minimum ``-1`` when each ``p`` is parallel to the other view's ``z``.

  Args:
    p1: ``[B, K]`` predictor output of view 1.
    z2: ``[B, K]`` projector output of view 2 (target of ``p1``).
    p2: ``[B, K]`` predictor output of view 2.
    z1: ``[B, K]`` projector output of view 1 (target of ``p2``).

  Returns:
    ``[B]`` per-example losses, in at least float32.
  """
  return 0.5 * (
      _negative_cosine(p1, jax.lax.stop_gradient(z2))
      + _negative_cosine(p2, jax.lax.stop_gradient(z1)))


def reconstruction_loss(x: jax.Array, x_hat: jax.Array) -> jax.Array:
  """L_R of Perturb-SSL (Eq. 2): the mean squared error ``mean((x - x_hat)^2)`` over every element.

  Args:
    x: ``[b, H, W, 3]`` normalised clean images (the target).
    x_hat: ``[b, H, W, 3]`` the decoder's reconstructions ``h(f(x))``.

  Returns:
    a scalar (the mean over the batch, pixels and channels).
  """
  return jnp.mean(jnp.square(x - x_hat))
