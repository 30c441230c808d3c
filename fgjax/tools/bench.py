r"""Benchmark of the SSL training steps: images/s, ms/step, XLA FLOPs, TFLOP/s and MFU.

  python -m fgjax.tools.bench --config=configs/moco.py:fullwidth --methods=moco
  python -m fgjax.tools.bench --config=configs/moco.py:cub200,bf16 --methods=moco,perturb_moco,simsiam
  python -m fgjax.tools.bench --config=configs/perturb_moco.py --steps=10 --out=bench.json

Runs on whatever devices JAX sees (CPU, one GPU, a TPU host): the step is the
training loop's own ``jit(shard_map(step))`` over all devices. For each method of
``--methods`` (the config's method is replaced; its data, model, batch and
``model.dtype`` are kept) it compiles the step once, runs ``--warmup`` untimed
steps, times ``--steps`` steps (each waited for; the median is reported) and
reports:

* ``ms_per_step`` and ``images_per_s`` (the global batch over the median step);
* ``gflop_per_step``: XLA's count of the floating-point operations of one step
  on one device (``compiled.cost_analysis()``, i.e. what the hardware executes,
  recomputation included);
* ``achieved_tflops``: those FLOPs over the step time, summed over the devices;
* ``mfu``: achieved over the **measured** ceiling of the devices -- the TFLOP/s
  of a large square matmul in the config's compute dtype on one device (best of
  5), times the device count (a datasheet peak is not reachable by any program;
  the matmul is the practical one);
* ``cpu_ms_per_step``: CPU time of this process per step -- on a CPU device the
  compute itself, steadier than wall time when other processes share the cores.

The input is a fixed random uint8 batch of the training stream's shape
(``data.base_size`` or ``data.image_size``), so no data set has to be on the
machine: the steps' cost does not depend on pixel values. ``--profile_dir=DIR``
also writes a ``jax.profiler`` trace of each method's timed steps to
``DIR/<method>``. ``--breakdown`` adds the MoCo v2 step's parts and every
convolution layer's forward and gradients (``fgjax.tools.bench_parts``).

Measure on a quiet machine: other processes on the same cores distort it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Any

from absl import app
from absl import flags
from ml_collections import config_flags

from fgjax.methods import spec
from fgjax.tools import timing


_CONFIG = config_flags.DEFINE_config_file("config", None, "SSL config; each method of --methods gets its own "
                                          "config with the same preset and overrides.", lock_config=True)
_METHODS = flags.DEFINE_list("methods", ["moco", "perturb_moco", "simsiam"],
                             "Steps to time: methods whose table entry says benchmark=True "
                             "(every SSL method and its Perturb-SSL version: moco, simsiam, "
                             "simclr, byol, perturb_<each>).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per method (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps after compilation.")
_MATMUL = flags.DEFINE_integer("matmul_size", 0, "Side of the square matmul of the ceiling "
                               "(0: 4096 on CPU, 8192 on accelerators).")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the figures.")
_PROFILE = flags.DEFINE_string("profile_dir", None, "Optional: jax.profiler traces of the timed "
                               "steps, one folder per method.")
_BREAKDOWN = flags.DEFINE_bool("breakdown", False, "Also time the MoCo v2 step's parts (aug+, key "
                               "forward, query forward, backward, optimizer) and every convolution "
                               "layer, XLA's and model.conv_impl's (fgjax.tools.bench_parts).")


def default_matmul_size(device: Any = None) -> int:
  """4096 on a CPU (about a second per call), 8192 on an accelerator (saturates it)."""
  import jax

  device = device or jax.devices()[0]
  return 4096 if device.platform == "cpu" else 8192


def matmul_ceiling_gflops(size: int, repeats: int = 5, dtype: str = "float32", device: Any = None) -> float:
  """GFLOP/s of a jitted ``[size, size] @ [size, size]`` matmul in ``dtype`` on one device.

  The practical ceiling of the device for that compute dtype (best of
  ``repeats``). Default matmul precision, as the model's own matmuls and
  convolutions use (on Ampere+ GPUs float32 may run as TF32: the same for both).
  """
  import jax
  import jax.numpy as jnp

  device = device or jax.devices()[0]
  a = jax.device_put(jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32).astype(dtype), device)
  b = jax.device_put(jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32).astype(dtype), device)
  f = jax.jit(jnp.matmul)
  seconds = timing.best_seconds(lambda: f(a, b), repeats=repeats)
  return 2.0 * size**3 / seconds / 1e9


def _xla_flops(compiled, lowered) -> float:
  """FLOPs of one step on one device: the optimised module's count, else the lowered one's."""
  for stage in (compiled, lowered):
    try:
      cost = stage.cost_analysis()
    except Exception:  # some backends have no cost model
      continue
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float((cost or {}).get("flops", 0.0))
    if flops > 0:
      return flops
  return float("nan")


def config_for(cfg, method: str, preset: str | None = None):
  """``method``'s config with ``preset`` and every field in which ``cfg`` differs from its own preset.

  Each method has its own schema (a MoCo config has no ``perturb`` block), so
  the benchmark builds each method's config and carries over what the user
  changed (``--config.x=y``) wherever that method has the field.
  """
  from fgjax.config.fields import flatten
  from fgjax.errors import ConfigError
  from fgjax.methods import registry

  benchable = registry.names(benchmark=True)
  if method not in benchable:
    raise ConfigError(f"--methods: {method!r} is not one of {benchable}")
  given, base = flatten(cfg), flatten(registry.config(cfg.method, preset))
  target = registry.config(method, preset)
  known = flatten(target)
  for path, value in given.items():
    if path in known and path != "method" and base.get(path) != value:
      *blocks, field = path.split(".")
      node = target
      for b in blocks:
        node = node[b]
      node[field] = value
  return target


def time_step(cfg, method: str, *, steps: int, warmup: int, devices=None, preset: str | None = None,
              profile_dir: str | None = None) -> dict[str, float]:
  """Compiles and times the training step of ``method`` under the config's data/model/batch/dtype.

  Returns ``compile_s``, ``ms_per_step`` (median), ``min_ms``, ``max_ms``,
  ``images_per_s``, ``gflop_per_step`` (XLA count, per device),
  ``achieved_tflops`` (all devices), ``cpu_ms_per_step`` (median CPU time of
  this process per step: on a CPU device the compute itself, a steadier figure
  than wall time on a shared machine) and the last ``loss``; ``devices``
  defaults to all devices.
  """
  import jax

  from fgjax.infra import parallel
  from fgjax.infra import precision
  from fgjax.methods import registry

  cfg = config_for(cfg, method, preset)
  mesh = parallel.make_mesh(devices)
  registry.validate(cfg, num_devices=mesh.size)
  precision.check_compute_dtype(cfg.model.dtype, mesh.devices.flat)
  setup = registry.setup(cfg)
  hp = registry.hparams(cfg, setup, mesh.size)
  joint, _ = registry.step_functions(cfg, setup, hp)
  step = parallel.data_parallel(joint, mesh)
  state = parallel.replicate(mesh, spec.initial_state(setup, jax.random.PRNGKey(0)))
  rng = parallel.replicate(mesh, jax.random.PRNGKey(1))
  batch = parallel.shard_batch(mesh, timing.synthetic_batch(cfg))

  t0 = time.perf_counter()
  lowered = step.lower(state, batch, rng)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  flops = _xla_flops(compiled, lowered)
  for _ in range(warmup):
    state, metrics = compiled(state, batch, rng)
  jax.block_until_ready(state)
  if profile_dir:
    jax.profiler.start_trace(os.path.join(profile_dir, method))
  times, cpu_times = [], []
  try:
    for i in range(steps):
      t0, c0 = time.perf_counter(), time.process_time()
      with jax.profiler.StepTraceAnnotation("train", step_num=i):
        state, metrics = compiled(state, batch, rng)
      jax.block_until_ready(state)
      times.append(time.perf_counter() - t0)
      cpu_times.append(time.process_time() - c0)
  finally:
    if profile_dir:
      jax.profiler.stop_trace()
  seconds = statistics.median(times)
  return {"compile_s": compile_s, "ms_per_step": 1e3 * seconds,
          "images_per_s": cfg.data.global_batch_size / seconds, "gflop_per_step": flops / 1e9,
          "achieved_tflops": mesh.size * flops / seconds / 1e12, "min_ms": 1e3 * min(times),
          "max_ms": 1e3 * max(times), "cpu_ms_per_step": 1e3 * statistics.median(cpu_times),
          "loss": float(jax.device_get(metrics["loss"]))}


def run(cfg, methods, *, steps: int, warmup: int, matmul_size: int = 0, devices=None,
        profile_dir: str | None = None, preset: str | None = None) -> dict[str, Any]:
  """The ceiling, then every method's step; returns the results dict (see the module docstring).

  ``preset``: the one ``cfg`` was built with (each method's config is built
  with it, see :func:`config_for`).
  """
  import jax

  devices = list(jax.devices() if devices is None else devices)
  dtype = cfg.model.dtype
  size = matmul_size or default_matmul_size(devices[0])
  ceiling_tflops = matmul_ceiling_gflops(size, dtype=dtype, device=devices[0]) / 1e3
  results: dict[str, Any] = {
      "device": str(devices[0].device_kind), "platform": devices[0].platform, "num_devices": len(devices),
      "host": platform.platform(), "jax": jax.__version__, "dtype": dtype,
      "matmul_size": size, "ceiling_tflops_per_device": ceiling_tflops,
      "config": f"{cfg.model.encoder} width {cfg.model.width}{' cifar stem' if cfg.model.cifar_stem else ''}, "
                f"global batch {cfg.data.global_batch_size}, {cfg.data.image_size} px, {dtype}",
      "methods": list(methods)}
  for method in methods:
    r = time_step(cfg, method, steps=steps, warmup=warmup, devices=devices, profile_dir=profile_dir,
                  preset=preset)
    r["mfu"] = r["achieved_tflops"] / (ceiling_tflops * len(devices))
    results[method] = r
  if "moco" in results and "perturb_moco" in results:
    m, p = results["moco"], results["perturb_moco"]
    results["time_ratio"] = p["ms_per_step"] / m["ms_per_step"]
    results["flop_ratio"] = p["gflop_per_step"] / m["gflop_per_step"]
    results["time_ratio_over_flop_ratio"] = results["time_ratio"] / results["flop_ratio"]
  return results


def format_table(results: dict[str, Any]) -> str:
  """The results as a Markdown table (what ``main`` prints)."""
  lines = [f"device: {results['device']} x{results['num_devices']} | jax {results['jax']} | {results['config']}",
           f"matmul ceiling ({results['matmul_size']}^2 {results['dtype']}, one device): "
           f"{results['ceiling_tflops_per_device']:.3f} TFLOP/s", "",
           "| step | ms/step | img/s | GFLOP/step/device | TFLOP/s | MFU % | compile s |",
           "|---|---|---|---|---|---|---|"]
  for method in results["methods"]:
    r = results[method]
    lines.append(f"| {method} | {r['ms_per_step']:.1f} | {r['images_per_s']:.1f} | {r['gflop_per_step']:.1f} | "
                 f"{r['achieved_tflops']:.3f} | {100 * r['mfu']:.1f} | {r['compile_s']:.1f} |")
  if "time_ratio" in results:
    lines += ["", f"Perturb/MoCo: time ratio {results['time_ratio']:.2f}, FLOP ratio {results['flop_ratio']:.2f}, "
                  f"time/FLOP ratio {results['time_ratio_over_flop_ratio']:.2f}"]
  return "\n".join(lines)


def main(argv):
  del argv
  from fgjax.errors import ConfigError

  argument = flags.FLAGS["config"].config_filename  # 'configs/x.py[:preset]'
  preset = argument.split(":", 1)[1] if ":" in argument else None
  try:
    results = run(_CONFIG.value, _METHODS.value, steps=_STEPS.value, warmup=_WARMUP.value,
                  matmul_size=_MATMUL.value, profile_dir=_PROFILE.value, preset=preset)
  except ConfigError as e:
    print(f"fgjax.tools.bench: error: {e}", file=sys.stderr)
    sys.exit(2)
  print(format_table(results))
  if _BREAKDOWN.value:
    from fgjax.tools import bench_parts  # pylint: disable=import-outside-toplevel
    results["breakdown"] = bench_parts.breakdown(config_for(_CONFIG.value, "moco", preset),
                                                 repeats=max(_STEPS.value, 3))
    print("\n" + bench_parts.format_breakdown(results["breakdown"]))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(results, f, indent=2)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
