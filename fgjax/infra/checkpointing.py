"""orbax checkpoints of the whole train state plus the data position, verified on restore.

A step folder counts as a checkpoint only when it is complete (:data:`REQUIRED_FILES`):
a SIGKILL during orbax's removal of an old step leaves a half-deleted folder
that would otherwise still be listed. Restoring reads every array; a step that
cannot be read (a deleted or truncated array file, damaged metadata) is
*damaged*, and :meth:`Checkpointer.restore_latest_good` falls back to the step
before it, naming the damage in one line.

orbax's OCDBT/zstd files carry no checksum: flipped bytes inside an array file
can decode to wrong numbers without an error. So every save first writes the
SHA-256 of each array's bytes to ``<workdir>/checkpoint_digests/<step>.json``
(atomically, before orbax starts, so a committed step always has its digests);
a restore recomputes them and treats a step whose content differs as damaged,
naming the first array that differs.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import logging as std_logging
import os
import re
import shutil
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from fgjax import errors
from fgjax.errors import CheckpointError  # (re-exported: raised here)


class _OrbaxDiskFull(std_logging.Filter):
  """Drops orbax's error records caused by a full disk (ENOSPC).

  On a full disk each of orbax's writer threads logs the same ``No space left on
  device`` with a traceback (four tracebacks, ~300 lines per failed save), while
  the save's ``wait`` raises it once in the main thread, where
  :meth:`Checkpointer.save` turns it into one line naming the step, the free and
  the needed space. Only those records are dropped: any other orbax error, and
  every record of other code, passes.
  """

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno < std_logging.ERROR or ("orbax" not in record.pathname and record.name != "asyncio"):
      return True  # (asyncio: "Task exception was never retrieved" of orbax's write tasks)
    text = record.getMessage() + (f" {record.exc_info[1]}" if record.exc_info and record.exc_info[1] else "")
    return not ("No space left on device" in text or "os_error_code='28'" in text)


_DISK_FULL_FILTER = _OrbaxDiskFull()


def quiet_disk_full_in_orbax_threads() -> None:
  """Installs :class:`_OrbaxDiskFull` on absl's logger (orbax logs through absl) and asyncio's, once."""
  for logger in (logging.get_absl_logger(), std_logging.getLogger("asyncio")):
    if _DISK_FULL_FILTER not in logger.filters:
      logger.addFilter(_DISK_FULL_FILTER)


def tree_path(path) -> str:
  """A key path as 'a/b/c', the same for a dataclass field and a dict key."""
  parts = []
  for entry in path:
    for attr in ("name", "key", "idx"):
      if hasattr(entry, attr):
        parts.append(str(getattr(entry, attr)))
        break
  return "/".join(parts)


def shape_mismatch(expected: Any, saved: dict[str, tuple[tuple[int, ...], str]]) -> str | None:
  """None if ``saved`` (``state_shapes``) holds exactly the arrays of ``expected``.

  Otherwise one line naming the first difference: a missing or extra array, or
  a shape or dtype change (e.g. a checkpoint of another encoder width). A
  checkpoint in the legacy SSL layout is compared in that layout
  (:func:`legacy_target`): it restores into ``expected``.
  """
  if is_legacy_ssl_layout(saved) and hasattr(expected, "legacy_fields"):
    expected = legacy_target(expected, saved)
  wanted = {tree_path(p): (tuple(x.shape), str(x.dtype))
            for p, x in jax.tree_util.tree_flatten_with_path(expected)[0]}
  for path, (shape, dtype) in wanted.items():
    if path not in saved:
      return f"the checkpoint has no array {path}"
    if saved[path][0] != shape:
      return f"{path} has shape {saved[path][0]} in the checkpoint, the config's model needs {shape}"
    if saved[path][1] != dtype:
      return f"{path} is {saved[path][1]} in the checkpoint, the config's model needs {dtype}"
  extra = sorted(set(saved) - set(wanted))
  if extra:
    return f"the checkpoint holds {len(extra)} array(s) the config's model does not, e.g. {extra[0]}"
  return None


# fgjax's first checkpoint layout of the SSL methods: one flat state for all of them, with 1x1
# placeholders (and empty trees) for what a method lacked. Each method now owns its state
# (``ssl_common.OnlineState`` and its subclasses, ``perturb_ssl.PerturbState``); a state class
# names its fields' legacy names (``legacy_fields``, ``from_legacy``) and :meth:`Checkpointer.restore`
# converts a legacy step on the fly (the next save writes the method's own layout).
LEGACY_SSL_FIELDS = ("step", "params", "batch_stats", "momentum_params", "momentum_batch_stats", "opt_state",
                     "decoder_opt_state", "queue", "queue_ptr", "feature_bank", "bank_ptr", "bank_count")
_LEGACY_EMPTY = {"momentum_params": {}, "momentum_batch_stats": {}, "decoder_opt_state": ()}


def is_legacy_ssl_layout(saved: dict[str, tuple[tuple[int, ...], str]]) -> bool:
  """Whether ``saved`` (``state_shapes``) is the legacy flat SSL layout (``step`` and ``bank_ptr`` at the top)."""
  return {"step", "bank_ptr", "bank_count"} <= {path.split("/")[0] for path in saved}


def legacy_target(state: Any, saved: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, Any]:
  """``state`` (concrete or abstract) as a tree of the legacy layout: its own fields under their legacy
  names, the placeholders it no longer has as ``saved`` holds them (sharded as its ``step``)."""
  have = state.legacy_fields()
  sharding = getattr(state.step, "sharding", None)
  out = {}
  for name in LEGACY_SSL_FIELDS:
    if name in have:
      out[name] = have[name]
    elif name in saved:
      shape, dtype = saved[name]
      out[name] = jax.ShapeDtypeStruct(shape, np.dtype(dtype), sharding=sharding)
    else:
      out[name] = _LEGACY_EMPTY.get(name, {})
  return out


def state_digests(state: Any) -> dict[str, str]:
  """``'params/encoder/conv_init/kernel' -> SHA-256 hex`` of every array's bytes (host copies)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]:
    data = np.ascontiguousarray(leaf).reshape(-1).view(np.uint8)  # (bfloat16 too: bytes, not values)
    out[tree_path(path)] = hashlib.sha256(data).hexdigest()
  return out


# Files every complete step has (orbax writes them last, at the commit).
REQUIRED_FILES = ("_CHECKPOINT_METADATA", "state/_METADATA", "state/manifest.ocdbt", "data/metadata")
DAMAGED_DIR = "damaged_checkpoints"  # under the workdir: damaged steps are moved here, not deleted
DIGESTS_DIR = "checkpoint_digests"  # under the workdir: <step>.json, the arrays' SHA-256 at save


def _first_line(e: BaseException) -> str:
  """The root cause of an orbax/tensorstore error in one short line.

  orbax wraps tensorstore's error (``FAILED_PRECONDITION: Error reading "<array>"
  in OCDBT database at local file "...": Truncated Zstd-compressed stream``) in
  an exception whose text is the whole TensorStore spec; the innermost cause
  says what is wrong, without the database path (the step is named already).
  """
  while (e.__cause__ or e.__context__) is not None:
    e = e.__cause__ or e.__context__
  text = " ".join(str(e).split("\n")[0].split()) or type(e).__name__
  text = re.sub(r' in OCDBT database at local file "[^"]*"', "", text)
  text = text.split(" See full TensorStore details")[0]
  return f"{type(e).__name__}: {text}"[:300]


def _quiet_abandoned_reads() -> None:
  """Silences the echoes of a failed restore, once it has been reported in one line.

  When one array of a step cannot be read, orbax raises at once while its other
  reads (coroutines on its own event loops) fail or are dropped later; Python
  then prints "Exception ignored in <coroutine ...>" and asyncio logs "Future
  exception was never retrieved" with the whole TensorStore spec, dozens of
  tracebacks after the one line that named the damage. Only those are dropped.
  """
  if getattr(_quiet_abandoned_reads, "installed", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and "orbax" in code.co_filename:
      return
    previous(unraisable)

  sys.unraisablehook = hook
  std_logging.getLogger("asyncio").addFilter(
      lambda record: "exception was never retrieved" not in record.getMessage())
  _quiet_abandoned_reads.installed = True


class Checkpointer:
  """``CheckpointManager`` over ``<workdir>/checkpoints``.

  Each checkpoint holds ``state`` (every array of the method's state: parameters,
  key or target network, optimizer states, queue, memory bank, counters) and
  ``data`` (JSON: the position in the training stream, i.e. batches consumed).
  All processes take part in save and restore.
  """

  def __init__(self, workdir: str, *, keep: int = 1, create: bool = True):
    quiet_disk_full_in_orbax_threads()
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.digests_directory = os.path.abspath(os.path.join(workdir, DIGESTS_DIR))
    self._writes = create  # training (False: evaluation and tools only read)
    self._skipped: set[int] = set()  # damaged steps that could not be moved aside (a read-only directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    # Handlers named up front, so that metadata can be read before a restore.
    handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def missing_files(self, step: int) -> list[str]:
    """The :data:`REQUIRED_FILES` that step ``step``'s folder lacks (empty: complete)."""
    folder = os.path.join(self.directory, str(step))
    return [name for name in REQUIRED_FILES if not os.path.isfile(os.path.join(folder, name))]

  def all_steps(self) -> list[int]:
    """The complete steps, oldest first (half-written or half-deleted folders are not steps; nor are damaged
    steps skipped in place)."""
    return sorted(s for s in self._manager.all_steps() if not self.missing_files(s) and s not in self._skipped)

  def incomplete_steps(self) -> list[int]:
    return sorted(s for s in self._manager.all_steps() if self.missing_files(s))

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def state_shapes(self, step: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """``'params/encoder/conv_init/kernel' -> (shape, dtype name)`` of every saved array."""
    try:
      metadata = self._manager.item_metadata(step)["state"]
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"checkpoint step {step} in {self.directory} is damaged "
                            f"(its metadata: {_first_line(e)})") from None
    return {tree_path(path): (tuple(leaf.shape), str(leaf.dtype))
            for path, leaf in jax.tree_util.tree_flatten_with_path(metadata)[0]}

  def _digest_path(self, step: int) -> str:
    return os.path.join(self.digests_directory, f"{step}.json")

  def _write_digests(self, step: int, state: Any) -> None:
    """Process 0 writes ``step``'s digests (tmp file + rename) and drops those of steps orbax removed."""
    if jax.process_index() != 0:
      return
    os.makedirs(self.digests_directory, exist_ok=True)
    path = self._digest_path(step)
    with open(path + ".tmp", "w") as f:
      json.dump(state_digests(state), f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    self._prune_digests(also_keep=step)

  def _prune_digests(self, also_keep: int | None = None) -> None:
    """Removes the digests of steps orbax no longer has (and half-written digest files)."""
    if not self._writes or jax.process_index() != 0 or not os.path.isdir(self.digests_directory):
      return
    kept = {f"{s}.json" for s in self._manager.all_steps()} | {f"{also_keep}.json"}
    for name in os.listdir(self.digests_directory):
      if name not in kept:
        os.remove(os.path.join(self.digests_directory, name))

  def verify(self, step: int, restored_state: Any) -> None:
    """Raises :class:`CheckpointError` when ``restored_state`` differs from ``step``'s digests.

    A step saved before fgjax wrote digests has none: it is read, not verified (logged).
    """
    path = self._digest_path(step)
    if not os.path.isfile(path):
      logging.warning("checkpoint step %d in %s has no digests (saved before fgjax wrote them): read, "
                      "not verified", step, self.directory)
      return
    try:
      with open(path) as f:
        saved = json.load(f)
    except (OSError, ValueError) as e:
      raise CheckpointError(f"checkpoint step {step}: its digests {path} cannot be read ({e})") from None
    got = state_digests(restored_state)
    for name, digest in saved.items():
      if got.get(name) != digest:
        raise CheckpointError(f"checkpoint step {step} in {self.directory} is damaged (array {name} differs "
                              f"from the digest written when it was saved)")
    extra = sorted(set(got) - set(saved))
    if extra:
      raise CheckpointError(f"checkpoint step {step} in {self.directory}: array {extra[0]} has no digest")

  def save(self, step: int, state: Any, *, data_position: int) -> None:
    """Writes ``step``'s digests, then starts an (asynchronous) save of it; a full disk is a
    :class:`CheckpointError`."""
    with self._disk_full_is_one_line(step):
      self._write_digests(step, state)
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave({"data_position": int(data_position)})))

  def _size_of_latest(self) -> int:
    latest = self.latest_step()
    if latest is None:
      return 0
    total = 0
    for root, _, files in os.walk(os.path.join(self.directory, str(latest))):
      total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total

  @contextlib.contextmanager
  def _disk_full_is_one_line(self, step: int):
    """An out-of-space error while saving becomes one line with the space needed."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except  (tensorstore wraps OSError in its own types)
      code = getattr(e, "errno", None)
      if code in (errno.EROFS, errno.EACCES, errno.EPERM) or "Read-only file system" in str(e):
        raise CheckpointError(f"cannot write checkpoint step {step} in {self.directory}: "
                              f"{getattr(e, 'strerror', None) or 'read-only file system'}") from None
      if not errors.is_disk_full(e):
        raise
      try:  # a save still in flight finishes (or fails) first: report what is on disk
        self._manager.wait_until_finished()
        self._manager.check_for_errors()  # its error is this one's echo: collected, not raised later
      except Exception:  # pylint: disable=broad-except
        pass
      free = shutil.disk_usage(self.directory).free
      raise CheckpointError(
          f"disk full: cannot write checkpoint step {step} in {self.directory} ({free / 2**20:.0f} MiB "
          f"free; a checkpoint of this run takes about {self._size_of_latest() / 2**20:.0f} MiB); "
          f"the newest saved step {self.latest_step()} is kept; free some space and rerun to resume") from None

  def restore(self, step: int, target_state: Any) -> tuple[Any, int]:
    """Restores ``step`` into the shapes, dtypes and shardings of ``target_state``.

    A step in the legacy SSL layout (:data:`LEGACY_SSL_FIELDS`) is read in that
    layout, verified against its digests, and converted into ``target_state``'s
    class (``from_legacy``).

    Raises:
      CheckpointError: the step is incomplete or cannot be read, with the cause.
    """
    missing = self.missing_files(step)
    if missing:
      raise CheckpointError(f"checkpoint step {step} in {self.directory} is incomplete "
                            f"(no {', '.join(missing)})")
    target, legacy = target_state, False
    if hasattr(target_state, "legacy_fields"):  # an SSL method's state: the step may be in the legacy layout
      saved = self.state_shapes(step)
      legacy = is_legacy_ssl_layout(saved)
      target = legacy_target(target_state, saved) if legacy else target_state
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
      position = int(restored["data"]["data_position"])
    except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore raise many kinds)
      _quiet_abandoned_reads()
      gc.collect()  # the abandoned reads' echoes come now, while silenced
      raise CheckpointError(f"checkpoint step {step} in {self.directory} is damaged "
                            f"({_first_line(e)})") from None
    self.verify(step, restored["state"])
    if legacy:
      logging.info("checkpoint step %d in %s is in the legacy SSL layout: converted to %s", step,
                   self.directory, type(target_state).__name__)
      return type(target_state).from_legacy(restored["state"], target_state), position
    return restored["state"], position

  def read(self, step: int) -> tuple[Any, int]:
    """Step ``step`` as saved (host arrays, no target structure): ``(state tree, data position)``."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore()))
    return restored["state"], int(restored["data"]["data_position"])

  def restore_latest_good(self, target_state: Any, *,
                          move_damaged: bool = True) -> tuple[Any, int, int] | None:
    """The newest step that restores: ``(state, data position, step)``, or None without steps.

    Each damaged newer step is logged in one line and, with ``move_damaged``
    (training; evaluation only reads), moved to ``<workdir>/damaged_checkpoints/``
    (kept for inspection, out of orbax's way: the resumed run will save that step
    number again).

    Raises:
      CheckpointError: steps exist but none restores.
    """
    damaged = []
    for step in reversed(self.all_steps()):
      try:
        state, position = self.restore(step, target_state)
      except CheckpointError as e:
        logging.warning("%s; trying the step before it", e)
        damaged.append((step, str(e)))
        continue
      if damaged and move_damaged:
        for bad, _ in damaged:
          self.quarantine(bad)
        logging.warning("resuming from checkpoint step %d; damaged step(s) %s moved to %s", step,
                        [bad for bad, _ in damaged], os.path.join(os.path.dirname(self.directory), DAMAGED_DIR))
      return state, position, step
    if damaged:
      raise CheckpointError(f"no checkpoint in {self.directory} can be restored: "
                            + "; ".join(reason for _, reason in damaged))
    return None

  def quarantine(self, step: int) -> str | None:
    """Moves step ``step``'s folder to ``<workdir>/damaged_checkpoints/<step>[.k]``.

    Kept, not deleted (the data may still be wanted), and out of orbax's way:
    orbax would not save that step number again while the folder exists. In a
    multi-process run only process 0 moves it (the workdir is shared); every
    process forgets the step. Returns the new path (None on the other processes).
    """
    self._manager.wait_until_finished()
    target = None
    source = os.path.join(self.directory, str(step))
    if jax.process_index() == 0 and os.path.exists(source):
      target_dir = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)
      target, k = os.path.join(target_dir, str(step)), 1
      while os.path.exists(target):
        target, k = os.path.join(target_dir, f"{step}.{k}"), k + 1
      try:
        os.makedirs(target_dir, exist_ok=True)
        # A rename or nothing: a copy across file systems that fails half-way (a read-only source) would
        # leave a partial duplicate behind.
        os.rename(source, target)
      except OSError as e:
        logging.warning("cannot move damaged checkpoint step %d out of %s (%s): skipped in place", step,
                        self.directory, e.strerror or e)
        self._skipped.add(step)
        target = None
    self._manager.reload()  # orbax caches the step list
    return target

  def leftovers(self) -> tuple[list[str], list[str]]:
    """``(orbax's temporary folders, other entries)`` in the checkpoint directory that are not steps.

    A run killed while orbax wrote a step leaves ``<step>.orbax-checkpoint-tmp-<n>``; anything else
    there that is not a step folder is not fgjax's.
    """
    if not os.path.isdir(self.directory):
      return [], []
    temporary, stray = [], []
    for name in sorted(os.listdir(self.directory)):
      if re.fullmatch(r"\d+", name):
        continue
      (temporary if re.fullmatch(r"\d+\.orbax-checkpoint-tmp-.*", name) else stray).append(name)
    return temporary, stray

  def quarantine_incomplete(self) -> list[int]:
    """Moves every incomplete step folder and orbax temporary folder aside (see :meth:`quarantine`), with a
    warning, and names the other entries that are not steps (left alone); returns the incomplete steps."""
    temporary, stray = self.leftovers()
    if temporary and jax.process_index() == 0:
      target_dir = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)
      try:
        os.makedirs(target_dir, exist_ok=True)
        for name in temporary:
          os.rename(os.path.join(self.directory, name), os.path.join(target_dir, name))
        logging.warning("moved %d unfinished orbax write(s) %s out of %s to %s", len(temporary), temporary,
                        self.directory, target_dir)
      except OSError as e:
        logging.warning("cannot move the unfinished orbax write(s) %s out of %s (%s): left in place", temporary,
                        self.directory, e.strerror or e)
    if stray:
      logging.warning("%s holds %d %s not checkpoint steps (left alone): %s", self.directory, len(stray),
                      "entry that is" if len(stray) == 1 else "entries that are", stray)
    steps = self.incomplete_steps()
    for step in steps:
      logging.warning("checkpoint folder %s/%d is incomplete (no %s): not a step; moved to %s", self.directory,
                      step, ", ".join(self.missing_files(step)),
                      os.path.join(os.path.dirname(self.directory), DAMAGED_DIR))
      self.quarantine(step)
    return steps

  def wait(self) -> None:
    with self._disk_full_is_one_line(self._manager.latest_step() or 0):
      self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for the saves in flight, then closes orbax's manager; a full disk is one line either way.

    The manager's ``close`` re-raises an error its writer threads stored and nobody
    collected (a save that failed in the background while another one's error was
    being reported): unguarded, that raw ``OSError`` replaced the one-line error.
    """
    try:
      self.wait()
      self._prune_digests()
    finally:
      with self._disk_full_is_one_line(self._manager.latest_step() or 0):
        self._manager.close()


def read_latest(workdir: str) -> tuple[int, Any, int]:
  """``(step, state tree, data position)`` of a run's newest complete checkpoint, as saved.

  Host arrays without a target structure: for tests, tools and inspection.

  Raises:
    CheckpointError: the workdir has no complete checkpoint.
  """
  ckpt = Checkpointer(workdir, keep=1_000_000, create=False)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise CheckpointError(f"no checkpoint in {ckpt.directory}")
    state, position = ckpt.read(step)
  finally:
    ckpt.close()
  return step, state, position
