"""Decoder h of method P: reconstructs an image from the pooled feature vector.

The paper does not give the decoder's architecture; this one is a small
DCGAN-style generator (our choice, every piece a field):

    v [B, n] -> Dense -> reshape [B, s0, s0, base_channels]   (s0 = S / 2**u)
      -> GroupNorm -> ReLU
      -> u x [upsample x2 -> GroupNorm -> ReLU]   (channels halve, never below 16)
      -> Conv 3x3 -> [B, S, S, 3]   (linear output)

The output is linear because the targets are images in the *normalised* space
(mean/std-standardised), which is unbounded; L_R = mean((x - x_hat)^2) compares
in that space. GroupNorm (not BatchNorm) keeps the decoder free of mutable state:
the clean and the perturbed vector go through the same function, and the decoder
can be applied to any batch without a ``batch_stats`` collection.

Defaults: ``S = 32, u = 3`` (4x4 seed) on CPU; the paper preset ``S = 224,
u = 5`` (7x7 seed, like the ResNet's last map).
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fgjax.ops import conv as conv_ops


_UPSAMPLES = ("resize", "transpose")


class Decoder(nn.Module):
    """Feature vector -> image.

    Attributes:
      image_size: S, output side; must be divisible by ``2**num_upsamples``.
      base_channels: channels of the seed map; each upsampling halves them.
      num_upsamples: u, number of x2 upsamplings.
      min_channels: floor of the channel halving.
      upsample: ``'resize'`` (nearest-neighbour x2 then 3x3 conv; no checkerboard
        artefacts, Odena et al. 2016) or ``'transpose'`` (4x4 stride-2
        ConvTranspose; fewer FLOPs).
      use_group_norm: GroupNorm after each conv but the last (groups =
        gcd(channels, 8)); False gives a plain conv/ReLU stack.
      dtype: compute dtype; parameters float32, output float32.
      conv_impl: the 3x3 convs' implementation, as the ResNet's
        (``fgjax.ops.conv``: ``'xla'``, ``'matmul_dw'`` or ``'auto'``).
    """

    image_size: int
    base_channels: int = 128
    num_upsamples: int = 3
    min_channels: int = 16
    upsample: str = "resize"
    use_group_norm: bool = True
    dtype: Any = jnp.float32
    conv_impl: str = "xla"

    def _check(self):
        if self.num_upsamples < 0:
            raise ValueError(f"Decoder.num_upsamples must be >= 0, got {self.num_upsamples}")
        factor = 2**self.num_upsamples
        if self.image_size <= 0 or self.image_size % factor != 0:
            raise ValueError(
                f"Decoder.image_size={self.image_size} must be a positive multiple of "
                f"2**num_upsamples={factor} (num_upsamples={self.num_upsamples})")
        if self.upsample not in _UPSAMPLES:
            raise ValueError(f"Decoder.upsample must be one of {_UPSAMPLES}, "
                             f"got {self.upsample!r}")

    def _norm_relu(self, x, name):
        if self.use_group_norm:
            channels = x.shape[-1]
            x = nn.GroupNorm(num_groups=math.gcd(channels, 8), epsilon=1e-5,
                             dtype=self.dtype, param_dtype=jnp.float32, name=name)(x)
        return nn.relu(x)

    @nn.compact
    def __call__(self, v):
        """Decodes feature vectors.

        Args:
          v: ``[B, n]`` feature vectors (any float dtype).

        Returns:
          ``[B, image_size, image_size, 3]`` float32 images in normalised space.
        """
        self._check()
        conv = conv_ops.for_impl(self.conv_impl)
        seed = self.image_size // 2**self.num_upsamples
        x = jnp.asarray(v, self.dtype)
        x = nn.Dense(seed * seed * self.base_channels, dtype=self.dtype,
                     param_dtype=jnp.float32, name="seed_dense")(x)
        x = x.reshape(x.shape[0], seed, seed, self.base_channels)
        x = self._norm_relu(x, "seed_norm")
        channels = self.base_channels
        for i in range(self.num_upsamples):
            channels = max(channels // 2, self.min_channels)
            if self.upsample == "resize":
                # Nearest-neighbour x2 as repeats: exact, and cheaper than a resize.
                x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
                x = nn.Conv(channels, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                            param_dtype=jnp.float32, conv_general_dilated=conv,
                            name=f"up{i + 1}_conv")(x)
            else:
                # 'SAME' with stride 2 gives exactly 2x the input side.
                x = nn.ConvTranspose(channels, (4, 4), strides=(2, 2), padding="SAME",
                                     dtype=self.dtype, param_dtype=jnp.float32,
                                     name=f"up{i + 1}_conv")(x)
            x = self._norm_relu(x, f"up{i + 1}_norm")
        x = nn.Conv(3, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                    param_dtype=jnp.float32, conv_general_dilated=conv, name="out_conv")(x)
        return x.astype(jnp.float32)
