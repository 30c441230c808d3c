r"""Does an SSL method learn at all? Trained minus random init on a tiny budget, from scratch, per seed.

  python launch/tiny_learning.py --methods byol,perturb_byol,perturb_simclr --seeds 3 --runs runs/tiny_learning

The budget of ``tests/test_learning.py``'s MoCo check: the embedded patches data cut to 4 super-classes x
2 fine classes (32 train / 16 test images per class), a width-8 ResNet-18 from a random initialisation,
batch 64, 20 epochs = 80 joint steps (Perturb-SSL: its 40 decoder pre-training steps first). Each run's
results.json holds both evaluations (trained and the same encoder at random init); this prints kNN-10 and
mAP, fine and super, trained minus random init, per seed and as mean +- std. A check that training moves
the encoder, not a comparison of methods: 80 steps is far from a flat learning curve.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "1")

import jax  # noqa: E402

from fgjax import train  # noqa: E402
from fgjax.methods import registry  # noqa: E402

KEYS = ("knn10_top1_fine", "knn10_top1_super", "map_fine", "map_super")


def tiny_config(method: str, seed: int):
  """``method``'s default config at the tiny budget (see the module docstring)."""
  c = registry.config(method)
  d = c.data
  d.num_super, d.fine_per_super, d.train_per_class, d.test_per_class = 4, 2, 32, 16
  d.global_batch_size = 64
  c.model.width = 8
  c.model.init_from = "none"
  c.model.bn_groups = 2
  c.seed = seed
  c.optim.num_epochs = 20.0
  c.optim.warmup_steps = 10
  c.eval.knn_every = 0
  c.eval.probe_fractions = ()
  c.eval.knn_ks = (10,)
  c.train.log_every = 50
  c.train.checkpoint_every = 10_000
  if "moco" in c:
    c.moco.queue_size = 128
  if "perturb" in c:
    c.perturb.bank_size = 128
  return c


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--methods", default="moco,byol,perturb_byol,simclr,perturb_simclr")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--runs", default="runs/tiny_learning")
  args = parser.parse_args(argv)
  gains: dict[str, dict[str, list[float]]] = {}
  for method in args.methods.split(","):
    for seed in range(args.seeds):
      workdir = os.path.join(args.runs, f"{method}_seed{seed}")
      path = os.path.join(workdir, "results.json")
      if not os.path.exists(path):
        train.train_and_evaluate(tiny_config(method, seed), workdir, devices=jax.devices()[:1])
      with open(path) as f:
        results = json.load(f)
      for key in KEYS:
        gains.setdefault(method, {}).setdefault(key, []).append(
            100 * (results["trained"][key] - results["random_init"][key]))
  lines = ["| method | " + " | ".join(f"{k} trained - random init (per seed; mean +- std)" for k in KEYS) + " |",
           "|---|" + "---|" * len(KEYS)]
  for method, per_key in gains.items():
    cells = []
    for key in KEYS:
      values = per_key[key]
      spread = statistics.stdev(values) if len(values) > 1 else 0.0
      cells.append(", ".join(f"{v:+.1f}" for v in values) + f"; {statistics.mean(values):+.1f} +- {spread:.1f}")
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  text = "\n".join(lines)
  print(text)
  with open(os.path.join(args.runs, "tiny_learning.md"), "w") as f:
    f.write(text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
