r"""What the checkpoint digests cost: milliseconds per save to hash the whole train state.

  python launch/checkpoint_digest_cost.py            # the CPU default (Perturb-MoCo) and ResNet-50 (MoCo v2, 224 px)

Builds each state as a run does (``setup.init_state``, no training), then times
``checkpointing.state_digests`` (host copy + SHA-256 of every array; best of 5) and
prints the state's size and the time. Measure on a quiet machine.
"""

import time

import jax

from fgjax.infra import checkpointing
from fgjax.methods import registry
from fgjax.methods import spec


def _cost(method: str, preset: str | None, **fields) -> None:
  cfg = registry.config(method, preset)
  for path, value in fields.items():
    section, name = path.split("__")
    cfg[section][name] = value
  state = spec.initial_state(registry.setup(cfg), registry.rngs(cfg)[0])
  jax.block_until_ready(state)
  size = sum(x.nbytes for x in jax.tree.leaves(state))
  times = []
  for _ in range(5):
    start = time.perf_counter()
    checkpointing.state_digests(state)
    times.append(time.perf_counter() - start)
  print(f"{method}:{preset or 'default'}: {len(jax.tree.leaves(state))} arrays, {size / 2**20:.1f} MiB, "
        f"digests {1000 * min(times):.1f} ms ({size / 2**20 / min(times):.0f} MiB/s)")


if __name__ == "__main__":
  _cost("perturb_moco", None)
  _cost("moco", "cub200", model__init_from="none")
