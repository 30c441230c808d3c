r"""The losses of Base-Indi's instance head (seed B, Eqs. 3-5) and the cross-entropy of its class heads.

The head (``fgjax.methods.instance_head``) stores one weight row per training
image grouped by super-class: ``kernel [G, m, d]``, ``bias [G, m]``, ``G``
super-classes (1 without them), ``m`` the largest one's size; instance ``i``
lives in row ``(group_of[i], slot_of[i])`` and ``valid [G, m]`` masks the
padding rows out of every softmax.

* Eq. 3/4, softmax over all n instances (:func:`instance_loss_all`): O(d * n)
  per image;
* Eq. 5, softmax over the instances of the image's own super-class
  (:func:`instance_loss_within_super`): the batch's images of each super-class
  gathered into a ``[G, C, d]`` block and multiplied by that super-class's
  ``[m, d]`` rows only, O(d * m) per image; a batch with more than C images of
  one super-class takes the exact masked path (``lax.cond``), so the loss is
  the same either way.

Masked logits are ``_MASKED`` (-1e30), not -inf: ``exp`` of it is exactly 0, so
the softmax is exactly the restricted one, while a padding row whose target is
masked gives a large finite number rather than inf * 0 = NaN. Every
cross-entropy is optax's ``softmax_cross_entropy_with_integer_labels``.

>>> import jax.numpy as jnp
>>> v = jnp.eye(2)                                        # [b=2, d=2]
>>> kernel, bias = 10 * jnp.eye(2)[None], jnp.zeros((1, 2))  # G=1 group of m=2 instances
>>> valid = jnp.ones((1, 2), bool)
>>> loss = instance_loss_all(v, kernel, bias, valid, jnp.zeros(2, jnp.int32), jnp.arange(2))
>>> loss.shape, bool(loss.max() < 1e-4)
((2,), True)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


_MASKED = -1e30
_PRECISION = jax.lax.Precision.HIGHEST


def all_logits(v: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """``[b, d] -> [b, G*m]``: f(x)^T w_j + b_j for every row j of the head."""
  g, m, d = kernel.shape
  v = v.astype(jnp.promote_types(v.dtype, jnp.float32))
  return jnp.dot(v, kernel.reshape(g * m, d).T, precision=_PRECISION) + bias.reshape(g * m)


def _cross_entropy(logits: jax.Array, target: jax.Array) -> jax.Array:
  """Per-row ``logsumexp(logits) - logits[target]``: ``[..., K], [...] -> [...]`` (optax's)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, target)


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
