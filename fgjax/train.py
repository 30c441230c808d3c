"""The training loop of every image method (SSL: MoCo v2, SimSiam, Perturb-SSL; seed B).

Sections in a fixed order: config check -> workdir -> mesh -> data -> model
init -> optimizer -> resume -> loop (with NaN guard, metrics, checkpoints) ->
evaluation -> results. The step functions themselves live at module level in
``fgjax.methods`` and are pure ``(state, batch, rng) -> (state, metrics)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from absl import logging

from fgjax import errors
from fgjax import optim
from fgjax.config import blocks as config_blocks
from fgjax.data import pipeline
from fgjax.errors import ConfigError
from fgjax.errors import DataError
from fgjax.errors import NonFiniteLossError
from fgjax.evaluate import checkpoint_eval
from fgjax.evaluate import curves
from fgjax.evaluate import report
from fgjax.infra import checkpointing
from fgjax.infra import distributed
from fgjax.infra import metrics_writer
from fgjax.infra import parallel
from fgjax.infra import precision
from fgjax.infra import preemption
from fgjax.infra import profiling
from fgjax.infra import workdir as workdir_lib
from fgjax.methods import registry
from fgjax.methods import spec
from fgjax.pictures import make as pictures
from fgjax.pretrained import init_from
from fgjax.pretrained import shipped


# The NaN guard also stops when the global L2 norm of the parameters passes this
# (an explosion that has not reached inf yet): a checkpoint is only written
# after this check, so "the last good checkpoint" is good. Trained encoders here
# have norms of tens to hundreds.
MAX_PARAM_NORM = 1e6

# Re-exported: callers catch train.WorkdirError, use train.prepare_workdir.
WorkdirError = workdir_lib.WorkdirError
prepare_workdir = workdir_lib.prepare
Preempted = errors.Preempted


def _write_json(path: str, value: Any) -> None:
  with open(path, "w") as f:
    json.dump(value, f)


def _first_nonfinite(pending: list[tuple[int, dict[str, float]]]) -> tuple[int, str] | None:
  for step, scalars in pending:
    for name, value in scalars.items():
      if not math.isfinite(value):
        return step, name
  return None


_param_norm = jax.jit(lambda state: optax.tree.norm(state.params))


class _Progress:
  """Step, loss terms, images/s and ETA, logged every ``log_every`` steps.

  Rates are kept per phase (decoder pre-training, joint training): their steps
  cost very different times, and a window that includes compilation is not used
  to predict the rest.
  """

  def __init__(self, phase_ends: dict[str, int], global_batch: int):
    self.phase_ends = phase_ends  # phase -> last step (exclusive end) of that phase
    self.total = max(phase_ends.values())
    self.batch = global_batch
    self.window_start = time.perf_counter()
    self.window_steps = 0
    self.step_times: dict[str, list[float]] = {phase: [] for phase in phase_ends}
    self.data_wait = 0.0  # seconds the loop waited for the input pipeline in this window
    self.total_wait = 0.0  # ... summed over windows without compilation
    self.total_time = 0.0

  def start_window(self):
    self.window_start = time.perf_counter()
    self.window_steps = 0
    self.data_wait = 0.0

  def wait_share(self) -> float:
    """Share of the (compiled) training time spent waiting for data, over the run so far."""
    return self.total_wait / self.total_time if self.total_time else float("nan")

  def line(self, step: int, scalars: dict[str, float], *, phase: str, compiled: bool) -> str:
    elapsed = time.perf_counter() - self.window_start
    per_step = elapsed / max(1, self.window_steps)
    if compiled:
      self.step_times[phase].append(per_step)
      self.total_wait += self.data_wait
      self.total_time += elapsed
    eta, begin = 0.0, 0
    for name, end in self.phase_ends.items():
      remaining = max(0, end - max(begin, step))
      times = self.step_times[name][-5:]
      eta += remaining * (float(np.median(times)) if times else per_step)
      begin = end
    # The loss terms, and Perturb-SSL's pair task top-1 beside L_Cp (how easily the pairs are told apart).
    terms = " ".join(f"{k}={v:.4f}" for k, v in scalars.items() if k.startswith("loss") or k == "pair_top1")
    return (f"step {step}/{self.total} {terms} | {self.batch / per_step:.1f} img/s | "
            f"data wait {100 * self.data_wait / max(elapsed, 1e-9):.1f}% | "
            f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}")


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str, *,
                       devices: list[Any] | None = None) -> dict[str, Any]:
  """Trains the configured SSL method, evaluates the frozen encoder, writes results.

  Resumes automatically from the latest checkpoint in ``workdir``.

  Args:
    devices: the devices of the data mesh; None means every device of every
      process (the normal case; tests pass a subset).

  Returns:
    The results dict written to ``results.json``.

  Raises:
    ConfigError, WorkdirError (unwritable, in use by another run, or
    holding checkpoints of another config), NonFiniteLossError,
    checkpointing.CheckpointError (no checkpoint restores; disk full),
    Preempted (SIGTERM/SIGINT: the current step was saved).
  """
  # ---- config and workdir (before anything compiles or is written)
  started = time.perf_counter()
  mesh = parallel.make_mesh(devices)
  registry.validate(cfg, num_devices=mesh.size, num_processes=jax.process_count())
  precision.check_compute_dtype(cfg.model.dtype, mesh.devices.flat)
  init_from = cfg.model.get("init_from", "") if "model" in cfg else ""
  checkpoints = os.path.join(os.path.abspath(workdir), "checkpoints") if workdir else ""
  if shipped.is_shipped(init_from) and not (os.path.isdir(checkpoints) and os.listdir(checkpoints)):
    shipped.resolve(init_from)  # a fresh run needs the shipped weights: missing or damaged is one line, now
  created = bool(workdir) and not os.path.exists(os.path.abspath(workdir))
  workdir = workdir_lib.prepare(workdir)
  try:
    profiler = profiling.StepProfiler.from_config(cfg, workdir)  # checks the profile directory
    # Process 0 holds the lock for the processes of a multi-process run (one workdir).
    with workdir_lib.Lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
      workdir_lib.check_resume_config(workdir, cfg, registry.with_defaults)
      return _train_and_evaluate(cfg, workdir, mesh, profiler, started)
  except (DataError, ConfigError):
    # Bad input found before training: a workdir this run created holds only its config and lock. Remove it.
    if created and jax.process_index() == 0:
      workdir_lib.remove_if_untouched(workdir)
    raise


@dataclasses.dataclass(frozen=True)
class _Schedule:
  """The run's step counts: ``pretrain`` decoder pre-training steps, then ``joint`` steps; ``last``: where
  this invocation stops (``train.max_steps``, else ``total``)."""
  pretrain: int
  joint: int
  last: int

  @property
  def total(self) -> int:
    return self.pretrain + self.joint


def _check_data(cfg: ml_collections.ConfigDict, data: dict[str, Any]) -> None:
  """The config's demands on the opened splits, found before anything compiles (ConfigError naming the field)."""
  num_train = len(data["train"])
  if num_train < cfg.data.global_batch_size:
    raise ConfigError(f"config field 'data.global_batch_size': {cfg.data.global_batch_size} "
                      f"exceeds the {num_train} training images")
  if cfg.eval.outlier_level == "super" and data["test"].super_names is None:
    raise ConfigError("config field 'eval.outlier_level': 'super' but "
                      f"{data['test'].description} has no super-class labels "
                      "(use 'auto', 'fine', or data.super_map)")
  if max(cfg.eval.knn_ks) > num_train:  # found now, not at the first monitor step
    raise ConfigError(f"config field 'eval.knn_ks': k={max(cfg.eval.knn_ks)} exceeds the "
                      f"{num_train} training images")


def _resume_or_start(cfg: ml_collections.ConfigDict, ckpt: checkpointing.Checkpointer, state: Any,
                     setup: Any, data: dict[str, Any], baselines: dict[str, str]) -> tuple[Any, int]:
  """``(state, start step)``: the newest good checkpoint, or a fresh run from ``state`` (the random init).

  A fresh run first evaluates its baselines with the same protocol (process 0):
  the encoder at random init (the floor) and, where the run starts from
  ``model.init_from``'s encoder, that one untouched (the paper's "ImageNet
  ResNet-50" row: did training on top of it help?), into ``baselines``'
  ``random_init`` and ``initial`` files.
  """
  ckpt.quarantine_incomplete()  # half-written or half-deleted folders: out of orbax's way
  latest = ckpt.latest_step()
  if latest is not None:
    try:
      problem = checkpointing.shape_mismatch(state, ckpt.state_shapes(latest))
    except checkpointing.CheckpointError:
      problem = None  # damaged metadata: restore_latest_good falls back to an older step
    if problem:  # a config.json edited or lost: the config guard could not see it
      raise WorkdirError(f"checkpoint step {latest} in {ckpt.directory} is of another model: {problem}; "
                         "use another --workdir")
    state, start, restored_step = ckpt.restore_latest_good(state)
    logging.info("resumed from %s step %d (data position %d)", ckpt.directory, restored_step, start)
    return state, start
  evaluate = cfg.eval.random_init_baseline and jax.process_index() == 0
  if evaluate:
    _write_json(baselines["random_init"], checkpoint_eval.evaluate_state(cfg, setup.nets, jax.device_get(state),
                                                                         data))
  state = init_from.with_init_from(cfg, setup, state)
  if evaluate and cfg.model.get("init_from", "") not in config_blocks.INIT_RANDOM:
    _write_json(baselines["initial"], checkpoint_eval.evaluate_state(cfg, setup.nets, jax.device_get(state), data))
  return state, 0


def _train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str, mesh: Any,
                        profiler: profiling.StepProfiler, started: float) -> dict[str, Any]:
  """:func:`train_and_evaluate` in a checked, locked workdir: data, model, resume, loop, results."""
  logging.info("%s", precision.describe(cfg.model.dtype, mesh.devices.flat))
  if jax.process_index() == 0:
    workdir_lib.write_config(workdir, cfg)

  # ---- data
  data = pipeline.load_splits(cfg)
  for split, source in data.items():
    logging.info("%s data: %s", split, source.description)
  _check_data(cfg, data)
  num_train = len(data["train"])
  batches = pipeline.train_batches(
      data["train"], global_batch_size=cfg.data.global_batch_size, seed=cfg.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      transform=pipeline.train_transform(cfg, data["train"]))

  # ---- model and optimizer
  setup = registry.setup(cfg, num_train, train_source=data["train"])
  pretrain_steps = registry.pretrain_steps(cfg)
  batches = pipeline.joint_phase_from_start(batches, pretrain_steps)
  joint_steps = config_blocks.total_train_steps(cfg, num_train)
  total_steps = pretrain_steps + joint_steps
  schedule = _Schedule(pretrain=pretrain_steps, joint=joint_steps,
                       last=min(total_steps, cfg.train.max_steps) if cfg.train.max_steps else total_steps)
  init_rng, step_rng = registry.rngs(cfg)
  # The run's initial state: one program, compiled fast (spec.initial_state; op by op it is slow on CPU).
  state = parallel.replicate(mesh, spec.initial_state(setup, init_rng))
  step_rng = parallel.replicate(mesh, step_rng)

  # ---- resume, or start (with the baselines' evaluations)
  ckpt = checkpointing.Checkpointer(workdir, keep=cfg.train.keep_checkpoints)
  baselines = {"random_init": os.path.join(workdir, "random_init_eval.json"),
               "initial": os.path.join(workdir, "initial_eval.json")}  # model.init_from's encoder, untrained
  state, start = _resume_or_start(cfg, ckpt, state, setup, data, baselines)

  # ---- loop
  state, progress = _loop(cfg, workdir, mesh, setup, state, step_rng, batches, data, ckpt, profiler,
                          schedule, start)

  # ---- evaluation of the frozen encoder, results
  if schedule.last < schedule.total:
    logging.info("stopped at step %d of %d (train.max_steps); rerun to resume", schedule.last, schedule.total)
  host = jax.device_get(state)
  if jax.process_index() != 0:
    return {}
  return _write_results(cfg, workdir, setup, host, data, schedule, progress, baselines, mesh.size, started)


def _loop(cfg: ml_collections.ConfigDict, workdir: str, mesh: Any, setup: Any, state: Any, step_rng: jax.Array,
          batches: Any, data: dict[str, Any], ckpt: checkpointing.Checkpointer,
          profiler: profiling.StepProfiler, schedule: _Schedule, start: int) -> tuple[Any, _Progress]:
  """Steps ``start`` .. ``schedule.last``, with the NaN guard, metrics, the kNN monitor and checkpoints.

  Returns ``(state, progress)``. Raises NonFiniteLossError (before any
  checkpoint of the bad step) and Preempted (SIGTERM/SIGINT: the step saved).
  """
  is_main = jax.process_index() == 0
  pretrain_steps, last_step, total_steps = schedule.pretrain, schedule.last, schedule.total
  # Module-level pure functions, compiled once each.
  joint_fn, pretrain_fn = registry.step_functions(cfg, setup, registry.hparams(cfg, setup, mesh.size))
  pretrain_fn = parallel.data_parallel(pretrain_fn, mesh) if pretrain_fn else None
  joint_fn = parallel.data_parallel(joint_fn, mesh)
  # All processes enter the loop together, with the steps compiled: process 0
  # alone ran the random-init evaluation, compile times differ (distributed.barrier).
  if jax.process_count() > 1:
    parallel.precompile([fn for fn, runs in ((pretrain_fn, start < pretrain_steps),
                                             (joint_fn, last_step > max(start, pretrain_steps))) if fn and runs],
                        mesh, state, batches[start], step_rng)
  distributed.barrier("train_loop_start", timeout_s=distributed.EVALUATION_TIMEOUT_S)
  writer = metrics_writer.MetricsWriter(workdir, resume_step=start)
  progress = _Progress({"pretrain": pretrain_steps, "joint": total_steps}, cfg.data.global_batch_size)
  pending: list[tuple[int, Any]] = []
  last_saved = start
  it = pipeline.iterate_from(batches, start, read_threads=cfg.data.read_threads,
                             prefetch=cfg.data.prefetch_batches, num_workers=cfg.data.num_workers)
  logging.info("training %s: %d decoder pre-training + %d joint steps, %d device(s), start at %d",
               cfg.method, pretrain_steps, schedule.joint, mesh.size, start)
  profiler.warn_if_outside(start, last_step)

  def last_good() -> str:
    """Where to go back to after a NaN or an explosion: the last checkpoint, or that there is none."""
    if last_saved == 0 and ckpt.latest_step() is None:
      return (f"no checkpoint was saved before it (train.checkpoint_every = {cfg.train.checkpoint_every}); "
              "a rerun starts from the beginning")
    return f"the last good checkpoint is step {last_saved} in {ckpt.directory}"

  def flush(step: int) -> dict[str, float]:
    """Fetches buffered metrics, stops on NaN/inf (before any checkpoint of it)."""
    fetched = [(s, {k: float(v) for k, v in jax.device_get(m).items()}) for s, m in pending]
    pending.clear()
    bad = _first_nonfinite(fetched)
    if bad is not None:
      bad_step, term = bad
      raise NonFiniteLossError(
          f"non-finite {term} at step {bad_step} (steps {fetched[0][0]}-{fetched[-1][0]} checked); {last_good()}")
    norm = float(_param_norm(state)) if fetched else 0.0  # (nothing new: checked at this step already)
    if not norm < MAX_PARAM_NORM:  # (also catches NaN)
      raise NonFiniteLossError(
          f"parameter norm {norm:.3g} at step {step} exceeds {MAX_PARAM_NORM:.0e} (exploded); {last_good()}")
    for s, scalars in fetched:
      writer.write(s, scalars)
    return fetched[-1][1] if fetched else {}

  def monitor(step: int) -> None:
    """Online kNN of the current encoder (eval.knn_every), logged as metrics."""
    scalars = checkpoint_eval.evaluate_state(cfg, setup.nets, jax.device_get(state), data, monitor_only=True)
    writer.write(step, scalars)
    logging.info("[monitor] step %d %s", step, " ".join(f"{k}={100 * v:.2f}%" for k, v in scalars.items()))

  lr_schedule = optim.learning_rate(cfg, schedule.joint)
  stop = preemption.StopRequest()
  stop.install()
  try:
    progress.start_window()
    compiled_phase = set()
    for step in range(start, last_step):
      waited = time.perf_counter()
      local_batch = next(it)
      progress.data_wait += time.perf_counter() - waited
      batch = parallel.shard_batch(mesh, local_batch)
      fn = pretrain_fn if step < pretrain_steps else joint_fn
      with profiler.step(step, lambda: state):
        state, metrics = fn(state, batch, step_rng)
      metrics = dict(metrics, lr=0.0 if step < pretrain_steps else lr_schedule(step - pretrain_steps))
      pending.append((step + 1, metrics))
      progress.window_steps += 1
      done = step + 1
      if done % cfg.train.log_every == 0 or done == last_step:
        scalars = flush(done)
        phase = "pretrain" if step < pretrain_steps else "joint"
        if is_main:
          logging.info("[%s] %s", phase, progress.line(done, scalars, phase=phase,
                                                       compiled=phase in compiled_phase))
        compiled_phase.add(phase)
        progress.start_window()
      if is_main and cfg.eval.knn_every and done % cfg.eval.knn_every == 0:
        flush(done)
        monitor(done)
        progress.start_window()  # the monitor's time is not a training step's
      stopping = stop.should_stop(done)  # (every step: in a multi-process run, a sync point)
      if stopping or done % cfg.train.checkpoint_every == 0 or done == last_step:
        flush(done)
        ckpt.save(done, state, data_position=done)
        last_saved = done
      if stopping:
        ckpt.wait()  # this save and any still in flight are on disk before we report them
        raise Preempted(f"{stop.signal_name} at step {done} of {total_steps}: saved checkpoint step {done} "
                        f"in {ckpt.directory}; rerun the same command to resume")
  except BaseException:
    # The error in flight is the one the user sees: a cleanup that fails too (a
    # full disk fails the checkpoint and then the metrics' flush) is logged, not raised.
    _close_loop_resources(stop, it, profiler, ckpt, writer, error_in_flight=True)
    raise
  _close_loop_resources(stop, it, profiler, ckpt, writer, error_in_flight=False)
  return state, progress


def _close_loop_resources(stop: Any, it: Any, profiler: Any, ckpt: Any, writer: Any, *,
                          error_in_flight: bool) -> None:
  """Restores the signal handlers and closes the input workers, profiler, checkpointer and metrics.

  All of them are closed whatever fails. Without an error in flight the first
  failure is raised after the rest are closed; with one, failures are logged.
  """
  # Worker processes stopped now, not by garbage collection at interpreter exit
  # (which raced with grain's own exit hook and printed a traceback after an error).
  closers = [stop.restore, getattr(it, "close", lambda: None), profiler.close, ckpt.close, writer.close]
  first = None
  for close in closers:
    try:
      close()
    except Exception as e:  # pylint: disable=broad-except
      if error_in_flight:  # (a full disk is said in words: the error in flight already gave its details)
        why = "disk full" if errors.is_disk_full(e) else f"{type(e).__name__}: {e}"
        logging.warning("while stopping after an error, %s failed too (%s)", getattr(close, "__qualname__", close), why)
      elif first is None:
        first = e
  if first is not None:
    raise first


def _write_results(cfg: ml_collections.ConfigDict, workdir: str, setup: Any, host: Any, data: dict[str, Any],
                   schedule: _Schedule, progress: _Progress, baselines: dict[str, str], num_devices: int,
                   started: float) -> dict[str, Any]:
  """Process 0: the trained encoder's evaluation beside the baselines, results.json / results.md, the
  learning curve and (``eval.pictures``) the pictures. Returns the results."""
  results: dict[str, Any] = {"trained": checkpoint_eval.evaluate_state(cfg, setup.nets, host, data)}
  for section, path in baselines.items():
    if os.path.exists(path):
      with open(path) as f:
        results[section] = json.load(f)
  results["run"] = {
      "method": cfg.method, "steps": f"{schedule.last} of {schedule.total} "
      f"({schedule.pretrain} decoder pre-training + {schedule.joint} joint)",
      "encoder": f"{cfg.model.encoder} width {cfg.model.width}",
      "data": f"{data['train'].description}; {cfg.data.image_size}px",
      "data wait": f"{100 * progress.wait_share():.1f}% of training time (windows without compilation)",
      "devices": num_devices,
      "seed": cfg.seed,
  }
  if cfg.model.get("init_from", "") not in config_blocks.INIT_RANDOM:
    results["run"]["initial encoder"] = cfg.model.init_from  # evaluated untouched in 'initial'
  # This process's time from the config check to here (a resumed run: this part only).
  results["run"]["wall time s"] = round(time.perf_counter() - started, 1)
  curve = curves.write_curve(workdir, title=f"fgjax {cfg.method}, seed {cfg.seed}: online kNN")
  results["run"]["learning curve"] = (
      "knn_curve.png" if curve else "no kNN monitor points (eval.knn_every = 0 or too few steps)")
  results["curve"] = curve
  report.write_results(workdir, results, title=f"fgjax {cfg.method}", curve=curve,
                       initial=report.initial_name(cfg.model.get("init_from", "")))
  if cfg.eval.pictures:
    pictures.write_for_state(cfg, setup.nets, host, data, workdir)
  return results
