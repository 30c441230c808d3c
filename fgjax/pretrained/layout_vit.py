"""timm Vision Transformer weights -> ``fgjax.models.vit.ViT`` variables.

timm's ``vit_tiny_patch16_224`` / ``vit_small_patch16_224`` / ``vit_base_patch16_224``
(and DeiT's) state_dict, class-token models (``pool='cls'``):

| timm name | fgjax path |
|---|---|
| ``patch_embed.proj.{weight, bias}`` ``[d, 3, p, p]`` | ``params/patch_embed/{kernel, bias}`` ``[p, p, 3, d]`` |
| ``cls_token`` ``[1, 1, d]`` | ``params/cls_token`` |
| ``pos_embed`` ``[1, 1 + g*g, d]`` | ``params/pos_embed``, resized to the model's grid (below) |
| ``blocks.{i}.norm1`` / ``.norm2`` | ``block{i+1}/ln1`` / ``ln2`` (``weight`` -> ``scale``) |
| ``blocks.{i}.attn.qkv.{weight, bias}`` ``[3d, d]`` | ``block{i+1}/attn/{query, key, value}`` ``[d, heads, d/heads]`` |
| ``blocks.{i}.attn.proj`` ``[d, d]`` | ``block{i+1}/attn/out`` ``[heads, d/heads, d]`` |
| ``blocks.{i}.mlp.fc1`` / ``.fc2`` | ``block{i+1}/mlp/fc1`` / ``fc2`` |
| ``norm`` | ``final_norm`` |
| ``head.*`` (the classifier) | ignored |

**Position embeddings at another image size.** A file trained at 224 px has a
14 x 14 grid of patch positions; a model at another size has another grid. As
timm does when it loads such a file (``resample_abs_pos_embed``: bicubic,
antialiased, the class token's embedding kept), the grid is resized with
:func:`resize_grid`, which matches PyTorch's ``interpolate(mode='bicubic',
antialias=True)`` (a Keys cubic with a = -0.5, widened when shrinking).
"""

from __future__ import annotations

import numpy as np

from fgjax.errors import PretrainedError
from fgjax.models import vit
from fgjax.pretrained import convert


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
  """Keys' cubic convolution kernel (a = -0.5: PIL and PyTorch's antialiased bicubic)."""
  x = np.abs(x)
  return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                  np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _resize_weights(n_in: int, n_out: int) -> np.ndarray:
  """``[n_out, n_in]`` separable weights of antialiased bicubic resizing (PIL's / PyTorch's scheme).

  Output pixel ``i`` has its centre at ``(i + 0.5) * n_in / n_out`` in input
  coordinates; when shrinking the kernel is stretched by the scale (the
  antialiasing); taps outside the input are dropped and the rest renormalised.
  """
  scale = n_in / n_out
  support = max(scale, 1.0)
  weights = np.zeros((n_out, n_in), np.float64)
  for i in range(n_out):
    centre = (i + 0.5) * scale
    lo, hi = max(int(centre - 2 * support + 0.5), 0), min(int(centre + 2 * support + 0.5), n_in)
    taps = np.arange(lo, hi)
    w = _cubic((taps - centre + 0.5) / support)
    weights[i, lo:hi] = w / w.sum()
  return weights


def resize_grid(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """``[h, w, d] -> [size[0], size[1], d]`` by antialiased bicubic resizing (float64 inside)."""
  rows = _resize_weights(grid.shape[0], size[0])
  cols = _resize_weights(grid.shape[1], size[1])
  out = np.einsum("ih,hwd->iwd", rows, grid.astype(np.float64))
  return np.einsum("jw,iwd->ijd", cols, out).astype(np.float32)


def _position_embeddings(pos: np.ndarray, target: tuple[int, ...], model: vit.ViT, source: str) -> np.ndarray:
  """timm's ``pos_embed [1, 1 + g*g, d]`` for the model's ``target`` shape ``[1, 1 + h*w, d]``."""
  if pos.shape == tuple(target):
    return pos
  prefix = 1 if model.pool == "cls" else 0
  grid_in, grid_out = pos.shape[1] - prefix, target[1] - prefix
  side_in, side_out = int(round(grid_in ** 0.5)), int(round(grid_out ** 0.5))
  if pos.shape[2] != target[2] or side_in ** 2 != grid_in or side_out ** 2 != grid_out:
    raise PretrainedError(f"{source}: tensor 'pos_embed' has shape {pos.shape}, the encoder needs {tuple(target)} "
                          "(not a square grid of the same width)")
  grid = resize_grid(pos[0, prefix:].reshape(side_in, side_in, -1), (side_out, side_out))
  return np.concatenate([pos[:, :prefix], grid.reshape(1, grid_out, -1)], axis=1)


def vit_from_timm(tensors: convert.Tensors, model: vit.ViT, pos_embed_shape: tuple[int, ...]) -> convert.Converted:
  """The variables of ``model`` from a timm ViT state_dict (see the module docstring).

  Args:
    tensors: the file's tensors.
    model: the encoder; only class-token models (``pool='cls'``) import timm's layout.
    pos_embed_shape: the model's ``pos_embed`` shape at the run's image size.
  """
  if model.pool != "cls":
    raise PretrainedError(f"{tensors.source}: timm ViT weights need the class-token pooling (pool='cls'), "
                          f"the encoder has pool={model.pool!r}")
  out = convert.Builder(tensors)
  d, heads = model.hidden_dim, model.num_heads
  out.put(("params", "patch_embed", "kernel"), "patch_embed.proj.weight", convert.conv_kernel)
  out.put(("params", "patch_embed", "bias"), "patch_embed.proj.bias")
  out.put(("params", "cls_token"), "cls_token")
  out.put(("params", "pos_embed"), "pos_embed",
          lambda pos: _position_embeddings(pos, pos_embed_shape, model, tensors.source))

  def norm(src: str, dst: convert.Path) -> None:
    out.put(("params", *dst, "scale"), f"{src}.weight")
    out.put(("params", *dst, "bias"), f"{src}.bias")

  def dense(src: str, dst: convert.Path) -> None:
    out.put(("params", *dst, "kernel"), f"{src}.weight", convert.dense_kernel)
    out.put(("params", *dst, "bias"), f"{src}.bias")

  for i in range(model.depth):
    src, dst = f"blocks.{i}", (f"block{i + 1}",)
    norm(f"{src}.norm1", (*dst, "ln1"))
    # qkv [3d, d] (rows: q, k, v, each heads x head_dim) -> three [d, heads, head_dim] kernels.
    qkv_w, qkv_b = tensors.take(f"{src}.attn.qkv.weight"), tensors.take(f"{src}.attn.qkv.bias")
    if qkv_w.shape != (3 * d, d):
      raise PretrainedError(f"{tensors.source}: tensor '{src}.attn.qkv.weight' has shape {qkv_w.shape}, the "
                            f"encoder needs {(3 * d, d)}")
    qkv_w, qkv_b = qkv_w.reshape(3, heads, d // heads, d), qkv_b.reshape(3, heads, d // heads)
    for k, name in enumerate(("query", "key", "value")):
      out.set(("params", *dst, "attn", name, "kernel"), np.ascontiguousarray(qkv_w[k].transpose(2, 0, 1)),
              f"{src}.attn.qkv.weight")
      out.set(("params", *dst, "attn", name, "bias"), qkv_b[k], f"{src}.attn.qkv.bias")
    # proj [d_out, d_in], d_in = heads x head_dim -> [heads, head_dim, d_out].
    out.put(("params", *dst, "attn", "out", "kernel"), f"{src}.attn.proj.weight",
            lambda w: np.ascontiguousarray(w.T.reshape(heads, d // heads, -1)))
    out.put(("params", *dst, "attn", "out", "bias"), f"{src}.attn.proj.bias")
    norm(f"{src}.norm2", (*dst, "ln2"))
    dense(f"{src}.mlp.fc1", (*dst, "mlp", "fc1"))
    dense(f"{src}.mlp.fc2", (*dst, "mlp", "fc2"))
  norm("norm", ("final_norm",))
  return out.finish(ignorable=[r"head\..*"])
