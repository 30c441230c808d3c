r"""Class-attentive contrastive learning (seed A; "Fine-Grained Classification via
Class-Attentive Contrastive Representation Learning", Sec. 3-4), made to work.

  python -m fgjax.main --config=configs/class_attentive.py:contrastive --workdir=runs/ca

The paper's pieces (Sec. 3.3-3.4):

* an embedding ``z = f(x)``: an MLP 200 -> 64 (:class:`MLPEmbedding`);
* a class-attentive module ``g`` giving a weight vector ``w_c`` in R^d per class
  (:class:`ClassAttention`); the paper does not say how ``w_c`` is parameterised,
  only (Theorem 1) that the weights are bounded: we use ``w_c = sigmoid(a_c)`` with a
  learnable table ``a`` in R^{C x d}, initialised at 0 (every ``w_c = 0.5``), so
  ``0 < w < 1``;
* the attentive embedding ``z' = z (.) w_y`` (:func:`attend`), y the sample's label;
* the loss ``l_mod = 1 - <z'_i, z'_j> / (|z'_i| |z'_j|)`` on positive pairs
  (:func:`class_attentive_cosine_loss`).

Why the paper's loss cannot work alone: with positive pairs only, the minimum
(``l_mod = 0``) is reached by mapping every sample to one direction -- collapse --
(the seed reports chance, 25 %; our standardising probe still reads some radius off
the tiny variation left, see the README). The ``cosine`` objective keeps that loss
exactly, to show it; the working variants add different-class *negatives* (Sec. 3.2
mentions them but the loss omits them):

* ``margin`` (Siamese contrastive, Hadsell/Chopra style on the cosine):
  ``l_v = (1 - s(v, v+)) + lambda * mean_{u: y_u != y_v} max(0, s(v, u) - m)``;
* ``infonce``: ``l_v = -log( exp(s(v, v+)/tau) / (exp(s(v, v+)/tau) + sum_{u: y_u != y_v} exp(s(v, u)/tau)) )``;

over the 2B views of a batch (each anchor and its positive partner are both
anchors; other same-class views are neither positive nor negative). With the
attention on, ``s(v, u) = cos(z_v (.) w_{y_v}, z_u (.) w_{y_v})``: the *anchor's* class
weights view both sides (``loss.negative_weights='anchor'``). Weighting each side by
its own class (``'own'``) would let ``w`` alone separate the classes: disjoint
supports of the ``w_c`` make every different-class cosine 0 and a constant ``z``
then minimises the loss -- the label does the work, and an embedding evaluated
without the label has learnt nothing. ``'own'`` is kept as a preset (measured: at
this budget the optimiser did not find that solution; README table).

A silent point that decides whether any cosine loss can work on this data: the
classes differ only in scale, and a zero-bias ReLU MLP is scale-equivariant, so
the hidden biases start random (``model.bias_init_std``; :class:`MLPEmbedding`).

**Evaluation without the label.** z' needs y, which a test sample does not have.
The headline embedding is the plain ``z = f(x)`` (label-free; a linear probe on
``z (.) w_c`` for every c concatenated would see the same information, as the probe
standardises each feature). Also reported: the *best match* ``z (.) w_c^`` with
``c^ = argmax_c cos(z (.) w_c, p_c)`` and ``p_c`` the normalised mean of the training
samples' ``z (.) w_c`` of class c (label-free at test time; its nearest-prototype
accuracy too), and, marked ``leaky_``, the probe on ``z (.) w_y`` with the *true*
test label -- what a label-conditioned evaluation would (wrongly) measure.

The linear probe is :func:`fgjax.evaluate.linear_probe.linear_probe` (100
epochs), trained on the train split and tested on the held-out split
(``probe_test_top1``), and, the seed's protocol, trained and tested on all samples
(``probe_all_top1``); ``unit_probe_*``: the same on ``z / |z|`` (the direction, all
that a cosine loss shapes). Collapse diagnostic: ``std_ratio`` = sqrt(d) x the mean over
dimensions of the per-dimension std of the L2-normalised embeddings (0: one
point; ~1: spread over the sphere; SimSiam's diagnostic) and the effective rank
of the centred embedding matrix (Roy & Vetterli 2007).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from typing import Any, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fgjax.data import circles
from fgjax.methods import class_attentive_config as ca_config

_EPS = 1e-8


# ----------------------------------------------------------------------------
# Modules


class MLPEmbedding(nn.Module):
  """z = f(x): Dense-ReLU layers, then a linear layer to ``embed_dim`` (Sec. 4.2).

  ``x: [B, 200] -> z: [B, embed_dim]``. The last layer has no ReLU: a ReLU output
  is non-negative, so every pair's cosine would be >= 0 and negatives could not
  be pushed past orthogonal.

  ``bias_init_std``: the hidden layers' biases start ~ N(0, std^2) instead of 0.
  Why it matters here: the circle classes differ only in *scale* (radius), and a
  ReLU MLP with zero biases is positively homogeneous, ``f(a x) = a f(x)`` for
  a > 0, so at initialisation the direction of z does not depend on the radius
  at all and a cosine loss -- scale-invariant -- gets no signal about the class
  (measured: cos(f(x), f(1.3 x)) = 1.0 at init; the 20-epoch runs then stay at
  pos cos = neg cos). Biases on the scale of the pre-activations (~0.8 with
  lecun-normal weights and |coordinate| ~ 0.8) make the ReLU pattern depend on
  the scale. Applied alike to every variant (README, "Class-attentive").
  """
  hidden_dims: Sequence[int] = (256, 256)
  embed_dim: int = 64
  bias_init_std: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    bias_init = (nn.initializers.normal(self.bias_init_std) if self.bias_init_std > 0
                 else nn.initializers.zeros)
    for width in self.hidden_dims:
      x = nn.relu(nn.Dense(width, bias_init=bias_init)(x))
    return nn.Dense(self.embed_dim)(x)


class ClassAttention(nn.Module):
  """The class-attentive module g: per-class weights ``w_c = sigmoid(a_c)`` (Sec. 3.3).

  Returns the table ``w: [num_classes, dim]`` with entries in (0, 1) (bounded, as
  Theorem 1 assumes); ``a`` starts at 0 so every class starts with the same
  weights (0.5).
  """
  num_classes: int
  dim: int

  @nn.compact
  def __call__(self) -> jax.Array:
    logits = self.param("logits", nn.initializers.zeros, (self.num_classes, self.dim))
    return jax.nn.sigmoid(logits)


class ClassAttentiveNet(nn.Module):
  """The embedding, optionally the class-attentive module, optionally a classifier head.

  ``__call__(x [B, D_in]) -> {'z': [B, d], 'class_weights': [C, d], 'logits': [B, C]}``;
  ``class_weights`` is all ones without attention (then ``z' = z``: the Siamese
  baseline), ``logits`` only with ``classifier=True`` (the supervised baseline).
  """
  num_classes: int
  hidden_dims: Sequence[int] = (256, 256)
  embed_dim: int = 64
  attention: bool = True
  classifier: bool = False
  bias_init_std: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    z = MLPEmbedding(tuple(self.hidden_dims), self.embed_dim, self.bias_init_std, name="embedding")(x)
    if self.attention:
      weights = ClassAttention(self.num_classes, self.embed_dim, name="attention")()
    else:
      weights = jnp.ones((self.num_classes, self.embed_dim), z.dtype)
    out = {"z": z, "class_weights": weights}
    if self.classifier:
      out["logits"] = nn.Dense(self.num_classes, name="head")(z)
    return out


# ----------------------------------------------------------------------------
# Pure losses


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


def _negative_mask(labels: jax.Array) -> jax.Array:
  return labels[:, None] != labels[None, :]  # [N, N]


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
  negatives = _negative_mask(labels)
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
  keep = _negative_mask(labels) | (jnp.arange(n)[None, :] == partner[:, None])
  logits = jnp.where(keep, sim / temperature, -jnp.inf)
  positive = jnp.take_along_axis(sim, partner[:, None], axis=1)[:, 0] / temperature
  return jax.nn.logsumexp(logits, axis=1) - positive


# ----------------------------------------------------------------------------
# Diagnostics


def collapse_std_ratio(z) -> float:
  """sqrt(d) x mean_k std_n (z_n / |z_n|)_k: 0 when all embeddings share one direction.

  Uniform directions on the sphere give ~1 (each coordinate's std is ~1/sqrt(d)).
  ``z: [N, d]``.
  """
  z = np.asarray(z, np.float64)
  return float(_unit(z).std(axis=0).mean() * np.sqrt(z.shape[1]))


def effective_rank(z) -> float:
  """exp(entropy of the normalised singular values) of the centred [N, d] matrix (1..d)."""
  z = np.asarray(z, np.float64)
  s = np.linalg.svd(z - z.mean(0), compute_uv=False)
  if s.sum() <= 0:
    return 0.0
  p = s / s.sum()
  p = p[p > 0]
  return float(np.exp(-(p * np.log(p)).sum()))


# ----------------------------------------------------------------------------
# Training


def build_net(cfg: ml_collections.ConfigDict) -> ClassAttentiveNet:
  return ClassAttentiveNet(num_classes=cfg.data.num_classes, hidden_dims=tuple(cfg.model.hidden_dims),
                           embed_dim=cfg.model.embed_dim, attention=bool(cfg.model.attention),
                           classifier=cfg.objective == "supervised",
                           bias_init_std=float(cfg.model.bias_init_std))


def _loss_fn(params, x_views: jax.Array, labels: jax.Array, *, net: ClassAttentiveNet,
             objective: str, loss_cfg: dict) -> tuple[jax.Array, dict]:
  """Loss of one batch. ``x_views: [2B, D_in]`` = B anchors then their B partners; ``labels: [2B]``."""
  out = net.apply(params, x_views)
  z, weights = out["z"], out["class_weights"]
  two_b = z.shape[0]
  b = two_b // 2
  partner = jnp.concatenate([jnp.arange(b, two_b), jnp.arange(b)])
  sim = pair_similarities(z, labels, weights, loss_cfg["negative_weights"])
  observed, negatives = jax.lax.stop_gradient(sim), _negative_mask(labels)
  metrics = {
      "pos_cos": jnp.take_along_axis(observed, partner[:, None], axis=1).mean(),
      "neg_cos": jnp.where(negatives, observed, 0.0).sum() / jnp.maximum(negatives.sum(), 1),
  }
  if objective == "supervised":
    logits = out["logits"][:b]  # the anchors' views; partners are not needed
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels[:b]).mean()
    metrics["train_top1"] = (logits.argmax(-1) == labels[:b]).mean()
  elif objective == "cosine":  # the paper's l_mod, symmetric over the pair
    per_pair = class_attentive_cosine_loss(z[:b], z[b:], weights[labels[:b]])
    loss = per_pair.mean()
  else:
    if objective == "margin":
      per_view = margin_contrastive_loss(sim, partner, labels, margin=loss_cfg["margin"],
                                         negative_weight=loss_cfg["negative_weight"])
    else:
      per_view = info_nce_loss(sim, partner, labels, temperature=loss_cfg["temperature"])
    loss = per_view.mean()
  return loss, metrics


def train_step(params, opt_state, x_views, labels, *, net, tx, objective, loss_cfg):
  """One Adam step: ``(params, opt_state, [2B, D_in], [2B]) -> (params, opt_state, metrics)``."""
  (loss, metrics), grads = jax.value_and_grad(
      functools.partial(_loss_fn, net=net, objective=objective, loss_cfg=loss_cfg), has_aux=True)(
          params, x_views, labels)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, {"loss": loss, **metrics}


def sample_pairs(key: jax.Array, anchors: jax.Array, train_y: jax.Array, class_members: jax.Array,
                 position_in_class: jax.Array, same_sample: bool) -> jax.Array:
  """Positive partners: another random sample of the anchor's class (or the anchor itself).

  Args:
    anchors: [B] indices into the training split.
    train_y: [N] labels; class_members: [C, n] indices of each class's samples;
    position_in_class: [N] where each sample sits in its class's row.

  Returns:
    [B] partner indices.
  """
  if same_sample:
    return anchors
  n_per_class = class_members.shape[1]
  offset = jax.random.randint(key, anchors.shape, 1, n_per_class)  # never 0: not the anchor
  return class_members[train_y[anchors], (position_in_class[anchors] + offset) % n_per_class]


def make_train_epoch(cfg: ml_collections.ConfigDict, net: ClassAttentiveNet, tx, data: circles.CirclesData):
  """A jitted ``(params, opt_state, epoch) -> (params, opt_state, mean metrics)`` over one epoch.

  The training split lives on the device; every step draws its batch from a
  per-epoch permutation (drop remainder), partners by :func:`sample_pairs`, and
  two augmented views by :func:`fgjax.data.circles.augment`. Randomness is
  ``fold_in(seed key, epoch)`` then ``fold_in(., step)``: no RNG state to carry.
  """
  train_x, train_y = jnp.asarray(data.train_x), jnp.asarray(data.train_y)
  labels_np = np.asarray(data.train_y)
  class_members_np = np.stack([np.flatnonzero(labels_np == c) for c in range(data.num_classes)])
  position_np = np.empty_like(labels_np)
  for row in class_members_np:
    position_np[row] = np.arange(row.size)
  class_members, position_in_class = jnp.asarray(class_members_np), jnp.asarray(position_np)
  n, batch = train_x.shape[0], cfg.optim.batch_size
  steps = n // batch
  aug = dict(rotate=bool(cfg.aug.rotate), roll=bool(cfg.aug.roll), extra_noise_std=float(cfg.aug.extra_noise_std))
  loss_cfg = {k: cfg.loss[k] for k in ("negative_weights", "margin", "negative_weight", "temperature")}
  step_fn = functools.partial(train_step, net=net, tx=tx, objective=cfg.objective, loss_cfg=loss_cfg)
  base_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1)  # 0 is the init key
  same_sample = cfg.loss.positive == "same_sample"

  @jax.jit
  def epoch_fn(params, opt_state, epoch):
    epoch_key, order_key = jax.random.split(jax.random.fold_in(base_key, epoch))
    order = jax.random.permutation(order_key, n)[:steps * batch].reshape(steps, batch)

    def body(carry, inputs):
      params, opt_state = carry
      step, anchors = inputs
      k_pair, k_view_a, k_view_b = jax.random.split(jax.random.fold_in(epoch_key, step), 3)
      partners = sample_pairs(k_pair, anchors, train_y, class_members, position_in_class, same_sample)
      views = jnp.concatenate([circles.augment(k_view_a, train_x[anchors], **aug),
                               circles.augment(k_view_b, train_x[partners], **aug)])
      labels = jnp.concatenate([train_y[anchors], train_y[partners]])
      params, opt_state, metrics = step_fn(params, opt_state, views, labels)
      return (params, opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), (jnp.arange(steps), order))
    return params, opt_state, jax.tree.map(jnp.mean, metrics)

  return epoch_fn, steps


def load_data(cfg: ml_collections.ConfigDict) -> circles.CirclesData:
  d = cfg.data
  return circles.make_circles(radii=tuple(d.radii), noise_std=d.noise_std, num_points=d.num_points,
                              train_per_class=d.train_per_class, test_per_class=d.test_per_class,
                              seed=d.data_seed)


def init_params(cfg: ml_collections.ConfigDict, net: ClassAttentiveNet, input_dim: int):
  return net.init(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0), jnp.zeros((1, input_dim), jnp.float32))


def train(cfg: ml_collections.ConfigDict, data: circles.CirclesData, *, log_fn=None):
  """Trains for ``optim.num_epochs``; returns ``(net, params, history)``.

  Raises:
    fgjax.train.NonFiniteLossError: a NaN/inf loss (names the epoch); never passed on.
  """
  from fgjax import train as train_lib  # the shared error type

  net = build_net(cfg)
  params = init_params(cfg, net, data.train_x.shape[1])
  tx = optax.adam(cfg.optim.learning_rate)
  opt_state = tx.init(params)
  epoch_fn, _ = make_train_epoch(cfg, net, tx, data)
  history = []
  for epoch in range(cfg.optim.num_epochs):
    params, opt_state, metrics = epoch_fn(params, opt_state, epoch)
    metrics = {k: float(v) for k, v in metrics.items()}
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
      raise train_lib.NonFiniteLossError(f"epoch {epoch + 1}: {bad[0]} is {metrics[bad[0]]}")
    history.append({"epoch": epoch + 1, **metrics})
    if log_fn:
      log_fn(epoch + 1, metrics)
  return net, params, history


# ----------------------------------------------------------------------------
# Evaluation


@functools.partial(jax.jit, static_argnames=("net",))
def _forward(net, params, x):
  return net.apply(params, x)


def embed(net: ClassAttentiveNet, params, x: np.ndarray) -> dict[str, np.ndarray]:
  """Frozen forward pass: ``{'z': [N, d], 'class_weights': [C, d], ('logits': [N, C])}``."""
  return {k: np.asarray(v) for k, v in _forward(net, params, jnp.asarray(x)).items()}


def best_match(z: np.ndarray, class_weights: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
  """Label-free class choice: ``argmax_c cos(z (.) w_c, p_c)``. ``z: [N, d]``, ``w, p: [C, d]`` -> [N]."""
  per_class = z[:, None, :] * class_weights[None, :, :]  # [N, C, d]
  per_class = per_class / np.maximum(np.linalg.norm(per_class, axis=-1, keepdims=True), _EPS)
  return np.einsum("ncd,cd->nc", per_class, prototypes).argmax(1)


def class_prototypes(z: np.ndarray, labels: np.ndarray, class_weights: np.ndarray) -> np.ndarray:
  """``p_c`` = normalised mean of the unit vectors ``z (.) w_c`` of the class-c samples: [C, d]."""
  protos = []
  for c, w in enumerate(class_weights):
    zc = z[labels == c] * w
    zc = zc / np.maximum(np.linalg.norm(zc, axis=1, keepdims=True), _EPS)
    mean = zc.mean(0)
    protos.append(mean / max(np.linalg.norm(mean), _EPS))
  return np.stack(protos)


def _unit(z: np.ndarray) -> np.ndarray:
  return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), _EPS)


def _probe_pair(train_f, train_y, test_f, test_y, hp) -> dict[str, float]:
  """Held-out probe (train -> test) and the seed's protocol (all samples -> all samples)."""
  from fgjax.evaluate.linear_probe import linear_probe
  all_f = np.concatenate([train_f, test_f])
  all_y = np.concatenate([train_y, test_y])
  return {"probe_test_top1": linear_probe(train_f, train_y, test_f, test_y, hp=hp)["top1"],
          "probe_all_top1": linear_probe(all_f, all_y, all_f, all_y, hp=hp)["top1"]}


def evaluate(cfg: ml_collections.ConfigDict, net: ClassAttentiveNet, params,
             data: circles.CirclesData) -> tuple[dict[str, float], np.ndarray]:
  """Every label-free metric of the module docstring; returns (metrics, test z [M, d])."""
  from fgjax.evaluate.linear_probe import ProbeHParams
  e = cfg.eval
  hp = ProbeHParams(epochs=e.probe_epochs, batch_size=e.probe_batch_size, learning_rate=e.probe_learning_rate,
                    weight_decay=e.probe_weight_decay, seed=e.probe_seed)
  tr, te = embed(net, params, data.train_x), embed(net, params, data.test_x)
  for name, z in (("train", tr["z"]), ("test", te["z"])):
    if not np.all(np.isfinite(z)):
      raise FloatingPointError(f"the {name} embeddings contain NaN or inf")
  out = _probe_pair(tr["z"], data.train_y, te["z"], data.test_y, hp)
  # The direction alone (what a cosine loss shapes): the norm of z carries the
  # radius even in a collapsed embedding, and the standardising probe reads it.
  unit = _probe_pair(_unit(tr["z"]), data.train_y, _unit(te["z"]), data.test_y, hp)
  out.update({k.replace("probe_", "unit_probe_"): v for k, v in unit.items()})
  out["std_ratio"] = collapse_std_ratio(te["z"])
  out["effective_rank"] = effective_rank(te["z"])
  if cfg.objective == "supervised":
    for split, res, y in (("test", te, data.test_y), ("train", tr, data.train_y)):
      out[f"classifier_{split}_top1"] = float((res["logits"].argmax(1) == y).mean())
  if cfg.model.attention:
    w = tr["class_weights"]
    # The label-free best match: class prototypes from the (labelled) training split.
    protos = class_prototypes(tr["z"], data.train_y, w)
    c_train, c_test = best_match(tr["z"], w, protos), best_match(te["z"], w, protos)
    out["prototype_test_top1"] = float((c_test == data.test_y).mean())
    best = _probe_pair(tr["z"] * w[c_train], data.train_y, te["z"] * w[c_test], data.test_y, hp)
    out.update({k.replace("probe_", "bestmatch_probe_"): v for k, v in best.items()})
    # Leaky, for reference only: the true label chooses the weights of a test sample.
    leaky = _probe_pair(tr["z"] * w[data.train_y], data.train_y, te["z"] * w[data.test_y], data.test_y, hp)
    out.update({"leaky_" + k: v for k, v in leaky.items()})
    out["attentive_std_ratio"] = collapse_std_ratio(te["z"] * w[data.test_y])
    out["class_weight_spread"] = float(w.std(0).mean())  # 0: every class has the same weights
  return out, te["z"]


def reference_metrics(cfg: ml_collections.ConfigDict, data: circles.CirclesData) -> dict[str, float]:
  """Method-free references: a linear probe on the raw 200-d inputs, and the generator-aware oracle."""
  from fgjax.evaluate.linear_probe import ProbeHParams
  e = cfg.eval
  hp = ProbeHParams(epochs=e.probe_epochs, batch_size=e.probe_batch_size, learning_rate=e.probe_learning_rate,
                    weight_decay=e.probe_weight_decay, seed=e.probe_seed)
  out = {"raw_" + k: v for k, v in _probe_pair(data.train_x, data.train_y, data.test_x, data.test_y, hp).items()}
  all_x, all_y = np.concatenate([data.train_x, data.test_x]), np.concatenate([data.train_y, data.test_y])
  out["oracle_test_top1"] = float((circles.oracle_predict(data.test_x, data.radii, data.noise_std)
                                   == data.test_y).mean())
  out["oracle_all_top1"] = float((circles.oracle_predict(all_x, data.radii, data.noise_std) == all_y).mean())
  return out


def tsne_png(features, labels, path: str, title: str, *, seed: int = 0, max_points: int = 1000) -> str:
  """Writes a 2-d t-SNE (scikit-learn) of ``features: [N, d]`` coloured by ``labels: [N]``.

  At most ``max_points`` samples (a seeded subset); drawn by ``fgjax.pictures``.

  Raises:
    PicturesError: matplotlib is missing (the optional extra 'plots').
  """
  from fgjax.pictures import draw
  from fgjax.pictures import views

  draw.pyplot()
  features, labels = np.asarray(features, np.float64), np.asarray(labels)
  if features.shape[0] > max_points:
    keep = np.sort(np.random.default_rng(seed).choice(features.shape[0], max_points, replace=False))
    features, labels = features[keep], labels[keep]
  xy = views.tsne(features, seed=seed)
  names = [f"class {c}" for c in range(int(labels.max()) + 1)]
  return draw.embedding_scatter(path, {"test embeddings z": (xy, labels, names)}, title=title)


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Validates, generates the data, trains, evaluates; writes results.json/.md (+ metrics.jsonl, tsne.png).

  Returns the results dict (``{'trained': ..., 'random_init': ..., 'reference': ..., 'run': ...}``).

  Raises:
    fgjax.config_lib.ConfigError: a bad config field (before anything runs).
    fgjax.train.WorkdirError, fgjax.train.NonFiniteLossError.
  """
  from fgjax.infra import workdir as workdir_lib

  ca_config.validate(cfg)
  workdir = workdir_lib.prepare(workdir)
  with workdir_lib.Lock(workdir):  # one run per workdir (no checkpoints here: nothing to resume)
    return _train_and_evaluate(cfg, workdir)


def _train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """:func:`train_and_evaluate` in a checked, locked workdir."""
  from fgjax.infra import workdir as workdir_lib
  from fgjax.evaluate import report

  workdir_lib.write_config(workdir, cfg)
  start = time.time()
  data = load_data(cfg)
  variant = ca_config.variant_name(cfg)
  logging.info("class_attentive %s: %d train / %d test samples, %d-d, radii %s", variant,
               data.train_x.shape[0], data.test_x.shape[0], data.train_x.shape[1], data.radii)

  with open(os.path.join(workdir, "metrics.jsonl"), "w") as metrics_file:
    def log_fn(epoch, metrics):
      metrics_file.write(json.dumps({"epoch": epoch, **metrics}) + "\n")
      logging.info("epoch %d/%d  %s", epoch, cfg.optim.num_epochs,
                   "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    net, params, history = train(cfg, data, log_fn=log_fn)
  train_seconds = time.time() - start

  results: dict[str, Any] = {}
  results["trained"], test_z = evaluate(cfg, net, params, data)
  if cfg.eval.random_init_baseline:
    random_metrics, _ = evaluate(cfg, net, init_params(cfg, net, data.train_x.shape[1]), data)
    results["random_init"] = {k: v for k, v in random_metrics.items()
                              if k in ("probe_test_top1", "probe_all_top1", "unit_probe_test_top1",
                                       "unit_probe_all_top1", "std_ratio", "effective_rank")}
  results["reference"] = reference_metrics(cfg, data)
  pictures = {}
  if cfg.eval.tsne:
    pictures["tsne"] = tsne_png(test_z, data.test_y, os.path.join(workdir, "tsne.png"),
                                f"{variant}, seed {cfg.seed}: test z (held-out probe "
                                f"{100 * results['trained']['probe_test_top1']:.1f} %)",
                                seed=cfg.seed, max_points=cfg.eval.tsne_max_points)
  results["run"] = {
      "variant": variant,
      "objective": cfg.objective,
      "attention": bool(cfg.model.attention),
      "seed": cfg.seed,
      "data": f"circles radii={tuple(data.radii)} noise_std={data.noise_std} points={data.num_points} "
              f"train={data.train_x.shape[0]} test={data.test_x.shape[0]} data_seed={cfg.data.data_seed}",
      "epochs": cfg.optim.num_epochs,
      "final_loss": round(history[-1]["loss"], 6),
      "final_pos_cos": round(history[-1]["pos_cos"], 6),
      "final_neg_cos": round(history[-1]["neg_cos"], 6),
      "train_seconds": round(train_seconds, 2),
      "total_seconds": round(time.time() - start, 2),
      "eval_embedding": "plain z = f(x) (label-free); bestmatch_*: z*w_c^ with the nearest class "
                        "prototype; leaky_*: z*w_y with the true label (not label-free)",
  }
  report.write_results(workdir, results, title=f"Class-attentive contrastive ({variant}) on circles")
  if pictures:
    from fgjax.pictures import make as pictures_lib
    pictures_lib.link_in_results(workdir, pictures)
  logging.info("held-out probe %.4f, all-samples probe %.4f, std_ratio %.4f",
               results["trained"]["probe_test_top1"], results["trained"]["probe_all_top1"],
               results["trained"]["std_ratio"])
  return results


# ----------------------------------------------------------------------------
# The launch table: python -m fgjax.methods.class_attentive --table RUNS_DIR


TABLE_ROWS = (  # (run name in launch/class_attentive.sh, title, the seed's reported accuracy)
    ("paper", "class-attentive, the paper's loss (positives only) `:paper`", "25 %"),
    ("siamese_paper", "Siamese, positives only (the paper's baseline) `:siamese,positives_only`", "25 %"),
    ("contrastive", "**class-attentive + negatives (margin)** `:contrastive`", "-"),
    ("contrastive_infonce", "class-attentive + negatives (InfoNCE) `:contrastive,infonce`", "-"),
    ("contrastive_own", "class-attentive + negatives, own-class weights `:contrastive,own_weights`", "-"),
    ("contrastive_zero_bias", "class-attentive + negatives, zero initial biases "
     "`:contrastive --config.model.bias_init_std=0`", "-"),
    ("siamese", "Siamese + negatives (margin), no attention `:siamese`", "-"),
    ("supervised", "supervised MLP classifier on raw inputs `:supervised`", "-"),
)


def _cell(values: list[float]) -> str:
  values = [100 * v for v in values]
  if not values:
    return "n/a"
  return f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")


def _load_results(runs_dir: str, setting: str, name: str, seed: int) -> dict | None:
  path = os.path.join(runs_dir, setting, f"{name}_seed{seed}", "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _first_random_init(runs_dir: str, setting: str) -> dict | None:
  """The untrained-embedding metrics of the first seed-0 run that has them."""
  for name, _, _ in TABLE_ROWS:
    res = _load_results(runs_dir, setting, name, 0)
    if res and "random_init" in res:
      return res["random_init"]
  return None


def write_table(runs_dir: str, settings: Sequence[str], seeds: int) -> str:
  """The Markdown table of ``RUNS_DIR/<setting>/<row>_seed<s>/results.json`` (mean ± std over seeds)."""
  lines = []
  for setting in settings:
    first = None
    lines += [f"### Data: {setting}", "",
              "| method | seed's reported | probe on z, held-out | probe on z, all samples (seed's protocol) | "
              "probe on z/\\|z\\|, held-out | classifier or best-match prototype, held-out | "
              "std ratio (0 = collapsed) | eff. rank |",
              "|---|---|---|---|---|---|---|---|"]
    for name, title, reported in TABLE_ROWS:
      res = [r for r in (_load_results(runs_dir, setting, name, s) for s in range(seeds)) if r]
      if not res:
        continue
      first = first or res[0]
      trained = [r["trained"] for r in res]
      extra_key = ("classifier_test_top1" if "classifier_test_top1" in trained[0]
                   else "prototype_test_top1" if "prototype_test_top1" in trained[0] else None)
      extra = _cell([t[extra_key] for t in trained]) if extra_key else "-"
      count = "" if len(res) == seeds else f" ({len(res)} seeds)"
      lines.append(f"| {title}{count} | {reported} | {_cell([t['probe_test_top1'] for t in trained])} | "
                   f"{_cell([t['probe_all_top1'] for t in trained])} | "
                   f"{_cell([t['unit_probe_test_top1'] for t in trained])} | {extra} | "
                   f"{statistics.mean(t['std_ratio'] for t in trained):.3f} | "
                   f"{statistics.mean(t['effective_rank'] for t in trained):.1f} |")
    if first:
      ref = first["reference"]
      ri = _first_random_init(runs_dir, setting)
      if ri:
        lines.append(f"| untrained MLP embedding (seed 0) | - | {_cell([ri['probe_test_top1']])} | "
                     f"{_cell([ri['probe_all_top1']])} | {_cell([ri['unit_probe_test_top1']])} | - | "
                     f"{ri['std_ratio']:.3f} | {ri['effective_rank']:.1f} |")
      lines.append(f"| linear classifier on the raw 200-d input | - | {_cell([ref['raw_probe_test_top1']])} | "
                   f"{_cell([ref['raw_probe_all_top1']])} | - | - | - | - |")
      lines.append(f"| oracle: nearest radius, knows the generator (a ceiling, not a method) | - | "
                   f"{_cell([ref['oracle_test_top1']])} | {_cell([ref['oracle_all_top1']])} | - | - | - | - |")
      lines += ["", f"Data: {first['run']['data']}. Mean ± std over {seeds} seeds, in %.", ""]
  return "\n".join(lines)


def _main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m fgjax.methods.class_attentive",
                                   description="Table of a launch/class_attentive.sh run.")
  parser.add_argument("--table", required=True, metavar="RUNS_DIR")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--settings", default="default,hard")
  args = parser.parse_args(argv)
  print(write_table(args.table, [s for s in args.settings.split(",") if s], args.seeds))
  return 0


if __name__ == "__main__":
  sys.exit(_main())
