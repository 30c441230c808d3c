"""Swin Transformer encoders (Liu et al. 2021) in Flax Linen, matching timm's ``SwinTransformer``.

The same contract as `fgjax.models.vit.ViT`: images ``x: [B, H, W, 3]`` go in,
the pooled feature vector ``v: [B, num_features]`` float32 comes out (no
classifier: heads live in `fgjax.models.heads`), ``num_features`` gives its
length, and ``return_feature_map=True`` also returns the final token map
``[B, H/r, W/r, num_features]`` with ``r = patch_size * 2**(num_stages - 1)``
(32 for Swin-T) for attention / Grad-CAM pictures; ``v`` is its spatial mean.

Architecture, exactly as timm 1.0.31's ``timm.models.swin_transformer.SwinTransformer``
(so that `fgjax.pretrained.layout_swin` can load its weights unchanged):

* ``patch_embed``: a ``p x p`` stride-``p`` conv to ``embed_dim`` channels, then
  a LayerNorm.
* ``layers_i``, one per stage: stages after the first start with a
  ``downsample`` (PatchMerging: the 2 x 2 neighbours concatenated in timm's
  order ``(h0, w0), (h1, w0), (h0, w1), (h1, w1)``, LayerNorm on the ``4C``
  channels, then a bias-free ``4C -> 2C`` Dense), as timm 1.x does (the
  original Microsoft code merges at the *end* of stages 1..3 instead: same
  network, other names). Then ``depths[i]`` pre-LN blocks
  ``x += W-MSA(LN(x)); x += MLP(LN(x))``: multi-head self-attention inside
  non-overlapping ``window x window`` token windows with a learned relative
  position bias table ``[(2w-1)^2, heads]``, every second block on windows
  shifted by ``window // 2`` (a cyclic roll, with timm's -100 attention mask
  between tokens that the roll brought together), and an exact (erf) GELU MLP
  of ``mlp_ratio * C`` hidden units. Width doubles and heads follow
  ``num_heads`` per stage.
* ``norm``: a final LayerNorm on every token; ``v`` is the token mean (timm's
  ``global_pool='avg'`` without the head: ``forward_head(..., pre_logits=True)``).

All LayerNorms use epsilon 1e-5 (``torch.nn.LayerNorm``'s default).

Small feature maps, as timm (which builds the model for one ``img_size``; here
the sizes are read from the input, so this model on ``H x W`` images is timm's
built with ``img_size=(H, W)``): per stage and per axis, when the stage's token
resolution ``r`` is at most the window ``w``, the window is clamped to ``r`` and
that axis is not shifted (timm's ``_calc_window_shift``; Swin-T's last stage at
224 px: 7 x 7 tokens, one window, no shift). A clamped window has a smaller
relative position table, so its parameter shape depends on the image size, as
ViT's position embeddings do: one model instance serves one image size. When
``r > w`` but ``w`` does not divide ``r``, the (rolled) tokens are zero-padded at
the bottom / right to a multiple of ``w`` and cropped after the attention, the
padding tokens unmasked except by the shift mask computed on the padded grid
(exactly what timm does). PatchMerging's own padding of odd resolutions is not
supported: ``H`` and ``W`` must be multiples of ``patch_size * 2**(num_stages-1)``
(a ValueError otherwise); see `SwinTransformer.stage_layout`.

Sizes: ``swin_t`` (Swin-T) on 224 px images has 27,519,354 trunk parameters,
timm's ``swin_tiny_patch4_window7_224`` (28,288,354) without its 1000-way head
(769,000). ``swin_cpu`` (not a published size: patch 2, 48-d, depths (2, 2, 2),
heads (3, 6, 12), window 4) on 32 px images has 16 x 16, 8 x 8 and 4 x 4 token
maps: 16 and 4 shifted windows in stages 1 and 2, one unshifted window in stage
3; 1,266,426 parameters, 192 features.

No BatchNorm: ``model.init`` returns only ``params``, and ``train`` only
switches dropout (``dropout`` after the attention projection and in the MLP, 0
by default, as timm's ``proj_drop_rate``). Stochastic depth (timm's
``drop_path_rate``, 0.1 in its training recipe) is not implemented: the
encoder is deterministic in ``train=False`` and with ``dropout=0``, which is
what pretrained-weight fidelity needs. With ``dropout > 0`` and ``train=True``
the apply needs a ``'dropout'`` rng.

Example::

    model = build_swin('swin_cpu')                    # 32 px CPU size
    variables = model.init(rng, jnp.zeros((2, 32, 32, 3)), train=False)
    v = model.apply(variables, x, train=False)        # [B, 192] float32
"""

from typing import Any
from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


# name -> (patch_size, embed_dim, depths, num_heads, window_size, mlp_ratio)
_ARCHS = {
    # CPU size for the embedded 32 px data (not a published size): 2 px patches
    # give a 16 x 16 token map, so that stages 1 and 2 have several windows of
    # 4 x 4 tokens and real shifts. Head width 16 in every stage.
    "swin_cpu": (2, 48, (2, 2, 2), (3, 6, 12), 4, 4.0),
    # Swin-T, timm's swin_tiny_patch4_window7_224.
    "swin_t": (4, 96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 4.0),
}

# timm's initialisation (init_weights_vit_timm): N(0, 0.02) dense kernels and
# relative position tables (timm truncates at +-2 absolute, i.e. never; Flax at
# 2 std), zero biases, LayerNorm scale 1 / bias 0. The patch conv keeps
# PyTorch's default kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
_dense_init = nn.initializers.truncated_normal(stddev=0.02)
_table_init = nn.initializers.truncated_normal(stddev=0.02)
_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

# timm's additive mask between tokens from different regions of a shifted
# window: -100, not -inf (exp(-100) is 0 in float32 but not exactly).
_MASK_VALUE = -100.0


def _layer_norm(dtype, name):
    # Two-pass variance as torch.nn.LayerNorm (Flax's fast E[x^2] - E[x]^2 loses
    # digits when the mean is large), epsilon as torch's default.
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, dtype=dtype,
                        param_dtype=jnp.float32, name=name)


def _dense(features, dtype, name, use_bias=True):
    return nn.Dense(features, use_bias=use_bias, kernel_init=_dense_init,
                    bias_init=nn.initializers.zeros, dtype=dtype, param_dtype=jnp.float32,
                    name=name)


class StageLayout(NamedTuple):
    """Where one stage's blocks attend, for an input size (see `SwinTransformer.stage_layout`).

    Attributes:
      resolution: ``(h, w)`` token map of the stage (after its PatchMerging).
      window: ``(wh, ww)`` attention window, the configured window clamped to
        ``resolution`` per axis.
      shift: ``(sh, sw)`` roll of the odd-numbered blocks (0 on a clamped axis).
      padded: ``(hp, wp)``, ``resolution`` rounded up to multiples of ``window``.
    """
    resolution: tuple[int, int]
    window: tuple[int, int]
    shift: tuple[int, int]
    padded: tuple[int, int]


def relative_position_index(window: tuple[int, int]) -> np.ndarray:
    """``[N, N]`` int32 row of the bias table for each (query, key) pair of a window, N = wh * ww.

    timm's ``get_relative_position_index``: tokens in row-major order; the row
    of offset ``(dy, dx)`` is ``(dy + wh - 1) * (2 ww - 1) + (dx + ww - 1)``.
    """
    wh, ww = window
    coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :]  # [2, N, N], query minus key
    return ((rel[0] + wh - 1) * (2 * ww - 1) + (rel[1] + ww - 1)).astype(np.int32)


def shift_attention_mask(layout: StageLayout) -> np.ndarray:
    """``[nW, N, N]`` float32 additive mask of a shifted block: 0 within a region, -100 across.

    timm's ``get_attn_mask``: the *padded* grid (rolled first, then padded, as
    in the forward) is cut into 3 x 3 regions by the slices ``[0, -w)``,
    ``[-w, -s)``, ``[-s, end)`` per axis; tokens of a window attend freely only
    to tokens of the same region. Windows in row-major order.
    """
    (hp, wp), (wh, ww), (sh, sw) = layout.padded, layout.window, layout.shift
    img = np.zeros((hp, wp), np.float32)
    cnt = 0
    for h0, h1 in ((0, -wh), (-wh, -sh), (-sh, None)):
        for w0, w1 in ((0, -ww), (-ww, -sw), (-sw, None)):
            # Literally timm's slices: on an unshifted axis (s = 0) the last
            # slice [-0:] is the whole axis and overwrites the others, so
            # that axis has a single region, as it should.
            img[h0:h1, w0:w1] = cnt
            cnt += 1
    windows = _partition(img[None, :, :, None], (wh, ww))[0, :, :, 0]  # [nW, N]
    diff = windows[:, None, :] - windows[:, :, None]
    return np.where(diff != 0, _MASK_VALUE, 0.0).astype(np.float32)


def _partition(x, window):
    """``[B, H, W, C] -> [B, nW, wh*ww, C]``, windows row-major (timm's ``window_partition``)."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.reshape(b, h // wh, wh, w // ww, ww, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // wh) * (w // ww), wh * ww, c)


def _reverse(windows, window, h, w):
    """Inverse of `_partition`: ``[B, nW, wh*ww, C] -> [B, H, W, C]``."""
    b, _, _, c = windows.shape
    wh, ww = window
    x = windows.reshape(b, h // wh, w // ww, wh, ww, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


class _WindowAttention(nn.Module):
    """Multi-head self-attention within windows, with the relative position bias; ``[B, nW, N, C]``."""

    num_heads: int
    window: tuple[int, int]
    dropout: float
    dtype: Any

    @nn.compact
    def __call__(self, x, mask, train: bool):
        """x: ``[B, nW, N, C]``; mask: None or ``[nW, N, N]`` additive (0 / -100)."""
        b, nw, n, c = x.shape
        heads = self.num_heads
        head_dim = c // heads
        wh, ww = self.window
        table = self.param("relative_position_bias_table", _table_init,
                           ((2 * wh - 1) * (2 * ww - 1), heads), jnp.float32)
        # [N, N, heads] -> [heads, N, N]; the index is a compile-time constant.
        bias = table[relative_position_index(self.window).reshape(-1)]
        bias = bias.reshape(n, n, heads).transpose(2, 0, 1)
        # timm's qkv output is laid out [3, heads, head_dim] (reshape(B, N, 3, heads, -1)).
        qkv = _dense(3 * c, self.dtype, "qkv")(x).reshape(b, nw, n, 3, heads, head_dim)
        q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]  # [B, nW, N, heads, hd]
        # Scale q before the product, as timm's (non-fused) path does.
        q = q * jnp.asarray(head_dim ** -0.5, q.dtype)
        logits = jnp.einsum("bwqhd,bwkhd->bwhqk", q, k)
        # Bias, mask and softmax in float32 whatever the compute dtype.
        logits = logits.astype(jnp.float32) + bias[None, None]
        if mask is not None:
            logits = logits + jnp.asarray(mask)[None, :, None]
        attn = nn.softmax(logits, axis=-1).astype(self.dtype)
        y = jnp.einsum("bwhqk,bwkhd->bwqhd", attn, v).reshape(b, nw, n, c)
        y = _dense(c, self.dtype, "proj")(y)
        return nn.Dropout(self.dropout)(y, deterministic=not train)


class _Mlp(nn.Module):
    """``Dense(hidden) -> GELU -> Dropout -> Dense(C) -> Dropout``; ``[..., C] -> [..., C]``."""

    hidden: int
    dropout: float
    dtype: Any

    @nn.compact
    def __call__(self, x, train: bool):
        c = x.shape[-1]
        # Exact (erf) GELU, as torch.nn.GELU in timm, not the tanh approximation.
        y = nn.gelu(_dense(self.hidden, self.dtype, "fc1")(x), approximate=False)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        y = _dense(c, self.dtype, "fc2")(y)
        return nn.Dropout(self.dropout)(y, deterministic=not train)


class _SwinBlock(nn.Module):
    """Pre-LN Swin block on a token map: ``x + (S)W-MSA(LN(x))``, then ``+ MLP(LN(x))``; ``[B, H, W, C]``."""

    num_heads: int
    layout: StageLayout
    shifted: bool
    mlp_ratio: float
    dropout: float
    dtype: Any

    @nn.compact
    def __call__(self, x, train: bool):
        _, h, w, c = x.shape
        window = self.layout.window
        shift = self.layout.shift if self.shifted else (0, 0)
        y = _layer_norm(self.dtype, "norm1")(x)
        if any(shift):
            y = jnp.roll(y, (-shift[0], -shift[1]), axis=(1, 2))
        hp, wp = self.layout.padded
        # Zero tokens at the bottom / right, after the roll (timm's order).
        y = jnp.pad(y, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
        mask = shift_attention_mask(self.layout._replace(shift=shift)) if any(shift) else None
        y = _WindowAttention(self.num_heads, window, self.dropout, self.dtype, name="attn")(
            _partition(y, window), mask, train)
        y = _reverse(y, window, hp, wp)[:, :h, :w]
        if any(shift):
            y = jnp.roll(y, shift, axis=(1, 2))
        x = x + y
        y = _layer_norm(self.dtype, "norm2")(x)
        return x + _Mlp(int(c * self.mlp_ratio), self.dropout, self.dtype, name="mlp")(y, train)


class _PatchEmbed(nn.Module):
    """``p x p`` stride-``p`` conv, then LayerNorm: ``[B, H, W, 3] -> [B, H/p, W/p, C]``."""

    embed_dim: int
    patch_size: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        p = self.patch_size
        x = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding="VALID", kernel_init=_conv_init,
                    bias_init=nn.initializers.zeros, dtype=self.dtype, param_dtype=jnp.float32,
                    name="proj")(x)
        return _layer_norm(self.dtype, "norm")(x)


class _PatchMerging(nn.Module):
    """2 x 2 neighbours -> one token: ``[B, H, W, C] -> [B, H/2, W/2, 2C]`` (H, W even)."""

    dtype: Any

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        # timm: reshape(B, H/2, 2, W/2, 2, C).permute(0, 1, 3, 4, 2, 5): channel
        # blocks ordered (w-offset, h-offset), i.e. x[0::2, 0::2], x[1::2, 0::2],
        # x[0::2, 1::2], x[1::2, 1::2] as in the original Swin.
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5)
        x = x.reshape(b, h // 2, w // 2, 4 * c)
        x = _layer_norm(self.dtype, "norm")(x)
        return _dense(2 * c, self.dtype, "reduction", use_bias=False)(x)


class _Stage(nn.Module):
    """Optional PatchMerging, then ``depth`` blocks, every second one shifted."""

    depth: int
    num_heads: int
    layout: StageLayout
    downsample: bool
    mlp_ratio: float
    dropout: float
    dtype: Any

    @nn.compact
    def __call__(self, x, train: bool):
        if self.downsample:
            x = _PatchMerging(self.dtype, name="downsample")(x)
        for j in range(self.depth):
            x = _SwinBlock(self.num_heads, self.layout, j % 2 == 1, self.mlp_ratio, self.dropout,
                           self.dtype, name=f"blocks_{j}")(x, train)
        return x


class SwinTransformer(nn.Module):
    """Swin Transformer trunk returning the pooled feature vector.

    Attributes:
      patch_size: side p of the square patches of the patch embedding.
      embed_dim: token width C of stage 1; stage i has ``C * 2**i``.
      depths: blocks per stage (its length is the number of stages).
      num_heads: attention heads per stage; each must divide its stage's width.
      window_size: side w of the square attention windows (clamped per stage
        and axis to the token map, see the module docstring).
      mlp_ratio: MLP hidden units per token width.
      dropout: dropout rate after the attention projection and in the MLP (0
        in timm's defaults); active only with ``train=True``.
      dtype: compute dtype (e.g. ``jnp.bfloat16``); parameters stay float32,
        the attention softmax is float32 and the outputs are float32.
    """

    patch_size: int
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @property
    def num_features(self) -> int:
        """n, the length of the pooled feature vector (``embed_dim * 2**(num_stages - 1)``)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def reduction(self) -> int:
        """Pixels per final token along each axis: ``patch_size * 2**(num_stages - 1)``."""
        return self.patch_size * 2 ** (len(self.depths) - 1)

    def stage_layout(self, height: int, width: int) -> tuple[StageLayout, ...]:
        """Per-stage token resolution, window, shift and padding for ``height x width`` images.

        Raises:
          ValueError: naming the sizes, when ``height`` or ``width`` is not a
            positive multiple of ``reduction`` (timm would pad odd token maps
            before a PatchMerging; that is not supported here).
        """
        r = self.reduction
        if height <= 0 or width <= 0 or height % r or width % r:
            raise ValueError(
                f"SwinTransformer input size {height}x{width} is not supported: height and width must be "
                f"multiples of patch_size * 2**(len(depths) - 1) = {self.patch_size} * "
                f"2**{len(self.depths) - 1} = {r}")
        layouts = []
        res = (height // self.patch_size, width // self.patch_size)
        for i in range(len(self.depths)):
            if i > 0:
                res = (res[0] // 2, res[1] // 2)
            w, s = self.window_size, self.window_size // 2
            # timm's _calc_window_shift: per axis, a map no larger than the
            # window is one window, unshifted.
            window = tuple(n if n <= w else w for n in res)
            shift = tuple(0 if n <= w else s for n in res)
            padded = tuple(-(-n // k) * k for n, k in zip(res, window))
            layouts.append(StageLayout(res, window, shift, padded))
        return tuple(layouts)

    def _check_fields(self):
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError(f"SwinTransformer.depths={self.depths} and num_heads={self.num_heads} must be "
                             "non-empty and of the same length (one entry per stage)")
        for i, heads in enumerate(self.num_heads):
            dim = self.embed_dim * 2 ** i
            if heads <= 0 or dim % heads:
                raise ValueError(f"SwinTransformer.num_heads[{i}]={heads} must divide stage {i}'s width {dim}")
        if self.window_size < 1:
            raise ValueError(f"SwinTransformer.window_size must be >= 1, got {self.window_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SwinTransformer.dropout must be in [0, 1), got {self.dropout}")

    @nn.compact
    def __call__(self, x, train: bool, return_feature_map: bool = False):
        """Encodes images.

        Args:
          x: ``[B, H, W, 3]`` float images (normalised); ``H, W`` multiples of
            ``reduction`` (32 for Swin-T, 8 for swin_cpu).
          train: enables dropout (no other effect: there is no BatchNorm).
          return_feature_map: also return the final (LayerNorm-ed) token map.

        Returns:
          ``v: [B, num_features]`` float32; with ``return_feature_map``,
          ``(v, feature_map)`` where ``feature_map: [B, H/r, W/r, num_features]``
          float32, ``r = reduction``, and ``v`` is its spatial mean.

        Raises:
          ValueError: naming the field or the sizes, for inconsistent fields,
            a non-image input or an unsupported image size.
        """
        self._check_fields()
        if x.ndim != 4:
            raise ValueError(f"SwinTransformer input x must be [B, H, W, C], got shape {x.shape}")
        layouts = self.stage_layout(x.shape[1], x.shape[2])
        x = jnp.asarray(x, self.dtype)
        x = _PatchEmbed(self.embed_dim, self.patch_size, self.dtype, name="patch_embed")(x)
        for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
            x = _Stage(depth, heads, layouts[i], i > 0, self.mlp_ratio, self.dropout, self.dtype,
                       name=f"layers_{i}")(x, train)
        x = _layer_norm(self.dtype, "norm")(x)
        # Pool in float32, as the ResNet and ViT: the losses downstream want float32.
        fmap = x.astype(jnp.float32)
        v = jnp.mean(fmap, axis=(1, 2))
        if return_feature_map:
            return v, fmap
        return v


def _check_name(name: str) -> None:
    if name not in _ARCHS:
        raise ValueError(f"unknown Swin {name!r}; valid names are: {', '.join(sorted(_ARCHS))}")


def build_swin(name: str, **kw) -> SwinTransformer:
    """The Swin Transformer named by a config string: 'swin_cpu' | 'swin_t'.

    Keyword arguments are SwinTransformer fields (dropout, dtype, or any size
    field to override the named size, e.g. ``window_size=8``).
    """
    _check_name(name)
    patch_size, embed_dim, depths, num_heads, window_size, mlp_ratio = _ARCHS[name]
    fields = dict(patch_size=patch_size, embed_dim=embed_dim, depths=depths, num_heads=num_heads,
                  window_size=window_size, mlp_ratio=mlp_ratio)
    fields.update(kw)
    return SwinTransformer(**fields)


def feature_dim(name: str) -> int:
    """n, the pooled feature length of Swin ``name`` (``embed_dim * 2**(num_stages-1)``), without building it."""
    _check_name(name)
    _, embed_dim, depths, _, _, _ = _ARCHS[name]
    return embed_dim * 2 ** (len(depths) - 1)


def swin_names() -> tuple[str, ...]:
    """The named sizes `build_swin` accepts."""
    return tuple(sorted(_ARCHS))
