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
"""

from __future__ import annotations

from fgjax.models import resnet
from fgjax.pretrained import convert


def resnet_from_torch(tensors: convert.Tensors, model: resnet.ResNet) -> convert.Converted:
  """The variables of ``model`` from a torchvision / timm ResNet state_dict (see the module docstring)."""
  out = convert.Builder(tensors)

  def conv_bn(conv: str, bn: str, path: convert.Path) -> None:
    out.put(("params", *path, "conv", "kernel"), f"{conv}.weight", convert.conv_kernel)
    out.put(("params", *path, "bn", "scale"), f"{bn}.weight")
    out.put(("params", *path, "bn", "bias"), f"{bn}.bias")
    out.put(("batch_stats", *path, "bn", "mean"), f"{bn}.running_mean")
    out.put(("batch_stats", *path, "bn", "var"), f"{bn}.running_var")

  conv_bn("conv1", "bn1", ("stem",))
  convs = 2 if model.block == "basic" else 3
  channels = model.width
  for s, num_blocks in enumerate(model.stage_sizes):
    out_channels = model.width * 2**s * (1 if model.block == "basic" else 4)
    for b in range(num_blocks):
      src, dst = f"layer{s + 1}.{b}", (f"stage{s + 1}_block{b + 1}",)
      for k in range(1, convs + 1):
        conv_bn(f"{src}.conv{k}", f"{src}.bn{k}", (*dst, f"conv_bn{k}"))
      # The same rule as resnet._Block: a projection where the stride or the width changes.
      if b == 0 and (s > 0 or channels != out_channels):
        conv_bn(f"{src}.downsample.0", f"{src}.downsample.1", (*dst, "downsample"))
      channels = out_channels
  return out.finish(ignorable=[r"fc\..*", r".*\.num_batches_tracked"])
