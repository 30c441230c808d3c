"""The encoder f of every method, by ``model.encoder`` name: ResNet, ViT or Swin.

All three take images ``x: [B, H, W, 3]`` and return the pooled feature vector
``v: [B, n]`` float32 (``return_feature_map=True`` adds the last spatial map),
so every method trains any of them:

* ``resnet18`` / ``resnet34`` / ``resnet50`` (torchvision layout;
  ``model.width``, ``model.cifar_stem``) -- with BatchNorm;
* ``vit_tiny`` (32 px CPU size), ``vit_ti16`` / ``vit_s16`` / ``vit_b16``;
* ``swin_cpu`` (32 px CPU size), ``swin_t`` (Swin-T) -- no BatchNorm.

``model.init_from`` loads pretrained weights into any of them
(``fgjax.pretrained``).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections

from fgjax.models import resnet
from fgjax.models import swin
from fgjax.models import vit

RESNETS = ("resnet18", "resnet34", "resnet50")


def names() -> tuple[str, ...]:
  """Every ``model.encoder`` name."""
  return RESNETS + vit.vit_names() + swin.swin_names()


def is_resnet(name: str) -> bool:
  """Whether ``name`` is a ResNet (``model.width`` and ``model.cifar_stem`` apply; BatchNorm)."""
  return name in RESNETS


def build(m: ml_collections.ConfigDict, **kw: Any) -> Any:
  """The encoder of a config's ``model`` block; ``kw`` adds module fields (e.g. ``bn_axis_name``).

  A ResNet takes ``model.conv_impl`` (``fgjax.ops.conv``); a block without the
  field (built by hand) gets XLA's convolutions.
  """
  dtype = jnp.dtype(m.dtype)
  if m.encoder in vit.vit_names():
    return vit.build_vit(m.encoder, dtype=dtype)
  if m.encoder in swin.swin_names():
    return swin.build_swin(m.encoder, dtype=dtype)
  return resnet.build_encoder(m.encoder, width=m.width, cifar_stem=m.cifar_stem, dtype=dtype,
                              conv_impl=m.get("conv_impl", "xla"), **kw)


def feature_dim(m: ml_collections.ConfigDict) -> int:
  """n, the pooled feature length of the config's encoder, without building it."""
  if m.encoder in vit.vit_names():
    return vit.feature_dim(m.encoder)
  if m.encoder in swin.swin_names():
    return swin.feature_dim(m.encoder)
  return resnet.feature_dim(m.encoder, m.width)


def image_size_problem(m: ml_collections.ConfigDict, image_size: int) -> str | None:
  """Why the config's encoder cannot take ``image_size`` px images, or None (ViT: the patch must divide the
  size; Swin: the size must be a multiple of its total downsampling)."""
  if m.encoder in vit.vit_names():
    patch = build(m).patch_size
    return None if image_size % patch == 0 else f"{m.encoder}'s patch size {patch} must divide it"
  if m.encoder in swin.swin_names():
    step = build(m).reduction
    return None if image_size % step == 0 else f"{m.encoder} needs a multiple of {step}"
  return None
