"""Every error fgjax raises on purpose, in one place.

Each carries a one-line message that names the cause (the config field, the
file, the step). The command line (``fgjax.main``) turns them into one line on
stderr and an exit status: :class:`UserError` subclasses exit 2 (fix the input
and run again), :class:`NonFiniteLossError` exits 1, :class:`Preempted` exits 3
(``fgjax.infra.preemption.EXIT_PREEMPTED``; rerun the same command to resume).
"""

from __future__ import annotations

import errno


class UserError(Exception):
  """Base of the errors a user fixes by changing the input (exit status 2)."""


class ConfigError(UserError, ValueError):
  """A config field is unknown or has an impossible value (one line, names the field)."""


class ConfigLoadError(Exception):
  """A --config file that cannot be loaded (not a ValueError: absl must not wrap it)."""


class WorkdirError(UserError, RuntimeError):
  """The workdir cannot be used: unwritable, held by another run, or of another config."""


class CheckpointError(WorkdirError):
  """A checkpoint step cannot be used (incomplete, damaged, disk full); the message names the step and why."""


class DataError(UserError, ValueError):
  """A data set cannot be read as configured; the message names the path or class."""


class ImageTooLargeError(ValueError):
  """An image has more pixels than the configured limit (``data.max_image_pixels``)."""


class EvaluationError(UserError, ValueError):
  """The inputs of an evaluation cannot give a meaningful number (one line)."""


class PretrainedError(UserError, ValueError):
  """A weights file (or run directory) cannot initialise the encoder: unreadable, needs pickle, a tensor
  missing, unexpected or of another shape; the message names the file, the tensor and both shapes."""


class PicturesError(UserError, RuntimeError):
  """A picture cannot be made (missing extra, bad request); the message names the cause."""


class ExplorerError(UserError, RuntimeError):
  """The embedding explorer cannot be made (missing extra, runs on different data, a split too small); one line."""


class DistributedError(UserError, RuntimeError):
  """The multi-process runtime cannot start, or the processes disagree (one line)."""


class NonFiniteLossError(RuntimeError):
  """A loss term became NaN/inf, or the parameters exploded; the message names the step and the term."""


class Preempted(RuntimeError):
  """The run stopped on a signal after saving a checkpoint; the message says which step."""


# What a full disk or an exhausted quota says, where a library (tensorstore) wraps the OSError in its own type.
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def is_disk_full(e: BaseException) -> bool:
  """Whether ``e`` is a write that failed for want of space: ENOSPC or EDQUOT, raised or wrapped."""
  return getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(t in str(e) for t in _DISK_FULL_TEXT)
