r"""What the pair loss's shuffle-BN costs a Perturb-MoCo step: both steps in one process, timed alternately.

  python launch/pair_shuffle_cost.py [--rounds 12] [--steps 3] [--config configs/perturb_moco.py]

Separate processes on a shared 2-core machine differ by 10-20 % from run to run (measured:
1,476-1,888 ms for the same step), more than the 5 % to be resolved. Here the two jitted steps
(perturb.pair_shuffle_bn True and False, otherwise the config's defaults) share one process
and one synthetic batch; each round times ``--steps`` steps of one, then of the other (the
order alternating), and the medians over the rounds are compared. Prints ms per step of each and
the ratio; measure on a quiet machine.
"""

import argparse
import statistics
import time

import jax

from fgjax.infra import parallel
from fgjax.methods import registry
from fgjax.methods import spec
from fgjax.tools import timing


def _step(config: str, shuffle: bool):
  path, _, preset = config.partition(":")
  cfg = registry.config("perturb_moco", preset or None)
  cfg.perturb.pair_shuffle_bn = shuffle
  mesh = parallel.make_mesh(jax.devices()[:1])
  setup = registry.setup(cfg)
  hp = registry.hparams(cfg, setup, 1)
  joint, _ = registry.step_functions(cfg, setup, hp)
  step = parallel.data_parallel(joint, mesh, donate_state=False)
  state = parallel.replicate(mesh, spec.initial_state(setup, jax.random.PRNGKey(0)))
  # A joint step (the step counter lives in the base method's state, PerturbState.base).
  state = state.replace(base=state.base.replace(step=state.base.step + hp.joint_start_step))
  batch = parallel.shard_batch(mesh, timing.synthetic_batch(cfg))
  rng = parallel.replicate(mesh, jax.random.PRNGKey(1))
  jax.block_until_ready(step(state, batch, rng))  # compile
  return lambda: jax.block_until_ready(step(state, batch, rng))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/perturb_moco.py")
  parser.add_argument("--rounds", type=int, default=12)
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()
  steps = {True: _step(args.config, True), False: _step(args.config, False)}
  times = {True: [], False: []}
  for r in range(args.rounds):
    for shuffle in ((True, False) if r % 2 == 0 else (False, True)):
      start = time.perf_counter()
      for _ in range(args.steps):
        steps[shuffle]()
      times[shuffle].append(1000 * (time.perf_counter() - start) / args.steps)
  on, off = statistics.median(times[True]), statistics.median(times[False])
  print(f"pair shuffle-BN on:  {on:.1f} ms/step (median of {args.rounds} rounds of {args.steps}; "
        f"{min(times[True]):.1f}-{max(times[True]):.1f})")
  print(f"pair shuffle-BN off: {off:.1f} ms/step ({min(times[False]):.1f}-{max(times[False]):.1f})")
  # Each round times the two back to back: the ratio within a round cancels the machine's slow drifts.
  ratios = sorted(a / b for a, b in zip(times[True], times[False]))
  print(f"on / off = {on / off:.3f} (ratio of medians); median of the {args.rounds} per-round ratios "
        f"{statistics.median(ratios):.3f}, quartiles {ratios[len(ratios) // 4]:.3f}-{ratios[(3 * len(ratios)) // 4]:.3f}")


if __name__ == "__main__":
  main()
