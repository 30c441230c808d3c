"""torchvision / timm ResNet weights -> ``fgjax.models.resnet.ResNet`` variables.

torchvision's ``resnet18/34/50`` and timm's ``resnet18/34/50`` (``.a1_in1k``,
``.tv_in1k``, ...) share one state_dict layout:

| PyTorch name | fgjax path |
|---|---|
| ``conv1.weight`` ``[o, i, 7, 7]`` | ``params/stem/conv/kernel`` ``[7, 7, i, o]`` |
| ``bn1.{weight, bias}`` | ``params/stem/bn/{scale, bias}`` |
| ``bn1.{running_mean, running_var}`` | ``batch_stats/stem/bn/{mean, var}`` |
| ``layer{s}.{b}.conv{k}`` / ``.bn{k}`` | ``stage{s}_block{b+1}/conv_bn{k}/{conv, bn}`` |
| ``layer{s}.{b}.downsample.0`` / ``.1`` | ``stage{s}_block{b+1}/downsample/{conv, bn}`` |
| ``fc.*`` (the 1000-way classifier) | ignored |
| ``*.num_batches_tracked`` | ignored |

BatchNorm running statistics are imported as they are (not re-estimated), so
the encoder in eval mode computes the torchvision model's pooled features.
:func:`resnet_to_torch` writes the same layout (an fgjax encoder exported for
PyTorch, or shipped: ``fgjax.pretrained.shipped``).
"""

from __future__ import annotations

import functools

import numpy as np

from fgjax.models import resnet
from fgjax.pretrained import convert


def _conv_bn_names(model: resnet.ResNet) -> list[tuple[str, str, convert.Path]]:
  """``(torch conv name, torch bn name, fgjax path)`` of every conv + BatchNorm pair of ``model``, in order."""
  pairs = [("conv1", "bn1", ("stem",))]
  convs = 2 if model.block == "basic" else 3
  channels = model.width
  for s, num_blocks in enumerate(model.stage_sizes):
    out_channels = model.width * 2**s * (1 if model.block == "basic" else 4)
    for b in range(num_blocks):
      src, dst = f"layer{s + 1}.{b}", (f"stage{s + 1}_block{b + 1}",)
      pairs += [(f"{src}.conv{k}", f"{src}.bn{k}", (*dst, f"conv_bn{k}")) for k in range(1, convs + 1)]
      # The same rule as resnet._Block: a projection where the stride or the width changes.
      if b == 0 and (s > 0 or channels != out_channels):
        pairs.append((f"{src}.downsample.0", f"{src}.downsample.1", (*dst, "downsample")))
      channels = out_channels
  return pairs


# (fgjax collection, leaf) of a BatchNorm's torch tensors
_BN_LEAVES = (("weight", "params", "scale"), ("bias", "params", "bias"),
              ("running_mean", "batch_stats", "mean"), ("running_var", "batch_stats", "var"))


def resnet_from_torch(tensors: convert.Tensors, model: resnet.ResNet) -> convert.Converted:
  """The variables of ``model`` from a torchvision / timm ResNet state_dict (see the module docstring)."""
  out = convert.Builder(tensors)
  for conv, bn, path in _conv_bn_names(model):
    out.put(("params", *path, "conv", "kernel"), f"{conv}.weight", convert.conv_kernel)
    for torch_leaf, collection, leaf in _BN_LEAVES:
      out.put((collection, *path, "bn", leaf), f"{bn}.{torch_leaf}")
  return out.finish(ignorable=[r"fc\..*", r".*\.num_batches_tracked"])


def resnet_to_torch(variables: dict, model: resnet.ResNet) -> dict[str, np.ndarray]:
  """The inverse of :func:`resnet_from_torch`: ``{'params', 'batch_stats'}`` of ``model`` -> a torchvision
  state_dict without ``fc`` (float32 NumPy, contiguous; what ``fgjax.tools.export_encoder`` writes)."""
  out = {}
  for conv, bn, path in _conv_bn_names(model):
    node = lambda collection: functools.reduce(lambda d, k: d[k], path, variables[collection])
    out[f"{conv}.weight"] = np.ascontiguousarray(np.transpose(np.asarray(node("params")["conv"]["kernel"]),
                                                              (3, 2, 0, 1)), dtype=np.float32)
    for torch_leaf, collection, leaf in _BN_LEAVES:
      out[f"{bn}.{torch_leaf}"] = np.ascontiguousarray(node(collection)["bn"][leaf], dtype=np.float32)
  return out
