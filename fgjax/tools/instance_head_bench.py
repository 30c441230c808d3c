r"""Benchmark of Base-Indi's instance head: Eq. 4 (all n) vs Eq. 5 (own super-class).

  python -m fgjax.tools.instance_head_bench --out=bench_instance_head.json

For each setting it times one forward + backward pass (``jax.value_and_grad``
with respect to the features and the head's parameters, jit-compiled; median of
``--repeats`` calls after a warm-up) of the per-image instance loss, three ways:

* ``all``:     Eq. 4, softmax over all n instances (``instance_loss_all``);
* ``masked``:  Eq. 5 the naive way, all n logits with the other super-classes
               masked (``instance_loss_within_super_masked``);
* ``grouped``: Eq. 5 as fgjax trains it (``instance_loss_within_super``: each
               super-class's images against its own m rows only).

Settings (n instances, G super-classes, feature dim d, batch b per device):
the embedded default (2,048 / 32 / 128 / 128), CIFAR-100 (50,000 / 20 / 512 /
256) and a Stanford-Online-Products-sized head (59,551 / 12 / 512 / 256, the
super-class sizes drawn unequal: 0.5x to 1.5x the mean, so the head has padding
and the grouped capacity must cover the largest class). Batches are random
draws of instance ids, as in training. Measure on a quiet machine.
"""

from __future__ import annotations

import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from fgjax.methods import instance_head as ih
from fgjax.ops import instance_losses


SETTINGS = {  # name: (n, G, d, b, balanced)
    "patches_default": (2048, 32, 128, 128, True),
    "cifar100": (50000, 20, 512, 256, True),
    "sop_sized": (59551, 12, 512, 256, False),
}


def _define_flags():
  flags.DEFINE_list("settings", list(SETTINGS), "Settings to run (comma-separated).")
  flags.DEFINE_integer("repeats", 5, "Timed calls per variant (median reported).")
  flags.DEFINE_string("out", "", "Also write the results to this JSON file.")


def super_labels_for(n: int, groups: int, balanced: bool, seed: int = 0) -> np.ndarray:
  """Super-class labels of n instances: equal sizes, or sizes from 0.5x to 1.5x the mean."""
  if balanced:
    return np.arange(n) % groups
  weights = np.linspace(0.5, 1.5, groups)
  sizes = np.floor(weights / weights.sum() * n).astype(int)
  sizes[-1] += n - sizes.sum()
  return np.random.default_rng(seed).permutation(np.repeat(np.arange(groups), sizes))


def measure(n: int, groups: int, d: int, b: int, balanced: bool, repeats: int) -> dict[str, float]:
  layout = ih.InstanceLayout.from_super_labels(super_labels_for(n, groups, balanced))
  rng = np.random.default_rng(1)
  kernel = jnp.asarray(rng.normal(size=(layout.num_groups, layout.group_size, d)).astype(np.float32) * 0.05)
  bias = jnp.zeros((layout.num_groups, layout.group_size), jnp.float32)
  valid = jnp.asarray(layout.valid)
  capacity = layout.auto_capacity(b)
  batches = []
  for _ in range(repeats + 1):
    ids = rng.choice(n, size=b, replace=False)
    batches.append((jnp.asarray(rng.normal(size=(b, d)).astype(np.float32)),
                    jnp.asarray(layout.group_of[ids]), jnp.asarray(layout.slot_of[ids])))
  variants = {
      "all": lambda v, k, c, g, s: instance_losses.instance_loss_all(v, k, c, valid, g, s),
      "masked": lambda v, k, c, g, s: instance_losses.instance_loss_within_super_masked(v, k, c, valid, g, s),
      "grouped": lambda v, k, c, g, s: instance_losses.instance_loss_within_super(v, k, c, valid, g, s, capacity=capacity)[0],
  }
  out: dict[str, float] = {"n": n, "groups": groups, "d": d, "batch": b, "rows_per_group_m": layout.group_size,
                           "capacity": capacity}
  overflow = sum(int(np.bincount(np.asarray(g), minlength=groups).max() > capacity) for _, g, _ in batches)
  out["batches_over_capacity"] = overflow
  for name, fn in variants.items():
    step = jax.jit(jax.value_and_grad(lambda v, k, c, g, s, fn=fn: jnp.mean(fn(v, k, c, g, s)), argnums=(0, 1, 2)))
    jax.block_until_ready(step(batches[0][0], kernel, bias, batches[0][1], batches[0][2]))  # compile
    times = []
    for v, g, s in batches[1:]:
      t0 = time.perf_counter()
      jax.block_until_ready(step(v, kernel, bias, g, s))
      times.append(time.perf_counter() - t0)
    out[f"{name}_ms"] = 1000 * float(np.median(times))
  out["grouped_speedup_vs_masked"] = out["masked_ms"] / out["grouped_ms"]
  return out


def main(argv):
  del argv
  results = {"machine": f"{platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}",
             "settings": {}}
  for name in flags.FLAGS.settings:
    r = measure(*SETTINGS[name], repeats=flags.FLAGS.repeats)
    results["settings"][name] = r
    print(f"{name}: n={r['n']} G={r['groups']} m={r['rows_per_group_m']} d={r['d']} b={r['batch']} "
          f"capacity={r['capacity']} | fwd+bwd: all {r['all_ms']:.1f} ms, masked {r['masked_ms']:.1f} ms, "
          f"grouped {r['grouped_ms']:.1f} ms ({r['grouped_speedup_vs_masked']:.2f}x faster than masked)",
          flush=True)
  if flags.FLAGS.out:
    with open(flags.FLAGS.out, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
