"""timm Swin Transformer weights -> `fgjax.models.swin.SwinTransformer` variables.

timm 1.x state_dict names (``timm.models.swin_transformer.SwinTransformer``,
PatchMerging at the *start* of stages 2..n as ``layers.<i>.downsample``) map one
to one onto the Flax module paths, ``.`` + index becoming ``_`` + index::

    patch_embed.proj.weight  [C, 3, p, p]       -> params/patch_embed/proj/kernel  [p, p, 3, C]
    patch_embed.norm.weight / .bias             -> params/patch_embed/norm/scale / bias
    layers.1.downsample.norm.weight             -> params/layers_1/downsample/norm/scale
    layers.1.downsample.reduction.weight [2C, 4C] -> params/layers_1/downsample/reduction/kernel [4C, 2C]
    layers.0.blocks.1.attn.qkv.weight    [3C, C]  -> params/layers_0/blocks_1/attn/qkv/kernel [C, 3C]
    layers.0.blocks.1.attn.relative_position_bias_table -> .../attn/relative_position_bias_table (as is)
    layers.0.blocks.1.mlp.fc1.weight / .bias    -> params/layers_0/blocks_1/mlp/fc1/kernel / bias
    norm.weight / .bias                         -> params/norm/scale / bias

Ignored on purpose: the classifier (``head.*``: ``head.fc.*`` in timm 1.x,
``head.*`` in older files) and the non-learned buffers older files carry
(``*.relative_position_index``, ``*.attn_mask``; fgjax computes both from the
window). Files in the original Microsoft layout (PatchMerging at the end of
stages, ``layers.0.downsample``) are refused as an unexpected tensor; timm's
``checkpoint_filter_fn`` renames them. Relative position tables of another
window size are refused too (no resizing).
"""

from __future__ import annotations

import math

import numpy as np

from fgjax.errors import PretrainedError
from fgjax.models import swin
from fgjax.pretrained import convert

_IGNORABLE = (r"head\..*", r".*\.relative_position_index", r".*\.attn_mask")


def _take(tensors: convert.Tensors, name: str, shape: tuple[int, ...]) -> np.ndarray:
  """``tensors.take(name)``, checked to have the PyTorch-layout ``shape``."""
  array = tensors.take(name)
  if array.shape != tuple(shape):
    raise PretrainedError(f"{tensors.source}: tensor {name!r} has shape {tuple(array.shape)}, the encoder "
                          f"needs {tuple(shape)}: the file is not of this encoder's size (model.encoder)")
  return array


def _window_of_rows(rows: int) -> str:
  """The square window a table of ``rows`` rows was made for (``'7x7'``), or ``'?'``."""
  side = math.isqrt(rows)
  if side * side == rows and side % 2 == 1:
    w = (side + 1) // 2
    return f"{w}x{w}"
  return "?"


def _take_table(tensors: convert.Tensors, name: str, window: tuple[int, int], heads: int) -> np.ndarray:
  """A relative position bias table ``[(2wh-1)(2ww-1), heads]``; another window is a PretrainedError."""
  array = tensors.take(name)
  shape = ((2 * window[0] - 1) * (2 * window[1] - 1), heads)
  if array.shape != shape:
    file_window = _window_of_rows(array.shape[0]) if array.ndim == 2 else "?"
    raise PretrainedError(
        f"{tensors.source}: tensor {name!r} has shape {tuple(array.shape)} (window {file_window}), the encoder "
        f"needs {shape} (window {window[0]}x{window[1]}, {heads} heads): the file was trained with another "
        "window size or image size, and resizing relative position tables is not supported")
  return array


def swin_from_timm(tensors: convert.Tensors, model: swin.SwinTransformer,
                   image_size: int | tuple[int, int] | None = None) -> convert.Converted:
  """The variables of ``model`` from a timm Swin Transformer state_dict.

  Args:
    tensors: the file's tensors (timm names; a ``module.`` / ``model.`` prefix
      already stripped by `convert.Tensors`).
    model: the encoder to fill; its sizes say which tensors and shapes are needed.
    image_size: the ``H`` (or ``(H, W)``) the model will be applied to. Where a
      stage's token map is no larger than the window, the model clamps the
      window and so has a smaller bias table (see `fgjax.models.swin`); with
      ``image_size`` the tables are checked against those clamped windows,
      without it against ``model.window_size`` (right whenever no stage is
      clamped, e.g. Swin-T at 224 px).

  Returns:
    ``Converted(variables, ignored, sources)``: ``variables`` keyed
    ``('params', <module path...>, <name>)``, every parameter of the model;
    ``ignored`` the head and buffer names left in the file (sorted);
    ``sources`` each path's tensor name.

  Raises:
    PretrainedError: naming the file and tensor, for a tensor missing, left
      over (not head nor buffer), or of another shape (a bias table of another
      window: with both shapes and windows).
    ValueError: an ``image_size`` the model cannot take.
  """
  n_stages = len(model.depths)
  if image_size is None:
    windows = [(model.window_size, model.window_size)] * n_stages
  else:
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    windows = [layout.window for layout in model.stage_layout(h, w)]
  variables: dict[convert.Path, np.ndarray] = {}
  sources: dict[convert.Path, str] = {}

  def put(path: str, name: str, array: np.ndarray) -> None:
    key = ("params",) + tuple(path.split("/"))
    variables[key] = array
    sources[key] = name

  def linear(name: str, path: str, out_dim: int, in_dim: int, bias: bool = True) -> None:
    put(f"{path}/kernel", f"{name}.weight",
        convert.dense_kernel(_take(tensors, f"{name}.weight", (out_dim, in_dim))))
    if bias:
      put(f"{path}/bias", f"{name}.bias", _take(tensors, f"{name}.bias", (out_dim,)))

  def layer_norm(name: str, path: str, dim: int) -> None:
    put(f"{path}/scale", f"{name}.weight", _take(tensors, f"{name}.weight", (dim,)))
    put(f"{path}/bias", f"{name}.bias", _take(tensors, f"{name}.bias", (dim,)))

  c, p = model.embed_dim, model.patch_size
  put("patch_embed/proj/kernel", "patch_embed.proj.weight",
      convert.conv_kernel(_take(tensors, "patch_embed.proj.weight", (c, 3, p, p))))
  put("patch_embed/proj/bias", "patch_embed.proj.bias", _take(tensors, "patch_embed.proj.bias", (c,)))
  layer_norm("patch_embed.norm", "patch_embed/norm", c)
  for i, (depth, heads) in enumerate(zip(model.depths, model.num_heads)):
    dim = c * 2 ** i
    if i > 0:
      # PatchMerging: LayerNorm over the 4 concatenated neighbours (4 * dim / 2), then 2 * dim -> dim.
      layer_norm(f"layers.{i}.downsample.norm", f"layers_{i}/downsample/norm", 2 * dim)
      linear(f"layers.{i}.downsample.reduction", f"layers_{i}/downsample/reduction", dim, 2 * dim, bias=False)
    hidden = int(dim * model.mlp_ratio)
    for j in range(depth):
      name, path = f"layers.{i}.blocks.{j}", f"layers_{i}/blocks_{j}"
      layer_norm(f"{name}.norm1", f"{path}/norm1", dim)
      table = f"{name}.attn.relative_position_bias_table"
      put(f"{path}/attn/relative_position_bias_table", table, _take_table(tensors, table, windows[i], heads))
      linear(f"{name}.attn.qkv", f"{path}/attn/qkv", 3 * dim, dim)
      linear(f"{name}.attn.proj", f"{path}/attn/proj", dim, dim)
      layer_norm(f"{name}.norm2", f"{path}/norm2", dim)
      linear(f"{name}.mlp.fc1", f"{path}/mlp/fc1", hidden, dim)
      linear(f"{name}.mlp.fc2", f"{path}/mlp/fc2", dim, hidden)
  layer_norm("norm", "norm", model.num_features)
  ignored = tensors.finish(ignorable=_IGNORABLE)
  return convert.Converted(variables, ignored, sources)
