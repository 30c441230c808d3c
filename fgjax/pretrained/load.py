"""An encoder initialised from pretrained weights: ``model.init_from``.

``init_from`` is one of

* a ``.safetensors`` file (timm, Hugging Face, ``safetensors.numpy``): read with
  no torch and no pickle -- the first-class format;
* a torchvision ``.pth`` / ``.pt`` file: read with ``torch.load(...,
  weights_only=True)`` when torch is installed (``pip install
  'fgjax[torch-weights]'``); without torch, one line says how to convert it once
  (``python -m fgjax.tools.convert_weights``). fgjax never unpickles;
* an fgjax run directory: its latest checkpoint's encoder (e.g. SSL
  pre-training, then HCL or a probe);
* the name of weights shipped with fgjax, ``source`` (the source encoder,
  ``fgjax.pretrained.shipped``), checked against its manifest's SHA-256.

:func:`encoder_variables` converts the file to the encoder's variables (the
layouts: ``layout_resnet``, ``layout_vit``, ``layout_swin``) and checks them
against the encoder's own: every variable filled, none extra, every shape
equal, or one :class:`~fgjax.errors.PretrainedError` naming the tensor and both
shapes. :class:`LoadReport` says what was loaded and what was ignored; the
caller logs which of its own networks (heads, decoder) stay at their
initialisation.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any
from typing import Callable

from flax import traverse_util
import jax
import numpy as np

from fgjax.errors import PretrainedError
from fgjax.pretrained import convert
from fgjax.pretrained import shipped
from fgjax.pretrained.files import read_tensors

@dataclasses.dataclass
class LoadReport:
  """What :func:`encoder_variables` did.

  Attributes:
    source: the file or run directory.
    loaded: number of the encoder's variables filled (all of them).
    numbers: their total number of values.
    ignored: the file's tensors deliberately left out (classifier head, buffers).
    seconds: reading and converting time.
  """
  source: str
  loaded: int
  numbers: int
  ignored: list[str]
  seconds: float

  def summary(self) -> str:
    ignored = ", ".join(_group(self.ignored)) if self.ignored else "nothing"
    return (f"encoder initialised from {self.source}: {self.loaded} tensors ({self.numbers:,} values) loaded in "
            f"{self.seconds:.1f} s; ignored from the file: {ignored}")


def _group(names: list[str]) -> list[str]:
  """``['fc.bias', 'fc.weight', 'bn1.num_batches_tracked', ...]`` -> ``['fc.* (2)', '*.num_batches_tracked (53)']``."""
  counts: dict[str, int] = {}
  for name in names:
    parts = name.split(".")
    key = f"{parts[0]}.*" if parts[0] in ("fc", "head") else f"*.{parts[-1]}"  # classifier, else by leaf
    counts[key] = counts.get(key, 0) + 1
  return [f"{key} ({n})" if n > 1 else key for key, n in counts.items()]


def _convert(encoder: Any, tensors: convert.Tensors, template: dict[str, Any]) -> convert.Converted:
  """The layout converter of the encoder's architecture."""
  # pylint: disable=import-outside-toplevel
  from fgjax.models import resnet
  from fgjax.models import swin
  from fgjax.models import vit
  from fgjax.pretrained import layout_resnet
  from fgjax.pretrained import layout_swin
  from fgjax.pretrained import layout_vit
  if isinstance(encoder, resnet.ResNet):
    return layout_resnet.resnet_from_torch(tensors, encoder)
  if isinstance(encoder, vit.ViT):
    return layout_vit.vit_from_timm(tensors, encoder, tuple(template["params"]["pos_embed"].shape))
  if isinstance(encoder, swin.SwinTransformer):
    return layout_swin.swin_from_timm(tensors, encoder)
  raise PretrainedError(f"{tensors.source}: no pretrained-weights layout for a {type(encoder).__name__} encoder")


def check_against(converted: convert.Converted, template: dict[str, Any], source: str) -> dict[str, Any]:
  """The converted variables nested as ``template`` (``{'params', 'batch_stats'?}``), after checking them.

  Raises:
    PretrainedError: a variable of the encoder not filled, one filled that the
      encoder does not have, or a shape that differs (naming both shapes).
  """
  want = traverse_util.flatten_dict(template)
  got = converted.variables
  sources = converted.sources or {}
  for path, array in got.items():  # in the file's order: the first wrong tensor is the one named
    if path not in want:
      raise PretrainedError(f"{source}: the file fills {'/'.join(path)}, which the encoder does not have")
    if tuple(array.shape) != tuple(want[path].shape):
      name = f"tensor {sources[path]!r} ({'/'.join(path)})" if path in sources else "/".join(path)
      raise PretrainedError(f"{source}: {name} has shape {tuple(array.shape)}, the encoder needs "
                            f"{tuple(want[path].shape)}")
  for path, leaf in want.items():
    if path not in got:
      raise PretrainedError(f"{source}: nothing in the file for the encoder's {'/'.join(path)} "
                            f"{tuple(leaf.shape)}")
  return traverse_util.unflatten_dict({path: np.asarray(got[path], dtype=want[path].dtype) for path in want})


def encoder_variables(path: str, encoder: Any, template: dict[str, Any], *,
                      read_run: Callable[[str], convert.Converted] | None = None
                      ) -> tuple[dict[str, Any], LoadReport]:
  """The encoder's ``{'params', 'batch_stats'}`` from ``path`` (see the module docstring).

  Args:
    path: a weights file, a shipped name, or an fgjax run directory.
    encoder: the Flax encoder module.
    template: the encoder's own variables at init (arrays or ShapeDtypeStructs),
      ``{'params': ..., 'batch_stats': ...}`` (an empty ``batch_stats`` for
      encoders without BatchNorm).
    read_run: ``workdir -> convert.Converted``, a run directory's encoder
      (``fgjax.pretrained.init_from.run_directory_encoder``: restoring a run
      needs the methods' table, which this module does not import).

  Returns:
    ``(variables, report)``: host NumPy arrays shaped as ``template``.

  Raises:
    PretrainedError: see :func:`fgjax.pretrained.files.read_tensors` and :func:`check_against`.
  """
  start = time.perf_counter()
  if shipped.is_shipped(path):
    path = shipped.resolve(path)
  template = {k: v for k, v in template.items() if jax.tree_util.tree_leaves(v)}
  if os.path.isdir(path):
    if read_run is None:
      raise PretrainedError(f"model.init_from: {path} is a directory (an fgjax run): read it with "
                            "fgjax.pretrained.init_from")
    converted = read_run(path)
  else:
    tensors = convert.Tensors(read_tensors(path), path)
    converted = _convert(encoder, tensors, template)
    del tensors  # the file's arrays: only the converted ones stay alive
  variables = check_against(converted, template, path)
  leaves = jax.tree_util.tree_leaves(variables)
  report = LoadReport(source=path, loaded=len(leaves), numbers=int(sum(x.size for x in leaves)),
                      ignored=converted.ignored, seconds=time.perf_counter() - start)
  return variables, report
