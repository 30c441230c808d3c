"""ResNet encoders (torchvision layout) in Flax Linen.

The encoder f of every method: an image batch ``x: [B, H, W, 3]`` goes in, the
globally average-pooled feature vector ``v: [B, n]`` comes out (no classifier).
The layout follows torchvision's ``resnet18/34/50`` exactly (ResNet-50 is "v1.5":
the stride sits on the 3x3 conv of the bottleneck), so that at ``width=64`` the
parameter counts match torchvision's without ``fc`` (11,176,512 and 23,508,032)
and the papers' hyper-parameters transfer.

Example::

    model = build_encoder('resnet18', width=16, cifar_stem=True)
    variables = model.init(rng, jnp.zeros((2, 32, 32, 3)), train=False)
    v, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
    # v: [B, 128] float32 (width * 8)
"""

from collections.abc import Sequence
from typing import Any
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from fgjax.ops import conv as conv_ops


# torchvision's init: kaiming_normal_(mode='fan_out', nonlinearity='relu'), i.e. an
# untruncated normal with variance 2 / fan_out.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

_BLOCKS = ("basic", "bottleneck")
_EXPANSION = {"basic": 1, "bottleneck": 4}

# name -> (stage_sizes, block)
_ARCHS = {
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
}


class _ConvBN(nn.Module):
    """Conv (no bias, as it is followed by BN) + BatchNorm, torchvision padding.

    ``x: [B, H, W, C] -> [B, H', W', features]`` in the compute dtype.
    """

    features: int
    kernel_size: int
    strides: int = 1
    zero_init_bn: bool = False
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_axis_name: Optional[str] = None
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool):
        # Explicit symmetric padding k//2 as in PyTorch; Flax's 'SAME' pads stride-2
        # convs asymmetrically and would shift every feature map by half a pixel.
        pad = self.kernel_size // 2
        x = nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            strides=(self.strides, self.strides),
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
            kernel_init=conv_kernel_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            conv_general_dilated=conv_ops.for_impl(self.conv_impl),
            name="conv",
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=1e-5,  # torchvision's eps
            axis_name=self.bn_axis_name,
            scale_init=(nn.initializers.zeros if self.zero_init_bn
                        else nn.initializers.ones),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="bn",
        )(x)
        return x


class _Block(nn.Module):
    """One residual block (basic: 3x3-3x3; bottleneck: 1x1-3x3-1x1, expansion 4).

    ``x: [B, H, W, C] -> [B, H/strides, W/strides, features * expansion]``.
    """

    features: int
    strides: int
    block: str
    zero_init_last_bn: bool
    dtype: Any
    bn_momentum: float
    bn_axis_name: Optional[str]
    conv_impl: str

    @nn.compact
    def __call__(self, x, train: bool):
        conv_bn = lambda f, k, s=1, zero=False, name=None: _ConvBN(  # noqa: E731
            f, k, s, zero_init_bn=zero, dtype=self.dtype, bn_momentum=self.bn_momentum,
            bn_axis_name=self.bn_axis_name, conv_impl=self.conv_impl, name=name)
        out_features = self.features * _EXPANSION[self.block]
        residual = x
        if self.block == "basic":
            y = nn.relu(conv_bn(self.features, 3, self.strides, name="conv_bn1")(x, train))
            y = conv_bn(self.features, 3, 1, zero=self.zero_init_last_bn,
                        name="conv_bn2")(y, train)
        else:
            y = nn.relu(conv_bn(self.features, 1, 1, name="conv_bn1")(x, train))
            # ResNet v1.5: the stride is on the 3x3 conv (torchvision, MoCo, SimSiam).
            y = nn.relu(conv_bn(self.features, 3, self.strides, name="conv_bn2")(y, train))
            y = conv_bn(out_features, 1, 1, zero=self.zero_init_last_bn,
                        name="conv_bn3")(y, train)
        if self.strides != 1 or x.shape[-1] != out_features:
            residual = conv_bn(out_features, 1, self.strides, name="downsample")(x, train)
        return nn.relu(y + residual)


class ResNet(nn.Module):
    """ResNet trunk returning the global-average-pooled feature vector.

    Attributes:
      stage_sizes: number of blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
      block: ``'basic'`` or ``'bottleneck'``.
      width: channels of the stem and of the first stage's 3x3 convs (64 in the
        papers; 16 = quarter width for CPU runs). Stage i has ``width * 2**i``.
      cifar_stem: if True, the stem is a 3x3 stride-1 conv with no max-pool (for
        32 px images); else the ImageNet stem, 7x7 stride-2 conv + 3x3 stride-2
        max-pool (a 32 px image then ends as a 1x1 map).
      zero_init_last_bn: initialise the scale of each block's last BN to zero, so
        each block starts as the identity (Goyal et al. 2017). Default False as
        in torchvision and official MoCo v2; the official SimSiam code sets it
        (``zero_init_residual=True``).
      dtype: compute dtype (e.g. ``jnp.bfloat16``). Parameters and BN statistics
        stay float32; the outputs are cast to float32.
      bn_momentum: BN running-average decay (0.9 = PyTorch's momentum 0.1).
      bn_axis_name: named axis over which BN statistics are averaged (SyncBN).
        None (default) means per-device BN, which MoCo's shuffle-BN relies on.
      conv_impl: ``'xla'`` (XLA's convolution), ``'matmul_dw'`` (XLA's forward and
        input gradient, the weight gradient as per-tap matmuls, ``fgjax.ops.conv``:
        up to 4x faster per layer on XLA:CPU) or ``'auto'`` (on a CPU, ``matmul_dw``
        in the layers where it pays, ``fgjax.ops.conv.matmul_dw_pays``; ``xla`` on
        GPU/TPU). The same values to float32 rounding.
    """

    stage_sizes: Sequence[int]
    block: str
    width: int = 64
    cifar_stem: bool = False
    zero_init_last_bn: bool = False
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_axis_name: Optional[str] = None
    conv_impl: str = "xla"

    @property
    def num_features(self) -> int:
        """n, the length of the pooled feature vector."""
        return self.width * 2 ** (len(self.stage_sizes) - 1) * _EXPANSION[self.block]

    @nn.compact
    def __call__(self, x, train: bool, return_feature_map: bool = False):
        """Encodes images.

        Args:
          x: ``[B, H, W, 3]`` float images (normalised).
          train: BN uses batch statistics and updates ``batch_stats`` (apply with
            ``mutable=['batch_stats']``) if True; running averages if False.
          return_feature_map: also return the last conv map (for spatial Grad-CAM).

        Returns:
          ``v: [B, n]`` float32, ``n = width * 8`` (basic) or ``width * 32``
          (bottleneck); with ``return_feature_map``, ``(v, feature_map)`` where
          ``feature_map: [B, h, w, n]`` float32 and ``v`` is its spatial mean.
        """
        if self.block not in _BLOCKS:
            raise ValueError(f"ResNet.block must be one of {_BLOCKS}, got {self.block!r}")
        x = jnp.asarray(x, self.dtype)
        stem = dict(dtype=self.dtype, bn_momentum=self.bn_momentum,
                    bn_axis_name=self.bn_axis_name, conv_impl=self.conv_impl, name="stem")
        if self.cifar_stem:
            x = nn.relu(_ConvBN(self.width, 3, 1, **stem)(x, train))
        else:
            x = nn.relu(_ConvBN(self.width, 7, 2, **stem)(x, train))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                x = _Block(
                    features=self.width * 2**i,
                    strides=2 if (i > 0 and j == 0) else 1,
                    block=self.block,
                    zero_init_last_bn=self.zero_init_last_bn,
                    dtype=self.dtype,
                    bn_momentum=self.bn_momentum,
                    bn_axis_name=self.bn_axis_name,
                    conv_impl=self.conv_impl,
                    name=f"stage{i + 1}_block{j + 1}",
                )(x, train)
        # Pool in float32: a bf16 mean over many positions loses precision, and the
        # losses downstream (InfoNCE, Grad-CAM scores, the memory bank) want float32.
        feature_map = x.astype(jnp.float32)
        v = jnp.mean(feature_map, axis=(1, 2))
        if return_feature_map:
            return v, feature_map
        return v


def resnet18(**kw) -> ResNet:
    """ResNet-18 (basic blocks, 2-2-2-2); ``n = width * 8`` (512 at width 64)."""
    return ResNet(stage_sizes=_ARCHS["resnet18"][0], block=_ARCHS["resnet18"][1], **kw)


def resnet34(**kw) -> ResNet:
    """ResNet-34 (basic blocks, 3-4-6-3); ``n = width * 8`` (512 at width 64)."""
    return ResNet(stage_sizes=_ARCHS["resnet34"][0], block=_ARCHS["resnet34"][1], **kw)


def resnet50(**kw) -> ResNet:
    """ResNet-50 v1.5 (bottleneck, 3-4-6-3); ``n = width * 32`` (2048 at width 64)."""
    return ResNet(stage_sizes=_ARCHS["resnet50"][0], block=_ARCHS["resnet50"][1], **kw)


def _check_name(name: str) -> None:
    if name not in _ARCHS:
        raise ValueError(
            f"unknown encoder {name!r}; valid names are: {', '.join(sorted(_ARCHS))}")


def build_encoder(name: str, **kw) -> ResNet:
    """The encoder named by a config string: 'resnet18' | 'resnet34' | 'resnet50'.

    Keyword arguments are ResNet fields (width, cifar_stem, dtype, ...).
    """
    _check_name(name)
    stage_sizes, block = _ARCHS[name]
    return ResNet(stage_sizes=stage_sizes, block=block, **kw)


def feature_dim(name: str, width: int = 64) -> int:
    """n, the pooled feature length of encoder ``name`` at ``width``, without building it."""
    _check_name(name)
    stage_sizes, block = _ARCHS[name]
    return width * 2 ** (len(stage_sizes) - 1) * _EXPANSION[block]
