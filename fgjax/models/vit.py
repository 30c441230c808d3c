"""Vision Transformer encoders (ViT, Dosovitskiy et al. 2021) in Flax Linen.

The same contract as `fgjax.models.resnet.ResNet`: images ``x: [B, H, W, 3]`` go
in, the pooled feature vector ``v: [B, hidden_dim]`` float32 comes out (no
classifier: heads live in `fgjax.models.heads`), ``num_features`` gives its
length, and ``return_feature_map=True`` also returns the patch-token map
``[B, H/p, W/p, hidden_dim]`` (for attention / Grad-CAM pictures).

Architecture (as ``timm``'s ``VisionTransformer`` and big_vision's ``vit.py``):
patch embedding (a ``p x p`` stride-``p`` conv), an optional learned class token,
learned position embeddings, ``depth`` pre-LN blocks
``x += MHSA(LN(x)); x += MLP(LN(x))`` (GELU MLP, ``mlp_dim`` hidden units), a
final LayerNorm on all tokens, then pooling: the class token (``pool='cls'``) or
the mean of the patch tokens (``pool='gap'``). At ``vit_s16`` on 224 px images
the trunk has 21,665,664 parameters, timm's ``vit_small_patch16_224`` without
its 1000-way head (22,050,664 - 385,000).

No BatchNorm: ``model.init`` returns only ``params`` (no ``batch_stats``
collection), and ``train`` only switches dropout. Training code written for
the ResNet (``mutable=['batch_stats']``) must accept an empty ``batch_stats``
(``{}``) for this model. With ``dropout > 0`` and ``train=True`` the apply needs a
``'dropout'`` rng.

The position embeddings are sized at init from the input: one model instance
serves one image size (applying it to another size raises Flax's parameter
shape error), as the papers fine-tune at a fixed resolution.

Example::

    model = build_vit('vit_tiny')                    # 32 px CPU size
    variables = model.init(rng, jnp.zeros((2, 32, 32, 3)), train=False)
    v = model.apply(variables, x, train=False)       # [B, 96] float32
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


POOLS = ("cls", "gap")

# name -> (patch_size, hidden_dim, depth, num_heads, mlp_dim)
_ARCHS = {
    # CPU size for the embedded 32 px data: 8 x 8 = 64 patch tokens of 4 px. Not
    # DeiT-Ti (192-d, 12 blocks). 0.68 M parameters, 108 MFLOP per 32 px image
    # (XLA cost analysis), 1.7x a quarter-width CIFAR-stem ResNet-18 (62 MFLOP).
    "vit_tiny": (4, 96, 6, 3, 384),
    "vit_ti16": (16, 192, 12, 3, 768),  # DeiT-Ti/16
    "vit_s16": (16, 384, 12, 6, 1536),  # ViT-S/16 (DeiT-S)
    "vit_b16": (16, 768, 12, 12, 3072),  # ViT-B/16
}

# timm / big_vision initialisation: xavier-uniform dense and attention kernels,
# zero biases, N(0, 0.02) position embeddings, zero class token.
_dense_init = nn.initializers.xavier_uniform()
_pos_init = nn.initializers.normal(stddev=0.02)


class _MlpBlock(nn.Module):
    """``Dense(mlp_dim) -> GELU -> Dropout -> Dense(d) -> Dropout``; ``[B, N, d] -> [B, N, d]``."""

    mlp_dim: int
    dropout: float
    dtype: Any

    @nn.compact
    def __call__(self, x, train: bool):
        dense = lambda n, name: nn.Dense(  # noqa: E731
            n, kernel_init=_dense_init, bias_init=nn.initializers.zeros, dtype=self.dtype,
            param_dtype=jnp.float32, name=name)
        d = x.shape[-1]
        # Exact (erf) GELU, as torch.nn.GELU in timm, not the tanh approximation.
        y = nn.gelu(dense(self.mlp_dim, "fc1")(x), approximate=False)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        y = dense(d, "fc2")(y)
        return nn.Dropout(self.dropout)(y, deterministic=not train)


class _EncoderBlock(nn.Module):
    """Pre-LN transformer block: ``x + MHSA(LN(x))``, then ``+ MLP(LN(x))``; ``[B, N, d]``."""

    num_heads: int
    mlp_dim: int
    dropout: float
    dtype: Any

    @nn.compact
    def __call__(self, x, train: bool):
        norm = lambda name: nn.LayerNorm(  # noqa: E731
            epsilon=1e-6, dtype=self.dtype, param_dtype=jnp.float32, name=name)
        y = norm("ln1")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dtype=self.dtype, param_dtype=jnp.float32,
            kernel_init=_dense_init, bias_init=nn.initializers.zeros,
            dropout_rate=0.0, deterministic=not train,
            # The attention softmax in float32 whatever the compute dtype (no-op in float32).
            force_fp32_for_softmax=True, name="attn")(y, y)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        x = x + y
        y = norm("ln2")(x)
        return x + _MlpBlock(self.mlp_dim, self.dropout, self.dtype, name="mlp")(y, train)


class ViT(nn.Module):
    """ViT trunk returning the pooled feature vector.

    Attributes:
      patch_size: side p of the square patches; must divide the image size.
      hidden_dim: token width d (= the feature length ``num_features``).
      depth: number of transformer blocks.
      num_heads: attention heads; must divide ``hidden_dim``.
      mlp_dim: hidden units of each block's MLP (4 * d in the standard sizes).
      pool: ``'cls'`` (a learned class token, its final state is ``v``) or
        ``'gap'`` (no class token; ``v`` is the mean of the patch tokens).
      dropout: dropout rate after the attention and in the MLP (0 in DeiT/timm
        defaults); active only with ``train=True``.
      dtype: compute dtype (e.g. ``jnp.bfloat16``); parameters stay float32 and
        the outputs are float32.
    """

    patch_size: int
    hidden_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    pool: str = "cls"
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @property
    def num_features(self) -> int:
        """n, the length of the pooled feature vector (``hidden_dim``)."""
        return self.hidden_dim

    @nn.compact
    def __call__(self, x, train: bool, return_feature_map: bool = False):
        """Encodes images.

        Args:
          x: ``[B, H, W, 3]`` float images (normalised); ``H, W`` multiples of
            ``patch_size``.
          train: enables dropout (no other effect: there is no BatchNorm).
          return_feature_map: also return the final (LayerNorm-ed) patch tokens
            as a map.

        Returns:
          ``v: [B, hidden_dim]`` float32; with ``return_feature_map``,
          ``(v, feature_map)`` where ``feature_map: [B, H/p, W/p, hidden_dim]``
          float32 (with ``pool='gap'``, ``v`` is its spatial mean).

        Raises:
          ValueError: naming the field, for an unknown ``pool``, ``num_heads``
            not dividing ``hidden_dim``, a patch size not dividing the image, or
            a non-image input.
        """
        if self.pool not in POOLS:
            raise ValueError(f"ViT.pool must be one of {POOLS}, got {self.pool!r}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"ViT.num_heads={self.num_heads} must divide "
                             f"hidden_dim={self.hidden_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ViT.dropout must be in [0, 1), got {self.dropout}")
        if x.ndim != 4:
            raise ValueError(f"ViT input x must be [B, H, W, C], got shape {x.shape}")
        p = self.patch_size
        if x.shape[1] % p or x.shape[2] % p:
            raise ValueError(f"ViT.patch_size={p} must divide the image size "
                             f"{x.shape[1]}x{x.shape[2]}")
        x = jnp.asarray(x, self.dtype)
        # Patch embedding: a p x p stride-p conv is a linear map of each patch.
        x = nn.Conv(self.hidden_dim, (p, p), strides=(p, p), padding="VALID",
                    dtype=self.dtype, param_dtype=jnp.float32, name="patch_embed")(x)
        batch, h, w, d = x.shape
        tokens = x.reshape(batch, h * w, d)
        if self.pool == "cls":
            cls = self.param("cls_token", nn.initializers.zeros, (1, 1, d), jnp.float32)
            tokens = jnp.concatenate(
                [jnp.broadcast_to(cls.astype(self.dtype), (batch, 1, d)), tokens], axis=1)
        pos = self.param("pos_embed", _pos_init, (1, tokens.shape[1], d), jnp.float32)
        tokens = tokens + pos.astype(self.dtype)
        tokens = nn.Dropout(self.dropout)(tokens, deterministic=not train)
        for i in range(self.depth):
            tokens = _EncoderBlock(self.num_heads, self.mlp_dim, self.dropout, self.dtype,
                                   name=f"block{i + 1}")(tokens, train)
        tokens = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=jnp.float32,
                              name="final_norm")(tokens)
        # Pool in float32, as the ResNet: the losses downstream want float32.
        tokens = tokens.astype(jnp.float32)
        patch_tokens = tokens[:, 1:] if self.pool == "cls" else tokens
        v = tokens[:, 0] if self.pool == "cls" else jnp.mean(patch_tokens, axis=1)
        if return_feature_map:
            return v, patch_tokens.reshape(batch, h, w, d)
        return v


def _check_name(name: str) -> None:
    if name not in _ARCHS:
        raise ValueError(f"unknown ViT {name!r}; valid names are: {', '.join(sorted(_ARCHS))}")


def build_vit(name: str, **kw) -> ViT:
    """The ViT named by a config string: 'vit_tiny' | 'vit_ti16' | 'vit_s16' | 'vit_b16'.

    Keyword arguments are ViT fields (pool, dropout, dtype, or any size field to
    override the named size, e.g. ``patch_size=8``).
    """
    _check_name(name)
    patch_size, hidden_dim, depth, num_heads, mlp_dim = _ARCHS[name]
    fields = dict(patch_size=patch_size, hidden_dim=hidden_dim, depth=depth,
                  num_heads=num_heads, mlp_dim=mlp_dim)
    fields.update(kw)
    return ViT(**fields)


def feature_dim(name: str) -> int:
    """n, the pooled feature length of ViT ``name`` (its hidden_dim), without building it."""
    _check_name(name)
    return _ARCHS[name][1]


def vit_names() -> tuple[str, ...]:
    """The named sizes `build_vit` accepts."""
    return tuple(sorted(_ARCHS))
