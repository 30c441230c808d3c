r"""The instance-classification head of Base-Indi (seed B, Eqs. 3-5): its layout and its module.

The losses on it are in ``fgjax.ops.instance_losses``.

Every training image ``i`` (``0 <= i < n``) is its own class with a weight
vector ``w_i^I`` and a bias. The weights are stored **grouped by super-class**:
``kernel [G, m, d]``, ``bias [G, m]``, where ``G`` is the number of
super-classes (1 when the data has none), ``m = max_b n_b`` the size of the
largest one, and instance ``i`` lives in row ``(group_of[i], slot_of[i])``; the
``G * m - n`` padding rows are masked out of every softmax. One layout serves
both objectives of ``fgjax.ops.instance_losses`` (softmax over all instances,
Eq. 3/4; over the image's own super-class only, Eq. 5).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fgjax.ops.instance_losses import all_logits


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
  included, unmasked); ``fgjax.ops.instance_losses`` uses the parameters directly.
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
