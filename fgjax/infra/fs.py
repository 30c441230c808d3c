"""Filesystem checks shared by the workdir and the profile directory."""

from __future__ import annotations

import os

import jax


def ensure_writable_dir(directory: str) -> None:
  """Creates ``directory`` and writes and removes a probe file in it; raises OSError if it cannot.

  The probe is named by process index and pid: processes of a multi-host run
  share the directory, and two hosts may share a pid.
  """
  os.makedirs(directory, exist_ok=True)
  probe = os.path.join(directory, f".write_test_{jax.process_index()}_{os.getpid()}")
  with open(probe, "w") as f:
    f.write("ok")
  os.remove(probe)
