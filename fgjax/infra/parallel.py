"""Device mesh and the per-device (pmap-style) data-parallel wrapper.

Every training step in fgjax is written *per device* with named-axis
collectives over the axis ``'data'`` (``lax.pmean`` of gradients,
``lax.all_gather`` of MoCo keys and memory-bank features, shuffle-BN), and run
under ``jax.jit(jax.shard_map(step, ...))`` over a one-axis mesh of every device
of every process. One code path serves 1 CPU, N fake CPU devices, a GPU host or
a TPU pod: only the mesh changes.

``check_vma=False``: replicated state (queue, bank, parameters) is updated from
all-gathered values that are identical on every device, which the
varying-manual-axes type system cannot prove; the step keeps replicas equal by
construction (pmean'd gradients, all-gathered keys) and the multi-device test
checks it.
"""

from __future__ import annotations

from typing import Any
from typing import Callable

import jax
import numpy as np
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


DATA_AXIS = "data"


def make_mesh(devices: list[Any] | None = None) -> Mesh:
  """A one-axis ``('data',)`` mesh over all devices (of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Explicit,))


def replicate(mesh: Mesh, tree: Any) -> Any:
  """Places a pytree of host/global arrays on every device of the mesh.

  With several processes each one supplies the full value to its own devices;
  the values must be equal (same seed and config: ``fgjax.infra.distributed``
  checks the config). ``jax.device_put`` would check equality with one
  cross-process allgather per leaf: hundreds of small collectives for a train
  state (on the 2-process CPU rehearsal: tens of seconds, and a gloo connect
  timeout under load).
  """
  sharding = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    x = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree)


def shard_batch(mesh: Mesh, local_batch: Any) -> Any:
  """Turns this process's slice of the global batch into globally sharded arrays.

  Args:
    local_batch: pytree of numpy arrays ``[B_process, ...]``; the global batch is
      the concatenation over processes in process order.
  """
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def data_parallel(step: Callable[..., Any], mesh: Mesh, *, donate_state: bool = True) -> Callable[..., Any]:
  """``jit(shard_map(step))`` for ``step(state, batch, rng) -> (state, metrics)``.

  The state and rng are replicated (``P()``), the batch is split along its
  leading axis over ``'data'``; the returned state and metrics are replicated
  (the step must make them identical on every device: pmean / all_gather).
  """
  mapped = jax.shard_map(
      step, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P()), out_specs=(P(), P()), check_vma=False)
  return jax.jit(mapped, donate_argnums=(0,) if donate_state else ())


def precompile(steps: list[Callable[..., Any]], mesh: Mesh, state: Any, local_batch: Any, rng: Any) -> None:
  """Compiles ``data_parallel`` steps for these arguments now; their first call reuses it.

  Lets every process finish compiling before any enters the step's first
  collective (``fgjax.infra.distributed.barrier`` explains why that matters).
  """
  batch = shard_batch(mesh, local_batch)
  for step in steps:
    step.lower(state, batch, rng).compile()
