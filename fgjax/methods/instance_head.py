r"""The instance-classification head of Base-Indi (seed B, Eqs. 3-5) and its losses.

Every training image ``i`` (``0 <= i < n``) is its own class with a weight
vector ``w_i^I`` and a bias. The weights are stored **grouped by super-class**:
``kernel [G, m, d]``, ``bias [G, m]``, where ``G`` is the number of
super-classes (1 when the data has none), ``m = max_b n_b`` the size of the
largest one, and instance ``i`` lives in row ``(group_of[i], slot_of[i])``; the
``G * m - n`` padding rows are masked out of every softmax. One layout serves
both objectives:

* Eq. 3/4, softmax over all n instances (``instance_loss_all``): the logits are
  ``v @ kernel.reshape(G*m, d).T`` -- cost O(d * n) per image (plus the padding,
  none when the super-classes are equally large);
* Eq. 5, softmax over the instances of the image's own super-class
  (``instance_loss_within_super``): each super-class's images of the batch are
  gathered into a ``[G, C, d]`` block (C = capacity per super-class) and
  multiplied by that super-class's ``[m, d]`` weights only -- cost O(d * m) per
  image instead of O(d * n), with no ``[b, n]`` logit matrix. A batch holding
  more than C images of one super-class takes the exact masked path for that
  step (``lax.cond``: only the branch taken runs), so the loss is the same
  either way; the step reports it.

Masked logits are set to ``_MASKED`` (-1e30), not -inf: ``exp`` of it is exactly
0, so the softmax is exactly the restricted one, while a padding row whose
target is masked gives a large finite number rather than inf * 0 = NaN.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


_MASKED = -1e30
_PRECISION = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True, eq=False)
class InstanceLayout:
  """Where each training instance's weights live in the grouped head (host numpy).

  Attributes:
    group_of: int32 [n], the super-class of instance i (all 0 without super-classes).
    slot_of: int32 [n], the row of instance i within its group (instances of a
      group in increasing id order).
    instance_at: int32 [G, m], the instance id in each (group, slot); -1 = padding.
    counts: int32 [G], instances per group (n_b).
  """
  group_of: np.ndarray
  slot_of: np.ndarray
  instance_at: np.ndarray
  counts: np.ndarray

  @property
  def num_instances(self) -> int:
    return int(self.group_of.shape[0])

  @property
  def num_groups(self) -> int:
    return int(self.instance_at.shape[0])

  @property
  def group_size(self) -> int:
    return int(self.instance_at.shape[1])

  @property
  def valid(self) -> np.ndarray:
    """bool [G, m]: rows that hold an instance."""
    return self.instance_at >= 0

  @classmethod
  def from_super_labels(cls, super_labels, num_super: int | None = None) -> InstanceLayout:
    """The layout of a training split from its super-class labels ``[n]`` (or None)."""
    if super_labels is None:
      raise ValueError("from_super_labels needs labels; use InstanceLayout.single_group(n)")
    labels = np.asarray(super_labels).astype(np.int64).reshape(-1)
    if labels.size == 0:
      raise ValueError("no training instances")
    if labels.min() < 0:
      raise ValueError(f"super-class labels must be >= 0, got {labels.min()}")
    num_groups = int(labels.max()) + 1 if num_super is None else int(num_super)
    if labels.max() >= num_groups:
      raise ValueError(f"super-class label {labels.max()} >= num_super {num_groups}")
    counts = np.bincount(labels, minlength=num_groups).astype(np.int32)
    order = np.argsort(labels, kind="stable")  # instance ids grouped, increasing within a group
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot_of = np.empty(labels.size, np.int32)
    slot_of[order] = np.arange(labels.size) - starts[labels[order]]
    instance_at = np.full((num_groups, max(1, int(counts.max()))), -1, np.int32)
    instance_at[labels, slot_of] = np.arange(labels.size, dtype=np.int32)
    return cls(group_of=labels.astype(np.int32), slot_of=slot_of, instance_at=instance_at, counts=counts)

  @classmethod
  def single_group(cls, num_instances: int) -> InstanceLayout:
    """All instances in one group (Indi on data without super-classes)."""
    return cls.from_super_labels(np.zeros(int(num_instances), np.int32), 1)

  def auto_capacity(self, local_batch: int) -> int:
    """Images per group and device for the grouped Eq.-5 path.

    The count of the largest super-class in a random batch of ``b`` is about
    Binomial(b, p) with p its share of the data: mean + 3 std, rounded up to a
    multiple of 8 (at most b), rarely overflows.
    """
    p = float(self.counts.max()) / self.num_instances
    mean = local_batch * p
    cap = math.ceil(mean + 3.0 * math.sqrt(mean * (1.0 - p)) + 1.0)
    return int(min(local_batch, 8 * math.ceil(cap / 8)))


class InstanceHead(nn.Module):
  """Parameters ``kernel [G, m, d]`` and ``bias [G, m]`` of the instance classifier W^I.

  ``__call__(v)`` returns the logits over every row, ``[b, G * m]`` (padding rows
  included, unmasked); the losses below use the parameters directly.
  """
  num_groups: int
  group_size: int

  @nn.compact
  def __call__(self, v: jax.Array) -> jax.Array:
    d = v.shape[-1]
    # LeCun-normal over the feature axis, as a Dense layer's kernel.
    init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=-1,
                                            out_axis=-2, batch_axis=(0,))
    kernel = self.param("kernel", init, (self.num_groups, self.group_size, d), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.num_groups, self.group_size), jnp.float32)
    return all_logits(v, kernel, bias)


def all_logits(v: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """``[b, d] -> [b, G*m]``: f(x)^T w_j + b_j for every row j of the head."""
  g, m, d = kernel.shape
  v = v.astype(jnp.promote_types(v.dtype, jnp.float32))
  return jnp.dot(v, kernel.reshape(g * m, d).T, precision=_PRECISION) + bias.reshape(g * m)


def _cross_entropy(logits: jax.Array, target: jax.Array) -> jax.Array:
  """Per-row ``logsumexp(logits) - logits[target]``: ``[..., K], [...] -> [...]``."""
  picked = jnp.take_along_axis(logits, target[..., None], axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - picked


def instance_loss_all(v: jax.Array, kernel: jax.Array, bias: jax.Array, valid: jax.Array,
                      group: jax.Array, slot: jax.Array) -> jax.Array:
  """Eq. 3 / Eq. 4's ``l(x_i, y_i^I)``: softmax over all n instances.

  Args:
    v: [b, d] features f(x).
    kernel, bias: the head's parameters, [G, m, d] and [G, m].
    valid: bool [G, m], rows holding an instance (``InstanceLayout.valid``).
    group, slot: int [b], each image's instance row (``group_of``/``slot_of`` of its id).

  Returns:
    [b] per-image losses -log p(y^I | x) (float32).
  """
  g, m, _ = kernel.shape
  logits = jnp.where(valid.reshape(g * m), all_logits(v, kernel, bias), _MASKED)
  return _cross_entropy(logits, group * m + slot)


def instance_loss_within_super_masked(v: jax.Array, kernel: jax.Array, bias: jax.Array,
                                      valid: jax.Array, group: jax.Array, slot: jax.Array) -> jax.Array:
  """Eq. 5's ``l_B(x_i, y_i^I)`` the expensive way: all n logits, other groups masked.

  The reference the grouped computation must equal, and its fallback. Same
  arguments as :func:`instance_loss_all`; returns [b].
  """
  g, m, _ = kernel.shape
  logits = all_logits(v, kernel, bias).reshape(-1, g, m)
  own = jnp.take_along_axis(logits, group[:, None, None], axis=1)[:, 0]  # [b, m]
  own = jnp.where(valid[group], own, _MASKED)
  return _cross_entropy(own, slot)


def group_batch(group: jax.Array, num_groups: int, capacity: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Sorts a batch into per-group blocks of ``capacity`` images.

  Args:
    group: int [b], each image's group.

  Returns:
    ``(index [G, C] int32, filled [G, C] bool, overflow bool)``: block (g, c)
    holds image ``index[g, c]`` where ``filled``; ``overflow`` is True when some
    group has more than C images (those beyond C are not in any block).
  """
  b = group.shape[0]
  order = jnp.argsort(group, stable=True)
  sorted_group = group[order]
  start = jnp.searchsorted(sorted_group, jnp.arange(num_groups), side="left")
  position = jnp.arange(b) - start[sorted_group]
  index = jnp.zeros((num_groups, capacity), jnp.int32).at[sorted_group, position].set(
      order.astype(jnp.int32), mode="drop")
  filled = jnp.zeros((num_groups, capacity), bool).at[sorted_group, position].set(True, mode="drop")
  overflow = jnp.max(jnp.bincount(group, length=num_groups)) > capacity
  return index, filled, overflow


def _instance_loss_grouped(v, kernel, bias, valid, group, slot, capacity):
  g, _, _ = kernel.shape
  index, filled, _ = group_batch(group, g, capacity)
  vg = v[index].astype(jnp.promote_types(v.dtype, jnp.float32))  # [G, C, d]
  logits = jnp.einsum("gcd,gmd->gcm", vg, kernel, precision=_PRECISION) + bias[:, None, :]
  logits = jnp.where(valid[:, None, :], logits, _MASKED)
  target = jnp.where(filled, slot[index], 0)  # empty blocks: any valid row (loss dropped)
  per_block = jnp.where(filled, _cross_entropy(logits, target), 0.0)
  # Back to batch order; an empty block points at image 0 and adds exactly 0.
  return jnp.zeros(v.shape[0], per_block.dtype).at[index.reshape(-1)].add(per_block.reshape(-1))


def instance_loss_within_super(v: jax.Array, kernel: jax.Array, bias: jax.Array, valid: jax.Array,
                               group: jax.Array, slot: jax.Array, *, capacity: int
                               ) -> tuple[jax.Array, jax.Array]:
  """Eq. 5's ``l_B(x_i, y_i^I)`` at O(d * m) per image (Base-Indi_eff).

  Each image is scored only against the ``m`` rows of its own super-class: the
  batch is sorted into ``[G, capacity]`` blocks and each block multiplied by its
  group's ``[m, d]`` weights (cost ``G * C * m * d`` instead of ``b * G * m * d``).
  When a group holds more than ``capacity`` images of this batch the exact
  masked computation runs instead (same loss, O(d * n)).

  Args: as :func:`instance_loss_all`, plus ``capacity`` (static int >= 1).

  Returns:
    ``([b] per-image losses, overflow bool scalar)``.
  """
  if capacity < 1:
    raise ValueError(f"capacity must be >= 1, got {capacity}")
  g = kernel.shape[0]
  overflow = jnp.max(jnp.bincount(group, length=g)) > capacity
  loss = jax.lax.cond(
      overflow,
      lambda: instance_loss_within_super_masked(v, kernel, bias, valid, group, slot),
      lambda: _instance_loss_grouped(v, kernel, bias, valid, group, slot, capacity))
  return loss, overflow


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Softmax cross-entropy, ``[b, K], [b] -> [b]`` (float32): Eqs. 1-2's ``l(x, y)``."""
  return _cross_entropy(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), labels)


def base_indi_loss(super_logits: jax.Array, super_labels: jax.Array, instance_losses: jax.Array,
                   instance_weight: float) -> jax.Array:
  """Eq. 4 / Eq. 5 per image: ``l(x, y^B) + lambda_I * l(x, y^I)`` -> [b]."""
  return cross_entropy(super_logits, super_labels) + instance_weight * instance_losses
