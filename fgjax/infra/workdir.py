"""The run's workdir: created and checked, held by one writer, refused on a changed config.

A workdir holds one run: ``config.json``, ``checkpoints/``, ``metrics.jsonl``,
results. Three things would silently damage it, and each is refused here
*before* anything in the workdir is written:

* an unwritable or missing-parent path (:func:`prepare`);
* a second process training into it at the same time (:class:`Lock`: an
  exclusive ``fcntl`` lock on ``<workdir>/.fgjax.lock``, held for the run; the
  kernel drops it when the holder dies, even by SIGKILL, so a stale lock never
  blocks; the file names the holder's host and pid for the error message);
* a rerun whose config changes the state's shape or meaning
  (:func:`check_resume_config`): a different method, model, data, augmentation
  or schedule would resume a checkpoint it does not describe. Fields that are
  safe to change when resuming are :data:`SAFE_TO_CHANGE_ON_RESUME`.

Multi-process runs: process 0 takes the lock (the processes share the workdir);
every process checks the config.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
from typing import Any
from typing import Callable

import ml_collections

from fgjax.errors import WorkdirError  # (re-exported: raised here)
from fgjax.infra import fs


LOCK_NAME = ".fgjax.lock"

# Config fields (dotted paths; a trailing '.' means the whole block) that a rerun
# may change without changing what the checkpoint is: logging, checkpoint
# cadence, where to stop, profiling, the evaluation protocol, the input
# pipeline's parallelism, where tfds keeps its files, and how convolutions are
# computed (model.conv_impl: the same math to float32 rounding).
SAFE_TO_CHANGE_ON_RESUME = (
    "workdir", "train.", "eval.",
    "data.read_threads", "data.prefetch_batches", "data.num_workers", "data.data_dir",
    "model.conv_impl",
)


def prepare(workdir: str) -> str:
  """Creates the workdir and checks that it is writable; returns its absolute path."""
  if not workdir:
    raise WorkdirError("no workdir given: pass --workdir=DIR (or --config.workdir=DIR)")
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"workdir {workdir!r} is a file, not a directory: use another --workdir")
  try:
    fs.ensure_writable_dir(workdir)
  except OSError as e:
    raise WorkdirError(f"workdir {workdir!r} is not writable: {e.strerror or e}") from None
  return workdir


def remove_if_untouched(workdir: str) -> bool:
  """Removes a workdir that holds nothing but what a run writes before training (config.json, the lock).

  For a run that created its workdir and then stopped on bad input: it leaves no trace. Returns whether
  it removed it.
  """
  if not os.path.isdir(workdir) or not set(os.listdir(workdir)) <= {"config.json", "config.json.tmp", LOCK_NAME}:
    return False
  shutil.rmtree(workdir, ignore_errors=True)
  return True


class Lock:
  """Exclusive lock of a workdir for the lifetime of a run (a context manager).

  ``fcntl.flock`` is advisory and per open file: a second process (or a second
  ``Lock`` in the same process) cannot take it while the first holds it, and it
  disappears with its holder. On network file systems without ``flock``
  support the lock is skipped with the reason in :attr:`skipped`.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_NAME)
    self._file = None
    self.skipped: str | None = None

  def __enter__(self) -> "Lock":
    f = open(self.path, "a+")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise WorkdirError(
            f"workdir {os.path.dirname(self.path)} is in use by {holder}; wait for that run to "
            "end, or use another --workdir") from None
      f.close()  # ENOLCK / EOPNOTSUPP: the file system has no locks
      self.skipped = f"no file locks on this file system ({e.strerror})"
      return self
    f.seek(0)
    f.truncate()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    f.write(f"host {socket.gethostname()} pid {os.getpid()} (since {started})\n")
    f.flush()
    self._file = f
    return self

  def __exit__(self, *exc) -> None:
    if self._file is not None:
      self._file.seek(0)
      self._file.truncate()  # a later reader finds no stale holder
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None


def write_config(workdir: str, cfg: Any) -> None:
  """Writes ``<workdir>/config.json`` atomically (a temporary file, then a rename).

  The other processes of a multi-process run read it in
  :func:`check_resume_config` while process 0 writes it: they must see the old
  file or the new one, never a truncated one.
  """
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w") as f:
    f.write(cfg.to_json_best_effort(indent=2))
  os.replace(path + ".tmp", path)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def _safe(field: str) -> bool:
  return any(field == s or (s.endswith(".") and field.startswith(s)) for s in SAFE_TO_CHANGE_ON_RESUME)


# Values that say the same thing: model.init_from '' and 'none' are both a random initialisation
# (a run started with '' resumes with an explicit 'none', as the from-scratch tables pass it).
_SAME_VALUE = {"model.init_from": {"": "none"}}


def changed_fields(saved: dict[str, Any], wanted: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
  """``{field (dotted): (saved value, wanted value)}`` of the fields that differ and are not safe to change."""
  a, b = _flatten(saved), _flatten(wanted)
  changed = {}
  for field in sorted(set(a) | set(b)):
    old, new = a.get(field, "<absent>"), b.get(field, "<absent>")
    same = _SAME_VALUE.get(field, {})
    if isinstance(old, str) and isinstance(new, str):
      old, new = same.get(old, old), same.get(new, new)
    if not _safe(field) and old != new:
      changed[field] = (old, new)
  return changed


def check_resume_config(workdir: str, cfg: Any, with_defaults: Callable[[Any], Any]) -> None:
  """Refuses a run whose config differs from the workdir's ``config.json`` in a field that matters.

  Only a workdir that already holds checkpoints is checked: without one the run
  starts from scratch and its ``config.json`` is rewritten. The saved config is
  completed with today's defaults first (``with_defaults``: the trainer passes
  ``fgjax.methods.registry.with_defaults``), so a run of an older fgjax compares
  on what it ran with.

  Raises:
    WorkdirError: naming up to five of the changed fields, old -> new.
  """
  path = os.path.join(workdir, "config.json")
  checkpoints = os.path.join(workdir, "checkpoints")
  if not (os.path.isfile(path) and os.path.isdir(checkpoints) and os.listdir(checkpoints)):
    return
  try:
    with open(path) as f:
      saved_cfg = with_defaults(ml_collections.ConfigDict(json.load(f)))
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{path} cannot be read ({e}); it describes the checkpoints in {checkpoints}: "
                       "restore it, or use another --workdir") from None
  saved = json.loads(saved_cfg.to_json_best_effort())
  wanted = json.loads(cfg.to_json_best_effort())
  changed = changed_fields(saved, wanted)
  if changed:
    shown = ", ".join(f"{f} {old!r} -> {new!r}" for f, (old, new) in list(changed.items())[:5])
    more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
    raise WorkdirError(
        f"workdir {workdir} holds checkpoints of another config ({shown}{more}); rerun with the "
        f"same config to resume, or use another --workdir (safe to change on resume: "
        f"{', '.join(s.rstrip('.') + ('.*' if s.endswith('.') else '') for s in SAFE_TO_CHANGE_ON_RESUME)})")
