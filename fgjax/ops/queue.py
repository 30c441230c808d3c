"""Ring-buffer queue and momentum (EMA) update.

The ring buffer serves both the MoCo queue of negative keys (``[K, D]``, K = 65536
in MoCo v2) and the Perturb-SSL feature memory bank ``M`` (``[D, n]``, D = 5632;
paper Sec. 3.4: each batch "replace[s] the oldest batch of feature vectors").
The momentum update is MoCo's Eq. 2, ``theta_k <- m theta_k + (1 - m) theta_q``.
Both are pure functions: state in, new state out.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


PyTree = Any


def enqueue(
    queue: jax.Array, keys: jax.Array, pointer: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Writes ``keys`` into the ring buffer ``queue``, overwriting the oldest rows.

  >>> import jax.numpy as jnp
  >>> queue, pointer = enqueue(jnp.zeros((4, 2)), jnp.ones((2, 2)), jnp.int32(3))  # K=4, B=2: wraps
  >>> queue[:, 0].tolist(), int(pointer)
  ([1.0, 0.0, 0.0, 1.0], 1)

  Rows ``pointer, pointer + 1, ..., pointer + B - 1`` (modulo ``K``) are replaced,
  so the write wraps around the end correctly even when ``K % B != 0``.

  Args:
    queue: ``[K, ...]`` buffer (e.g. ``[K, D]`` keys, or ``[D, n]`` feature bank).
    keys: ``[B, ...]`` new rows, same trailing shape as ``queue``; cast to the
      queue's dtype. Under data parallelism pass the all-gathered keys.
    pointer: int32 scalar, index of the oldest row (may be traced).

  Returns:
    ``(new_queue [K, ...], new_pointer)`` with ``new_pointer = (pointer + B) % K``
    as an int32 scalar.

  Raises:
    ValueError: (at trace time) if ``B > K`` (rows of one batch would overwrite
      each other) or if the trailing shapes differ.
  """
  capacity, batch = queue.shape[0], keys.shape[0]
  if keys.shape[1:] != queue.shape[1:]:
    raise ValueError(
        f"enqueue: keys {keys.shape} do not match queue rows {queue.shape}.")
  if batch > capacity:
    raise ValueError(
        f"enqueue: batch of {batch} rows exceeds queue capacity {capacity}.")
  pointer = jnp.asarray(pointer, jnp.int32)
  # Row indices modulo K handle the wrap; they are distinct because B <= K,
  # so the scatter is well defined.
  rows = (pointer + jnp.arange(batch, dtype=jnp.int32)) % capacity
  new_queue = queue.at[rows].set(keys.astype(queue.dtype), unique_indices=True)
  new_pointer = ((pointer + batch) % capacity).astype(jnp.int32)
  return new_queue, new_pointer


def momentum_update(*, online: PyTree, target: PyTree, momentum: float) -> PyTree:
  """Exponential moving average of parameters (MoCo Eq. 2), leaf by leaf.

  ``target_new = momentum * target + (1 - momentum) * online``. ``momentum = 1``
  keeps the target, ``momentum = 0`` copies the online parameters. ``momentum``
  may be a traced scalar (a schedule, as in BYOL). Each leaf keeps the target's
  dtype.

  Args:
    online: pytree of the online (query) parameters.
    target: pytree of the target (momentum/key) parameters, same structure.
    momentum: EMA coefficient ``m`` in ``[0, 1]`` (MoCo v2: 0.999).

  Returns:
    A pytree of the structure of ``target``.
  """
  return jax.tree.map(
      lambda t, o: (t * momentum + o * (1.0 - momentum)).astype(t.dtype),
      target, online)


def cosine_momentum(step: jax.Array, *, base: float, final: float, total_steps: int) -> jax.Array:
  """The EMA coefficient at ``step`` of a cosine increase from ``base`` to ``final``.

  ``m(t) = final - (final - base) * (cos(pi * t / T) + 1) / 2`` for ``t`` in
  ``[0, T]`` and ``final`` after (BYOL Sec. 3.2 with ``final = 1``; solo-learn's
  small-image MoCo v2+ recipe uses 0.99 -> 0.999). ``base == final`` is the
  constant momentum of MoCo v2.

  Args:
    step: int scalar, steps of EMA updates taken so far (may be traced).
    base, final: coefficients at ``t = 0`` and ``t = T``, in [0, 1].
    total_steps: T >= 1.

  Returns:
    float32 scalar.
  """
  t = jnp.clip(jnp.asarray(step, jnp.float32) / float(max(1, total_steps)), 0.0, 1.0)
  return jnp.float32(final) - jnp.float32(final - base) * (jnp.cos(jnp.pi * t) + 1.0) / 2.0
