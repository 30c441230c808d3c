"""A ``jax.profiler`` trace of a few training steps, switched on by config.

  python -m fgjax.main --config=configs/moco.py --workdir=runs/moco \\
      --config.train.profile_steps=3 --config.train.profile_start_step=5

traces steps 5, 6 and 7 into ``<workdir>/profile`` (or ``train.profile_dir``):
``plugins/profile/<timestamp>/<host>.xplane.pb`` for TensorBoard's profile
plugin (``tensorboard --logdir <workdir>/profile``, with ``tensorboard-plugin-profile``
installed) and ``<host>.trace.json.gz``, which https://ui.perfetto.dev opens as
it is. Each traced step is a ``StepTraceAnnotation`` named ``train`` with its step
number, so the tools split the timeline by step.

The window is counted in absolute steps (decoder pre-training steps included),
so a resumed run traces the part of the window that is still ahead of it. The
first steps of a run compile; start the window after them (the default is step
5) to see steady-state steps. The trace waits for the last traced step's
results, so the device work of every traced step is inside it.

``python -m fgjax.tools.trace_summary DIR`` prints where the time of the latest
trace in DIR went, by XLA op kind: a first look without TensorBoard.

:func:`check_profile_dir` runs before anything compiles: a directory that cannot
be written is one :class:`fgjax.errors.ConfigError` line, not a failure after the
first steps.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
from absl import logging

from fgjax.errors import ConfigError
from fgjax.infra import fs


PROFILE_SUBDIR = "profile"


def profile_dir(cfg: ml_collections.ConfigDict, workdir: str) -> str:
  """``train.profile_dir``, or ``<workdir>/profile`` when it is empty."""
  return os.path.abspath(cfg.train.get("profile_dir", "") or os.path.join(workdir, PROFILE_SUBDIR))


def check_profile_dir(directory: str) -> str:
  """Creates ``directory`` and checks it is writable; ConfigError (one line) if not."""
  try:
    fs.ensure_writable_dir(directory)  # every process of a multi-host run writes its own trace here
  except OSError as e:
    raise ConfigError(
        f"config field 'train.profile_dir': profile directory {directory!r} is not writable: "
        f"{e.strerror or e}") from None
  return directory


class StepProfiler:
  """Starts a ``jax.profiler`` trace before step ``start`` and stops it after ``num_steps`` steps.

  Use around the step call of a training loop::

      profiler = StepProfiler.from_config(cfg, workdir)   # checks the directory
      for step in range(start, last):
        with profiler.step(step, lambda: state):
          state, metrics = step_fn(state, batch, rng)
      profiler.close()   # (in a finally: stops a trace left open by an error)

  ``num_steps = 0`` makes every method a no-op.
  """

  def __init__(self, directory: str | None, start: int, num_steps: int):
    self.directory = directory
    self.start = int(start)
    self.end = int(start) + int(num_steps)
    self.active = False
    self.traced_steps = 0

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict, workdir: str) -> "StepProfiler":
    """The profiler of ``cfg.train`` (off when ``train.profile_steps`` is 0).

    Raises:
      ConfigError: the profile directory cannot be written (only
        checked when profiling is on).
    """
    t = cfg.train
    num_steps = int(t.get("profile_steps", 0))
    if num_steps <= 0:
      return cls(None, 0, 0)
    return cls(check_profile_dir(profile_dir(cfg, workdir)), int(t.get("profile_start_step", 0)),
               num_steps)

  @property
  def enabled(self) -> bool:
    return self.directory is not None and self.end > self.start

  def warn_if_outside(self, first_step: int, last_step: int) -> None:
    """Logs a warning when the window ``[start, end)`` misses the steps ``[first, last)`` of this run."""
    if self.enabled and (self.end <= first_step or self.start >= last_step):
      logging.warning("profile window: steps %d-%d lie outside this run's steps %d-%d; no trace "
                      "is written (train.profile_start_step)", self.start, self.end - 1,
                      first_step, last_step - 1)

  def step(self, step: int, state_fn=None) -> "_StepContext":
    """Context manager around one training step; ``state_fn()`` returns what to wait for at the end."""
    return _StepContext(self, step, state_fn)

  def _begin(self, step: int) -> None:
    if not self.enabled or self.active or not self.start <= step < self.end:
      return
    jax.profiler.start_trace(self.directory)
    self.active = True
    logging.info("profiling steps %d-%d into %s", step, self.end - 1, self.directory)

  def _finish(self, step: int, state: Any) -> None:
    if not self.active:
      return
    self.traced_steps += 1
    if step + 1 >= self.end:
      self.close(state)

  def close(self, state: Any = None) -> None:
    """Stops an open trace (after waiting for ``state``, so its device work is traced)."""
    if not self.active:
      return
    if state is not None:
      jax.block_until_ready(state)
    jax.profiler.stop_trace()
    self.active = False
    logging.info("profile of %d step(s) written to %s (TensorBoard profile plugin, or "
                 "*.trace.json.gz in ui.perfetto.dev)", self.traced_steps, self.directory)


class _StepContext:
  """One step inside a :class:`StepProfiler`: a ``StepTraceAnnotation`` while tracing."""

  def __init__(self, profiler: StepProfiler, step: int, state_fn):
    self.profiler, self.step, self.state_fn = profiler, step, state_fn
    self.annotation = None

  def __enter__(self):
    self.profiler._begin(self.step)
    if self.profiler.active:
      self.annotation = jax.profiler.StepTraceAnnotation("train", step_num=self.step)
      self.annotation.__enter__()
    return self

  def __exit__(self, exc_type, exc, tb):
    if self.annotation is not None:
      self.annotation.__exit__(exc_type, exc, tb)
    if exc_type is None:
      self.profiler._finish(self.step, self.state_fn() if self.state_fn else None)
    return False
