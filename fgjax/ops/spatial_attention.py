"""Spatial attention maps of a conv stage (Zagoruyko & Komodakis 2017), as in seed B's Fig. 2.

Seed B shows which image regions a network trained with Base, Fine or Indi
uses with the *activation-based* attention of "Paying More Attention to
Attention": for the activation ``A [h, w, C]`` of a conv stage,

    F(A) = (1/C) * sum_c |A_c|^p,   p = 2        (their Eq. 2 with the mean)

a map ``[h, w]`` that is large where the network's features are large. The
mean (rather than the sum) only rescales; maps are compared after a per-image
normalisation anyway.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def spatial_attention(feature_map: jax.Array, *, p: float = 2.0, normalize: str | None = "minmax"
                      ) -> jax.Array:
  """``[N, h, w, C] -> [N, h, w]``: mean over channels of ``|A|^p``.

  Args:
    feature_map: activations of one conv stage.
    p: the exponent (2 in seed B and in Zagoruyko & Komodakis' figures).
    normalize: ``'minmax'`` maps each image's map to [0, 1] (for pictures;
      a constant map becomes 0); ``'l2'`` divides by its L2 norm (the
      attention-transfer loss's form); None keeps raw values.
  """
  if feature_map.ndim != 4:
    raise ValueError(f"feature_map must be [N, h, w, C], got shape {feature_map.shape}")
  if normalize not in ("minmax", "l2", None):
    raise ValueError(f"normalize must be 'minmax', 'l2' or None, got {normalize!r}")
  a = jnp.mean(jnp.abs(feature_map.astype(jnp.float32)) ** p, axis=-1)
  if normalize == "minmax":
    lo = jnp.min(a, axis=(1, 2), keepdims=True)
    hi = jnp.max(a, axis=(1, 2), keepdims=True)
    return jnp.where(hi > lo, (a - lo) / jnp.maximum(hi - lo, 1e-12), 0.0)
  if normalize == "l2":
    norm = jnp.sqrt(jnp.sum(a * a, axis=(1, 2), keepdims=True))
    return a / jnp.maximum(norm, 1e-12)
  return a


def stage_feature_map(encoder: Any, variables: dict[str, Any], images: jax.Array, stage: int) -> jax.Array:
  """The output ``[N, h, w, C]`` of ResNet stage ``stage`` (1-based) in eval mode.

  Read with Flax's ``capture_intermediates`` from the stage's last block
  (``stage{i}_block{last}``), so the encoder needs no special output.
  """
  sizes = tuple(encoder.stage_sizes)
  if not 1 <= stage <= len(sizes):
    raise ValueError(f"stage must be in [1, {len(sizes)}], got {stage}")
  name = f"stage{stage}_block{sizes[stage - 1]}"
  _, state = encoder.apply(variables, images, train=False,
                           capture_intermediates=lambda module, method: module.name == name,
                           mutable=["intermediates"])
  return state["intermediates"][name]["__call__"][0]


def attention_maps(model: Any, images: jax.Array, *, stage: int = 3, out_size: int | None = None
                   ) -> jax.Array:
  """Min-max normalised attention maps of a frozen model's stage: ``[N, H, W] -> [N, s, s]``.

  Args:
    model: a ``registry.FrozenModel`` (ResNet encoder).
    images: normalised images ``[N, H, W, 3]``.
    stage: the ResNet stage (1-4; seed B's maps are of a middle stage).
    out_size: upsample the maps bilinearly to this side (the image size, to
      overlay); None keeps the stage's resolution.
  """
  variables = {"params": model.params, "batch_stats": model.batch_stats}
  maps = spatial_attention(stage_feature_map(model.encoder, variables, images, stage))
  if out_size is not None:
    maps = jax.image.resize(maps, (maps.shape[0], out_size, out_size), method="linear")
  return maps
