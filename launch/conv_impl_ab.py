r"""fgjax's training step with ``model.conv_impl=auto`` against ``xla``, alternated in one process.

  python launch/conv_impl_ab.py --preset=fullwidth --methods=moco --rounds=3
  python launch/conv_impl_ab.py --preset= --methods=moco,perturb_moco --rounds=2   # the CPU default
  python launch/conv_impl_ab.py --preset= --impls=matmul_dw,xla                    # Eq. 1 in every layer

Each round times every method with each implementation (``fgjax.tools.bench.time_step``:
compile, ``--warmup`` steps, the median of ``--steps``). One process and alternation,
because the same step varies by up to 30 % from process to process on a 2-core machine.
MoCo runs with one BatchNorm group and no shuffle-BN, as ``launch/gpu_bench.sh`` does.
Prints ms/step, images/s and the last loss (the same for both: the math is unchanged).
"""

from __future__ import annotations

import argparse

from fgjax.methods import registry
from fgjax.tools import bench


def main(argv=None) -> list[dict]:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="fullwidth", help="preset of configs/moco.py ('' = the CPU default)")
  p.add_argument("--methods", default="moco")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--steps", type=int, default=4)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--impls", default="auto,xla", help="model.conv_impl values to alternate, e.g. matmul_dw,xla")
  args = p.parse_args(argv)
  preset = args.preset or None
  rows = []
  for r in range(args.rounds):
    for impl in args.impls.split(","):
      for method in args.methods.split(","):
        cfg = bench.config_for(registry.config("moco", preset), method, preset)
        cfg.data.global_batch_size = args.batch
        cfg.model.conv_impl = impl
        if method == "moco":
          cfg.model.bn_groups, cfg.moco.shuffle_bn = 1, False
        t = bench.time_step(cfg, method, steps=args.steps, warmup=args.warmup, preset=preset)
        rows.append({"round": r, "method": method, "conv_impl": impl, **t})
        print(f"round {r} {method:13s} {impl:5s} {t['ms_per_step']:9.1f} ms/step {t['images_per_s']:7.1f} img/s "
              f"loss {t['loss']:.4f}", flush=True)
  return rows


if __name__ == "__main__":
  main()
