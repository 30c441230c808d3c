"""The embedded *source* data set: the ImageNet stand-in that the source encoder is pretrained on.

The papers never train from scratch: Perturb-SSL starts from an ImageNet-1k
ResNet-50 and continues self-supervised on the fine-grained set; SupCon/HCL
fine-tune ImageNet ViT / Swin-T. No ImageNet exists on a machine without a
network, so fgjax ships an encoder pretrained with cross-entropy on this set
(``configs/source.py``; the file and its manifest in ``fgjax/pretrained/weights``,
``docs/pretrained.md``). Like ImageNet next to CUB-200, the set is *generic*: many
coarse classes, more images than any target, and none of its classes is a target's
fine class.

Drawn by `fgjax.data.scene` (the objects of *patches* and *hierarchy*, with the
same per-instance variation and the same ``'tinted'`` nuisance). A class is a
generic category, the triple

* **silhouette** (4: square, disc, diamond, cross),
* **texture** (8: solid, horizontal / vertical stripes, checker, dots, rim,
  cross-hatch, rings), and
* **hue family** (``fine_per_super`` of them, 4 by default): the object's hue is
  ``OBJECT_HUE + j / fine_per_super`` plus a uniform jitter of +-30 % of the
  spacing between families (so families never touch).

``super_label`` is the (silhouette, texture) category ``c`` (silhouette
``c // 8``, texture ``c % 8``; up to 32) and ``fine_label`` the class ``c *
fine_per_super + j`` (128 by default). What no class names: every object carries
a *marking*, its shape drawn uniformly from all eight of `scene.MARKING_NAMES`
(the parts of ImageNet's objects that no ImageNet label names), and the texture's
second tone is drawn per image between 35 % (the *patches* contrast) and 75 % (the
*hierarchy* contrast) of the object's value.

Relation to the targets: the *patches* super-classes are (silhouette, texture)
categories of orange objects, so each is (nearly) one source class -- as CUB's
"bird" is an ImageNet concept -- while the patches fine classes (the marking's
shape) are named by no source class. The *hierarchy* genera are textures on a
square; its species differ in marking and hue. The source set is generated from
its own seed stream (``SeedSequence([seed, 1])``), independent of the targets'
images at the same seed.
"""

from __future__ import annotations

import numpy as np

from fgjax.data import scene
from fgjax.data.synthetic import OBJECT_HUE
from fgjax.data.synthetic import _check_int


__all__ = ["MAX_CATEGORIES", "MAX_HUE_FAMILIES", "make_source", "class_traits"]

MAX_CATEGORIES = len(scene.SILHOUETTE_NAMES) * len(scene.TEXTURE_NAMES)  # 32 (silhouette, texture) pairs
MAX_HUE_FAMILIES = 8
HUE_JITTER = 0.3  # of the spacing between hue families, each way
TEXTURE_VALUES = (0.35, 0.75)  # the texture tone's value relative to the object's: uniform in this range
_SOURCE_STREAM = 1  # SeedSequence([seed, 1]): not the targets' SeedSequence(seed)


def class_traits(num_super: int, fine_per_super: int) -> dict[str, np.ndarray]:
  """Each class's silhouette, texture and hue-family centre (no randomness).

  Returns:
    ``{'silhouette', 'texture': int32 [F], 'hue': float64 [F]}`` with ``F =
    num_super * fine_per_super`` (indices into `scene.SILHOUETTE_NAMES` and
    `scene.TEXTURE_NAMES`; hue in [0, 1)).
  """
  fine = np.arange(num_super * fine_per_super)
  category, family = fine // fine_per_super, fine % fine_per_super
  n_textures = len(scene.TEXTURE_NAMES)
  return {"silhouette": (category // n_textures).astype(np.int32),
          "texture": (category % n_textures).astype(np.int32),
          "hue": (OBJECT_HUE + family / fine_per_super) % 1.0}


def _draw_split(rng: np.random.Generator, *, num_super: int, fine_per_super: int, per_class: int,
                image_size: int, background: str) -> dict[str, np.ndarray]:
  num_fine = num_super * fine_per_super
  fine = rng.permutation(np.repeat(np.arange(num_fine, dtype=np.int32), per_class))
  traits = class_traits(num_super, fine_per_super)
  marking = rng.integers(0, len(scene.MARKING_NAMES), size=len(fine)).astype(np.int32)
  texture_value = rng.uniform(*TEXTURE_VALUES, size=len(fine))
  scenes = scene.draw_instances(
      rng, image_size=image_size, background=background, silhouette=traits["silhouette"][fine],
      texture=traits["texture"][fine], hue=traits["hue"][fine], marking=marking,
      hue_jitter=HUE_JITTER / fine_per_super)
  # Scaling RGB scales the HSV value and keeps hue and saturation: the per-image texture tone.
  scenes.tone_b = scenes.tone_a * texture_value[:, None]
  return {
      "image": scene.render(scenes, image_size),
      "fine_label": fine,
      "super_label": (fine // fine_per_super).astype(np.int32),
      "index": np.arange(len(fine), dtype=np.int32),
  }


def make_source(*, num_super: int = MAX_CATEGORIES, fine_per_super: int = 4, train_per_class: int = 80,
                test_per_class: int = 20, image_size: int = 32, seed: int = 0,
                background: str = "tinted") -> dict:
  """Generates the *source* data set (module docstring); the layout of `synthetic.make_patches`.

  Args:
    num_super: (silhouette, texture) categories, in [2, 32]: the first ``num_super``
      of silhouette-major order.
    fine_per_super: hue families per category, in [1, 8]; classes = num_super * fine_per_super.
    train_per_class, test_per_class: images per class (>= 1).
    image_size: side S, >= 16.
    seed: non-negative int; the same seed gives the same arrays, bit for bit.
    background: one of `scene.BACKGROUNDS` (``'tinted'`` by default, the targets' own).

  Returns:
    ``{'train': split, 'test': split, 'num_fine_classes', 'num_super_classes',
    'fine_to_super', 'fine_names', 'super_names'}``; a split holds ``'image'``
    uint8 [N, S, S, 3] and ``'fine_label'`` (the class), ``'super_label'`` (its
    category), ``'index'``, int32 [N], N = classes * per_class, balanced and shuffled.

  Raises:
    ValueError: naming the argument, when an argument is out of range.
  """
  num_super = _check_int("num_super", num_super, 2, MAX_CATEGORIES)
  fine_per_super = _check_int("fine_per_super", fine_per_super, 1, MAX_HUE_FAMILIES)
  train_per_class = _check_int("train_per_class", train_per_class, 1)
  test_per_class = _check_int("test_per_class", test_per_class, 1)
  image_size = _check_int("image_size", image_size, 16)
  seed = _check_int("seed", seed, 0)
  if background not in scene.BACKGROUNDS:
    raise ValueError(f"background must be one of {scene.BACKGROUNDS}, got {background!r}")
  train_seq, test_seq = np.random.SeedSequence([seed, _SOURCE_STREAM]).spawn(2)
  common = dict(num_super=num_super, fine_per_super=fine_per_super, image_size=image_size,
                background=background)
  out = {"train": _draw_split(np.random.default_rng(train_seq), per_class=train_per_class, **common),
         "test": _draw_split(np.random.default_rng(test_seq), per_class=test_per_class, **common)}
  num_fine = num_super * fine_per_super
  n_textures = len(scene.TEXTURE_NAMES)
  out["num_fine_classes"] = num_fine
  out["num_super_classes"] = num_super
  out["fine_to_super"] = (np.arange(num_fine, dtype=np.int32) // fine_per_super).astype(np.int32)
  out["super_names"] = [f"{scene.SILHOUETTE_NAMES[c // n_textures]}_{scene.TEXTURE_NAMES[c % n_textures]}"
                        for c in range(num_super)]
  out["fine_names"] = [f"{out['super_names'][f // fine_per_super]}_hue{f % fine_per_super}"
                       for f in range(num_fine)]
  return out
