r"""Benchmark: the machine's matmul ceiling, then the MoCo v2 and Perturb-MoCo steps.

  python -m fgjax.bench --config=configs/perturb_moco.py:fullwidth
  python -m fgjax.bench --config=configs/perturb_moco.py --steps=10 --out=bench.json

For the given config it builds both steps (the config's data, model and batch;
the method switched between ``moco`` and ``perturb_moco``), compiles each once,
times ``--steps`` calls after ``--warmup`` untimed ones (median), and reports
ms/step, images/s, the XLA-counted FLOPs of one step (per device), the achieved
GFLOP/s and its share of the ceiling measured by a large float32 matmul on the
same device, and the Perturb/MoCo time ratio next to their FLOP ratio (a time
ratio well above the FLOP ratio would mean work beyond the method's own passes).

Measure on a quiet machine: other processes on the same cores distort it.
"""

from __future__ import annotations

import functools
import json
import platform
import statistics
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "SSL config (its method is ignored).",
                                          lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per method (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps after compilation.")
_MATMUL = flags.DEFINE_integer("matmul_size", 4096, "Side of the square float32 matmul (ceiling).")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the figures.")


def matmul_ceiling_gflops(size: int, repeats: int = 5) -> float:
  """GFLOP/s of a jitted ``[size, size] @ [size, size]`` float32 matmul (median of repeats)."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2.0 * size**3 / statistics.median(times) / 1e9


def time_step(cfg, method: str, *, steps: int, warmup: int, devices=None) -> dict[str, float]:
  """Compiles and times one SSL step of ``method`` under the config's data/model/batch.

  Returns ms/step, images/s, XLA-counted GFLOP per step (per device), achieved
  GFLOP/s and compile seconds; ``devices`` defaults to all devices.
  """
  import jax

  from fgjax import config_lib
  from fgjax import optim
  from fgjax import parallel
  from fgjax.data import pipeline
  from fgjax.methods import moco
  from fgjax.methods import perturb_moco
  from fgjax.methods import ssl_common

  cfg = cfg.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.method = method
  mesh = parallel.make_mesh(devices)
  config_lib.validate(cfg, num_devices=mesh.size)
  nets = ssl_common.build_networks(cfg)
  tx = optim.joint_optimizer(cfg, 1000)
  dtx = optim.decoder_optimizer(cfg) if method == "perturb_moco" else None
  hp = moco.hparams_from_config(cfg, mesh.size)
  step_fn = perturb_moco.perturb_moco_step if method == "perturb_moco" else moco.moco_step
  step = parallel.data_parallel(functools.partial(step_fn, nets=nets, hp=hp, tx=tx), mesh)
  state = parallel.replicate(mesh, jax.jit(functools.partial(moco.create_state, cfg, nets, tx=tx,
                                                             decoder_tx=dtx))(jax.random.PRNGKey(0)))
  rng = parallel.replicate(mesh, jax.random.PRNGKey(1))
  data = pipeline.load_splits(cfg)
  batches = pipeline.train_batches(data["train"], global_batch_size=cfg.data.global_batch_size, seed=0)
  batch = parallel.shard_batch(mesh, batches[0])

  t0 = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan")))
  for _ in range(warmup):
    state, metrics = compiled(state, batch, rng)
  jax.block_until_ready(state)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
  seconds = statistics.median(times)
  return {"compile_s": compile_s, "ms_per_step": 1e3 * seconds,
          "images_per_s": cfg.data.global_batch_size / seconds, "gflop_per_step": flops / 1e9,
          "achieved_gflops": flops / seconds / 1e9, "min_ms": 1e3 * min(times),
          "max_ms": 1e3 * max(times)}


def main(argv):
  del argv
  import jax

  cfg = _CONFIG.value
  ceiling = matmul_ceiling_gflops(_MATMUL.value)
  results = {"device": str(jax.devices()[0].device_kind), "num_devices": jax.device_count(),
             "platform": platform.platform(), "jax": jax.__version__,
             "matmul_ceiling_gflops": ceiling,
             "config": f"{cfg.model.encoder} width {cfg.model.width}, batch {cfg.data.global_batch_size}, "
                       f"{cfg.data.image_size} px, dtype {cfg.model.dtype}"}
  for method in ("moco", "perturb_moco"):
    r = time_step(cfg, method, steps=_STEPS.value, warmup=_WARMUP.value)
    r["share_of_ceiling"] = r["achieved_gflops"] / ceiling
    results[method] = r
  m, p = results["moco"], results["perturb_moco"]
  results["time_ratio"] = p["ms_per_step"] / m["ms_per_step"]
  results["flop_ratio"] = p["gflop_per_step"] / m["gflop_per_step"]
  results["time_ratio_over_flop_ratio"] = results["time_ratio"] / results["flop_ratio"]

  lines = [f"device: {results['device']} x{results['num_devices']} | jax {results['jax']} | {results['config']}",
           f"matmul ceiling ({_MATMUL.value}^2 f32): {ceiling:.1f} GFLOP/s", "",
           "| step | ms/step | img/s | GFLOP/step | GFLOP/s | % of ceiling | compile s |",
           "|---|---|---|---|---|---|---|"]
  for method in ("moco", "perturb_moco"):
    r = results[method]
    lines.append(f"| {method} | {r['ms_per_step']:.0f} | {r['images_per_s']:.1f} | {r['gflop_per_step']:.1f} | "
                 f"{r['achieved_gflops']:.1f} | {100 * r['share_of_ceiling']:.1f} | {r['compile_s']:.1f} |")
  lines.append("")
  lines.append(f"Perturb/MoCo: time ratio {results['time_ratio']:.2f}, FLOP ratio {results['flop_ratio']:.2f}, "
               f"time/FLOP ratio {results['time_ratio_over_flop_ratio']:.2f} (target <= 1.1)")
  print("\n".join(lines))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(results, f, indent=2)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
