"""Training metrics: JSON lines and TensorBoard event files (tensorboardX, no TensorFlow)."""

from __future__ import annotations

import json
import os
from typing import Any

import jax


class MetricsWriter:
  """Writes ``metrics.jsonl`` and ``tb/`` event files in the workdir (process 0 only)."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if self._active:
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      from tensorboardX import SummaryWriter  # imported lazily: only process 0 writes
      self._tb = SummaryWriter(os.path.join(workdir, "tb"))

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    if not self._active:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    for key, value in scalars.items():
      self._tb.add_scalar(key, float(value), int(step))

  def close(self) -> None:
    if self._active:
      self._jsonl.close()
      self._tb.close()
