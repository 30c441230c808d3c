"""Stop requests: SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) end a run with a checkpoint.

The training loop asks :meth:`StopRequest.should_stop` after every step. The
signal handler only records the request, so a step or a checkpoint write in
progress is never cut; the loop then saves the current step, waits for every
write to finish and raises :class:`fgjax.errors.Preempted` (``fgjax.main`` exits with
:data:`EXIT_PREEMPTED`). A second signal while that happens falls back to the
default behaviour (a user who presses Ctrl-C twice means it).

Multi-process runs: JAX's distributed runtime installs its own preemption
notifier, which takes SIGTERM; every process must save the *same* step, so the
request is read at ``multihost_utils.reached_preemption_sync_point(step)``,
which is true on all processes at the same step.
"""

from __future__ import annotations

import signal
import threading

import jax


EXIT_PREEMPTED = 3  # stopped by SIGTERM/SIGINT, checkpoint of the current step saved


class StopRequest:
  """Records SIGTERM/SIGINT between :meth:`install` and :meth:`restore`."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal_name: str | None = None
    self._previous: dict[int, object] = {}
    self._multiprocess = jax.process_count() > 1

  def install(self) -> None:
    """Installs the handlers (single-process runs, main thread)."""
    # Handlers can only be installed from the main thread (e.g. not in a worker
    # thread of a test runner); elsewhere the default behaviour stays.
    if not self._multiprocess and threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)

  def restore(self) -> None:
    """Puts the previous handlers back."""
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def _handle(self, signum, frame) -> None:
    if self.signal_name is not None:  # the second signal: stop now
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      signal.raise_signal(signum)
      return
    self.signal_name = signal.Signals(signum).name

  def should_stop(self, step: int) -> bool:
    """True once a stop was requested; in a multi-process run, at the same step on every process."""
    if self._multiprocess:
      from jax.experimental import multihost_utils
      try:
        reached = multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # the runtime was started without the preemption service
        self._multiprocess = False  # (no handlers either: JAX's runtime owns SIGTERM)
        return False
      if reached:
        self.signal_name = "a preemption notice"
      return reached
    return self.signal_name is not None
