"""Training metrics: JSON lines and TensorBoard event files (tensorboardX, no TensorFlow).

The event file is written in the caller's thread (tensorboardX's ``EventsWriter``),
not through ``SummaryWriter``'s queue and writer thread: when that thread dies on
a full disk, its queue of 10 events fills and the next ``add_scalar`` blocks
forever (seen: a run on a full 2 MiB tmpfs, logging every step, hung at step 69). Written here,
a full disk is an ``OSError`` in the training loop, which ``fgjax.main`` reports
as one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

import jax


def drop_rows_after(path: str, step: int) -> int:
  """Rewrites the JSON-lines file ``path`` without the rows of steps after ``step``; returns how many.

  A resumed run redoes the steps after its checkpoint: their old rows (written
  before the interruption) go, so that each step has its rows once. The file is
  replaced atomically (a kill during the rewrite leaves the old file).
  """
  if not os.path.exists(path):
    return 0
  kept, dropped = [], 0
  with open(path) as f:
    for line in f:
      try:
        row_step = json.loads(line).get("step")
      except ValueError:  # a line cut by a kill mid-write
        dropped += 1
        continue
      if row_step is not None and row_step > step:
        dropped += 1
      else:
        kept.append(line if line.endswith("\n") else line + "\n")
  if dropped:
    with open(path + ".tmp", "w") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)
  return dropped


class MetricsWriter:
  """Writes ``metrics.jsonl`` and ``tb/`` event files in the workdir (process 0 only).

  ``resume_step``: the step a resumed run starts from; rows of later steps are
  dropped from ``metrics.jsonl`` first (TensorBoard shows the newest value of a
  redone step).
  """

  def __init__(self, workdir: str, *, resume_step: int = 0):
    self._active = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if self._active:
      drop_rows_after(os.path.join(workdir, "metrics.jsonl"), resume_step)
      self._jsonl_path = os.path.join(workdir, "metrics.jsonl")
      self._tb_path = os.path.join(workdir, "tb")
      self._jsonl = open(self._jsonl_path, "a")
      # Imported lazily: only process 0 writes.
      from tensorboardX.event_file_writer import EventsWriter
      from tensorboardX.proto.event_pb2 import Event
      from tensorboardX.summary import scalar
      self._event, self._scalar = Event, scalar
      os.makedirs(os.path.join(workdir, "tb"), exist_ok=True)
      self._tb = EventsWriter(os.path.join(workdir, "tb", "events"))

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    if not self._active:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with _naming(self._jsonl_path):
      self._jsonl.write(json.dumps(record) + "\n")
      self._jsonl.flush()
    now = time.time()
    with _naming(self._tb_path):
      for key, value in scalars.items():
        self._tb.write_event(self._event(wall_time=now, step=int(step), summary=self._scalar(key, float(value))))
      self._tb.flush()

  def close(self) -> None:
    if self._active:
      with _naming(self._jsonl_path):
        self._jsonl.close()
      with _naming(self._tb_path):
        self._tb.close()


@contextlib.contextmanager
def _naming(path: str):
  """An ``OSError`` of a write to an open file (which carries no file name) names ``path``: a full disk's
  one line then says which file could not be written."""
  try:
    yield
  except OSError as e:
    if e.filename:
      raise
    raise OSError(e.errno, e.strerror, path) from e
