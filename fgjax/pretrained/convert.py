"""The pieces every layout converter uses: taking tensors by name, and PyTorch -> Flax layouts.

A converter (``fgjax.pretrained.layout_*``) reads a ``{name: array}`` dict in a
PyTorch layout (torchvision or timm names) and returns :class:`Converted`: the
fgjax variables it fills, keyed by path (``('params', 'stem', 'conv',
'kernel')``, ``('batch_stats', 'stem', 'bn', 'mean')``), and the file's tensors
it deliberately ignored (a classifier head, ``num_batches_tracked``, index
buffers). It takes tensors through :class:`Tensors`, which makes a missing
tensor and an unexpected one an error naming it, so that nothing is silently
left out on either side.
"""

from __future__ import annotations

import re
from typing import Callable
from typing import NamedTuple
from typing import Sequence

import numpy as np

from fgjax.errors import PretrainedError

Path = tuple[str, ...]


class Converted(NamedTuple):
  """What a converter made of a file.

  Attributes:
    variables: ``{path: array}``, the first element of a path the collection
      (``'params'`` or ``'batch_stats'``).
    ignored: the file's tensors left out on purpose (sorted).
    sources: ``{path: the file's tensor name}`` where known (for messages).
  """
  variables: dict[Path, np.ndarray]
  ignored: list[str]
  sources: dict[Path, str] | None = None


class Tensors:
  """A file's tensors, taken one by one; what is left at the end must be ignorable.

  Args:
    tensors: ``{name: array}`` as read from the file.
    source: the file's path (for messages).
    prefixes: each is stripped from every name when all names start with it
      (``'module.'`` of a DataParallel state_dict, ``'model.'``).
  """

  def __init__(self, tensors: dict[str, np.ndarray], source: str, prefixes: Sequence[str] = ("module.", "model.")):
    for prefix in prefixes:
      if tensors and all(k.startswith(prefix) for k in tensors):
        tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    self._left = dict(tensors)
    self.source = source

  def has(self, name: str) -> bool:
    return name in self._left

  def take(self, name: str) -> np.ndarray:
    """The tensor ``name`` as float32 NumPy; a missing tensor is a :class:`PretrainedError`."""
    if name not in self._left:
      raise PretrainedError(f"{self.source}: tensor {name!r} is missing (the encoder needs it)")
    return np.asarray(self._left.pop(name), dtype=np.float32)

  def finish(self, ignorable: Sequence[str]) -> list[str]:
    """The names left, all matching one of the ``ignorable`` regular expressions (sorted).

    Raises:
      PretrainedError: naming the first tensor left that is not ignorable.
    """
    patterns = [re.compile(p) for p in ignorable]
    unexpected = sorted(k for k in self._left if not any(p.fullmatch(k) for p in patterns))
    if unexpected:
      more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
      raise PretrainedError(f"{self.source}: unexpected tensor {unexpected[0]!r}{more}: the file is not of this "
                            "encoder's architecture (model.encoder) or layout")
    return sorted(self._left)


class Builder:
  """The variables a converter makes, each with the file tensor it came from (for messages)."""

  def __init__(self, tensors: Tensors):
    self.tensors = tensors
    self.variables: dict[Path, np.ndarray] = {}
    self.sources: dict[Path, str] = {}

  def put(self, path: Path, name: str, layout: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
    """``variables[path] = layout(tensors.take(name))`` (or the tensor as it is)."""
    array = self.tensors.take(name)
    self.set(path, layout(array) if layout else array, name)

  def set(self, path: Path, array: np.ndarray, source: str) -> None:
    """A variable computed from one or more tensors (``source`` names them)."""
    self.variables[path] = array
    self.sources[path] = source

  def finish(self, ignorable: Sequence[str]) -> Converted:
    """:class:`Converted`, after :meth:`Tensors.finish` checked what is left."""
    return Converted(self.variables, self.tensors.finish(ignorable), self.sources)


def conv_kernel(w: np.ndarray) -> np.ndarray:
  """PyTorch ``[out, in, kh, kw]`` -> Flax ``[kh, kw, in, out]``."""
  return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def dense_kernel(w: np.ndarray) -> np.ndarray:
  """PyTorch ``nn.Linear`` ``[out, in]`` -> Flax ``nn.Dense`` ``[in, out]``."""
  return np.ascontiguousarray(w.T)
