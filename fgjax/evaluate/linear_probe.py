"""Linear probe on frozen features, with stratified label fractions.

The probe never re-runs the encoder: features are extracted once, and a linear
classifier is trained on the [N, d] feature matrix with optax, the whole
training being one jitted ``lax.scan`` (a few seconds on a CPU for 10^4
features). Protocol (our reading of "linear evaluation with 100/50/20 % of the
labels", Perturb-SSL Sec. 4; MoCo's linear protocol on a feature matrix):

* features are standardised with the mean and standard deviation of the
  training subset (the parameter-free BatchNorm of MAE's linear probe: the
  learning rate then does not depend on the encoder's feature scale);
* SGD with momentum 0.9, cosine learning-rate decay, optional L2 weight decay,
  mini-batches drawn from a fresh permutation every epoch;
* top-1 (and top-5 when there are more than 5 classes) on the test split.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def stratified_subset(labels, fraction: float, seed: int) -> np.ndarray:
  """Indices of a class-stratified subset holding ``fraction`` of the samples.

  Every class keeps ``max(1, round(fraction * n_c))`` of its ``n_c`` samples,
  chosen uniformly at random; the choice depends only on ``(labels, fraction,
  seed)``, so a run is reproducible and two encoders are probed on the same
  subset.

  Args:
    labels: [N] class labels (any values ``np.unique`` sorts).
    fraction: in (0, 1]; 1 returns every index.
    seed: seeds the per-class draw.

  Returns:
    [M] int64 indices into ``labels``, ascending.
  """
  fraction = float(fraction)
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.size == 0:
    raise ValueError(f"labels must be a non-empty [N] array, got shape {labels.shape}")
  if fraction == 1.0:
    return np.arange(labels.size)
  rng = np.random.default_rng(seed)
  _, ids = np.unique(labels, return_inverse=True)
  ids = ids.reshape(-1)
  chosen = []
  for class_id in range(ids.max() + 1):  # classes in sorted label order
    members = np.flatnonzero(ids == class_id)
    keep = max(1, int(round(fraction * members.size)))
    chosen.append(rng.choice(members, size=keep, replace=False))
  return np.sort(np.concatenate(chosen))


@dataclasses.dataclass(frozen=True)
class ProbeHParams:
  """Linear-probe training settings (config: ``eval.probe_*``)."""
  epochs: int = 100
  batch_size: int = 256
  learning_rate: float = 0.1
  weight_decay: float = 0.0
  seed: int = 0

  def __post_init__(self):
    for name in ("epochs", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"probe {name} must be >= 1, got {getattr(self, name)}")
    if not self.learning_rate > 0:
      raise ValueError(f"probe learning_rate must be > 0, got {self.learning_rate}")
    if self.weight_decay < 0:
      raise ValueError(f"probe weight_decay must be >= 0, got {self.weight_decay}")


def _standardise(train_x: jax.Array, test_x: jax.Array):
  mean = train_x.mean(axis=0)
  std = train_x.std(axis=0)
  scale = 1.0 / jnp.maximum(std, 1e-6)  # constant features stay constant (0)
  return (train_x - mean) * scale, (test_x - mean) * scale


@functools.partial(jax.jit, static_argnames=("num_classes", "hp"))
def _train_and_predict(train_x: jax.Array, train_y: jax.Array, test_x: jax.Array, *,
                       num_classes: int, hp: ProbeHParams) -> jax.Array:
  """Trains W, b on (train_x [N, d], train_y [N]) and returns test logits [M, K]."""
  train_x, test_x = _standardise(train_x, test_x)
  n, d = train_x.shape
  batch = min(hp.batch_size, n)
  steps_per_epoch = -(-n // batch)
  total = hp.epochs * steps_per_epoch
  tx = optax.chain(
      optax.add_decayed_weights(hp.weight_decay),
      optax.sgd(optax.cosine_decay_schedule(hp.learning_rate, total), momentum=0.9))
  params = {"w": jnp.zeros((d, num_classes), jnp.float32),
            "b": jnp.zeros((num_classes,), jnp.float32)}
  opt_state = tx.init(params)

  def loss_fn(p, x, y):
    logits = x @ p["w"] + p["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def epoch(carry, key):
    # One permutation per epoch; its length is padded to whole batches by
    # wrapping around, so a few samples appear twice in the last batch.
    order = jax.random.permutation(key, n)
    order = jnp.concatenate([order, order])[:steps_per_epoch * batch]

    def step(carry, rows):
      p, s = carry
      grads = jax.grad(loss_fn)(p, train_x[rows], train_y[rows])
      updates, s = tx.update(grads, s, p)
      return (optax.apply_updates(p, updates), s), None

    carry, _ = jax.lax.scan(step, carry, order.reshape(steps_per_epoch, batch))
    return carry, None

  keys = jax.random.split(jax.random.PRNGKey(hp.seed), hp.epochs)
  (params, _), _ = jax.lax.scan(epoch, (params, opt_state), keys)
  return test_x @ params["w"] + params["b"]


def topk_accuracy(logits, labels, ks=(1, 5)) -> dict[str, float]:
  """Top-k accuracy of class scores.

  A sample counts as correct at k when its label is among the k highest
  scores; ties in the scores go to the lower class index (``lax.top_k``).

  Args:
    logits: [N, K] class scores.
    labels: [N] int class ids in [0, K).
    ks: each k in [1, K].

  Returns:
    {'top{k}': accuracy in [0, 1]} for each k.
  """
  logits = np.asarray(logits)
  labels = np.asarray(labels)
  if logits.ndim != 2 or labels.shape != (logits.shape[0],) or logits.shape[0] == 0:
    raise ValueError(f"need logits [N, K] and labels [N] with N > 0, got {logits.shape}, {labels.shape}")
  if not np.all(np.isfinite(logits)):
    raise ValueError("logits contain NaN or inf")
  num_classes = logits.shape[1]
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"labels must be in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
  for k in ks:
    if not 1 <= int(k) <= num_classes:
      raise ValueError(f"top-k needs 1 <= k <= {num_classes} classes, got k={k}")
  _, top = jax.lax.top_k(jnp.asarray(logits, jnp.float32), int(max(ks)))
  hits = np.asarray(top) == labels[:, None]  # [N, max k]
  return {f"top{k}": float(hits[:, :int(k)].any(axis=1).mean()) for k in ks}


def linear_probe(train_features, train_labels, test_features, test_labels, *,
                 fraction: float = 1.0, hp: ProbeHParams = ProbeHParams(),
                 subset_seed: int = 0) -> dict[str, Any]:
  """Trains a linear classifier on a stratified ``fraction`` of the train features.

  Args:
    train_features: [N, d] frozen features of the training split.
    train_labels: [N] labels.
    test_features: [M, d].
    test_labels: [M].
    fraction: share of labelled training samples, in (0, 1] (``stratified_subset``).
    hp: training settings.
    subset_seed: seeds the subset (the probe's own init is zeros; its
      mini-batch order uses ``hp.seed``).

  Returns:
    {'top1': float, 'top5': float (only with more than 5 classes),
     'num_train': int, 'num_test': int}.
  """
  train_features = np.asarray(train_features, np.float32)
  test_features = np.asarray(test_features, np.float32)
  train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
  for name, x, y in (("train", train_features, train_labels), ("test", test_features, test_labels)):
    if x.ndim != 2 or x.shape[0] == 0:
      raise ValueError(f"{name} features must be a non-empty [N, d] array, got shape {x.shape}")
    if y.shape != (x.shape[0],):
      raise ValueError(f"{name} labels must be [{x.shape[0]}], got shape {y.shape}")
    if not np.all(np.isfinite(x)):
      raise ValueError(f"{name} features contain NaN or inf")
  if train_features.shape[1] != test_features.shape[1]:
    raise ValueError(f"train and test feature dims differ: {train_features.shape[1]} vs {test_features.shape[1]}")
  subset = stratified_subset(train_labels, fraction, subset_seed)
  classes, ids = np.unique(np.concatenate([train_labels, test_labels]), return_inverse=True)
  ids = ids.reshape(-1).astype(np.int32)
  train_ids, test_ids = ids[:len(train_labels)][subset], ids[len(train_labels):]
  logits = _train_and_predict(jnp.asarray(train_features[subset]), jnp.asarray(train_ids),
                              jnp.asarray(test_features), num_classes=len(classes), hp=hp)
  ks = (1, 5) if len(classes) > 5 else (1,)
  out: dict[str, Any] = topk_accuracy(logits, test_ids, ks)
  out["num_train"] = int(subset.size)
  out["num_test"] = int(test_ids.size)
  return out
