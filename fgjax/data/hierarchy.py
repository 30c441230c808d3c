"""The embedded *hierarchy* data set: genus -> species, with look-alikes across genera.

Two versions, as for *patches* (``make_hierarchy(version=...)``, ``data.version``).
**Version 2 (default)** draws the class traits below on the objects of
`fgjax.data.scene`: every instance differs in rotation, shear, aspect, texture
period and phase, and the marking's place, size and stroke; the background is
``'tinted'`` (a flat blue-grey under a whole-image colour cast, default),
``'blank'`` or ``'gradient'``. The object is always a square (the genus is its
texture and hue family); its hue varies by +-0.01 around the species hue, its
saturation and value are fixed. Sanity numbers at the default sizes (6 x 6,
80 / 20 images per species, seed 0): raw-pixel nearest-class-mean genus 74.0 %,
species 46.4 %; 57.9 % of the look-alike species' test images fall in the wrong
genus against 10.0 % of the others. At the CE config's sizes (32 / 16 per
species) the quarter-width ResNet-18 at random init reaches kNN genus 62.2 %,
species 29.3 %; cross-entropy on species (``configs/ce.py``, 450 steps) 84.0 % and
80.9 %, with 134 of 576 test images (23.3 %) genus-level nearest-centroid outliers
against 237 (41.1 %) at random init.
**Version 1** is the first generator, kept bit for bit for old runs. Below, the
class traits (texture, hue family, marking, look-alikes) hold for both versions;
the scene, the per-image nuisance and the measured numbers are version 1's.

The data of method H (SupCon / HCL), generated from a seed in seconds. In the spirit
of DF20-Mini (182 fungi species in 6 genera): the species of one genus share a
family look, yet some species of *different* genera look alike (the seed paper's
Fig. 1: Russula and Amanita species with the same cap colour). So the genus level
is real structure, not a separate label stamped on the image: a representation
that groups species by genus has to learn a *subtle* family trait and must not be
fooled by the look-alikes. (The *patches* data of `fgjax.data.synthetic` names its
super-class with a big, distinct object, so genus-level nearest-centroid outliers
are ~0 there for any method.)

Scene (S = 32 px by default; the drawing follows `fgjax.data.synthetic`): a
nuisance background (a linear colour gradient between two random colours along a
random direction) with an *object* (a square of side ``round(S/2)``, top-left
jittered uniformly in ``[S//16, S - side - S//16]``) that carries a *marking* (a
``round(S/4)`` px square inside it, 1 px margin, jittered, with a light base and a
dark ink whose shape is one of `synthetic.FINE_TEMPLATES`), plus i.i.d. Gaussian
pixel noise (std 0.04) over the whole image. For genus ``g`` of ``G`` and species
``j`` of ``K`` within it (``species = g * K + j``):

* **Genus family trait 1 - texture (consistent, subtle).** The object is two-tone
  with texture ``GENUS_TEXTURE_NAMES[g]`` (solid, horizontal stripes, vertical
  stripes, checker, dots, rim, cross-hatch, rings; period ``round(S/8)`` px). The
  second tone is the object colour at ``texture_value`` (default 0.75) of its
  value: low contrast, where the *patches* data uses 0.55. Every species of a genus
  has the texture; no species of another genus has it. All textures survive a
  horizontal flip (up to phase) and grayscale.
* **Genus family trait 2 - hue family (soft, overlapping).** The object hue is
  ``g / G + d_j`` with species offsets ``d_j`` spread evenly over
  ``[-hue_spread / G, +hue_spread / G]`` (default ``hue_spread = 0.55``). Since
  ``hue_spread > 0.5`` the hue ranges of neighbouring genera overlap: the last
  species of genus ``g`` is *closer in hue to genus g + 1's centre* than to its own
  (distance ``0.45 / G`` vs ``0.55 / G``).
* **Species trait - marking shape and hue offset.** Species ``(g, j)`` uses ink
  template ``(j + g * (K - 1)) mod K``: within a genus the K species use K distinct
  templates (a cyclic shift of ``0..K-1``), and the template sequence is shifted
  so that the last species of genus ``g`` and the first species of genus ``g + 1``
  (cyclically, genus ``G - 1`` and genus 0) have the *same* marking.
* **Look-alike pairs.** Those two species, ``(g, K-1)`` and ``(g+1, 0)``, then share
  the marking and nearly the hue (their hues differ by ``(1 - 2 * hue_spread) / G``,
  0.017 of the wheel at G = 6, less than the within-genus hue step
  ``2 * hue_spread / (G (K - 1))``, 0.037 at K = 6): they differ only in the
  genus texture. Each genus has two species in such a pair (one with the genus
  before, one with the genus after), ``2 / K`` of the species at K >= 3.
* **Per-image nuisance.** Hue +-0.01, saturation 0.7 +- 0.08, value 0.85 +- 0.08
  (uniform); marking base grey in [0.75, 0.95], ink grey in [0.05, 0.25] with a small
  random tint; background colours, direction, positions and noise as above.

Labels are nested: ``fine_label`` (species) ``= super_label * K + j`` with
``super_label`` the genus; ``fine_to_super[s] == s // K``.

Measured sanity numbers (default sizes G = 6, K = 6, 80 / 20 images per species
at S = 32: 2,880 train and 720 test images; seed 0; generated in under a second).
Raw-pixel nearest-class-mean accuracy on the test split, class means from the
training split: genus 52.4% (chance 16.7%), species 13.3% (chance 2.8%). As
genus-level nearest-centroid outliers: 47.6% of the test images, 61.7% of those of
the two look-alike species of each genus and 40.6% of the others. So in pixel space
the hue family carries the genus, the look-alikes sit in the wrong genus more
often, and the genus texture (whose phase moves with the object) is invisible to
class means; a learned representation has to find it.

Learned representations do separate the methods at genus level. One calibration run
each (seed 0; quarter-width CIFAR-stem ResNet-18, batch 128, 300 steps = 13 epochs,
aug+ without blur on every view, SGD momentum 0.9 + cosine, weight decay 5e-4;
SupCon/HCL with two views, an MLP head 128-128, T = T_b = 0.1), genus-level
nearest-centroid outliers of the pooled test features (`nearest_centroid_outliers`,
720 test images) and species 20-NN accuracy (train features as the gallery):

  =================  ===================  =======================  ===========
  loss               genus outliers       look-alikes / others     species kNN
  =================  ===================  =======================  ===========
  cross-entropy      157 (21.8%)          43.8% / 10.8%            82.4%
  SupCon (species)   220 (30.6%)          35.4% / 28.1%            92.4%
  HCL, lambda = 0.5   28 (3.9%)           10.4% / 0.6%             34.6%
  HCL, lambda = 0.2   33 (4.6%)           11.7% / 1.0%             40.7%
  =================  ===================  =======================  ===========

(SupCon's projection output: 146 outliers, 20.3%; learning rate 0.1 for CE, 0.05
for SupCon/HCL.) So the genus level is neither trivial nor hopeless; for CE and
HCL the outliers concentrate on the look-alikes; and at this budget HCL buys its
genus clusters with species discrimination. One seed and a short budget: orders
of magnitude, not a result.

``make_hierarchy(..., hierarchy_names=True)`` also returns ``genus_label`` /
``species_label`` aliases and ``num_genus_classes`` / ``num_species_classes``, as
`synthetic.make_patches` does.

The class prototypes are fixed (they do not depend on the seed); the seed drives all
per-image randomness. Train and test come from independent streams of the same seed
(``numpy.random.SeedSequence(seed).spawn``), balanced exactly over species and
shuffled.
"""

from __future__ import annotations

import functools

import numpy as np

from fgjax.data import scene
from fgjax.data.synthetic import _check_int
from fgjax.data.synthetic import _hsv_to_rgb
from fgjax.data.synthetic import check_version
from fgjax.data.synthetic import render_images


__all__ = ["GENUS_TEXTURE_NAMES", "make_hierarchy", "species_prototypes"]

GENUS_TEXTURE_NAMES = ("solid", "hstripes", "vstripes", "checker", "dots", "rim",
                       "crosshatch", "rings")
MAX_SPECIES_PER_GENUS = 8  # one ink template per species within a genus


def species_prototypes(num_super: int, fine_per_super: int,
                       hue_spread: float = 0.55) -> dict[str, np.ndarray]:
  """The fixed per-species look (no randomness): what encodes what.

  Returns:
    ``{'genus': int32 [F], 'texture': int32 [F] (index into GENUS_TEXTURE_NAMES),
    'hue': float64 [F] in [0, 1), 'template': int32 [F] (index into
    synthetic.FINE_TEMPLATES)}`` for the ``F = num_super * fine_per_super``
    species, species ``s`` being genus ``s // fine_per_super``.
  """
  g = np.repeat(np.arange(num_super), fine_per_super)
  j = np.tile(np.arange(fine_per_super), num_super)
  k = fine_per_super
  offsets = hue_spread / num_super * (2.0 * j / (k - 1) - 1.0)
  return {
      "genus": g.astype(np.int32),
      "texture": g.astype(np.int32),
      "hue": (g / num_super + offsets) % 1.0,
      "template": ((j + g * (k - 1)) % k).astype(np.int32),
  }


def _texture_mask(texture: np.ndarray, ry: np.ndarray, rx: np.ndarray, side: int,
                  period: int) -> np.ndarray:
  """Where the object shows its second tone: bool, the shape of ``ry``.

  ``ry, rx``: pixel coordinates relative to the object's top-left corner;
  ``texture``: the texture index, broadcastable to them. Every texture is
  symmetric under ``rx -> side - 1 - rx`` up to a phase shift.
  """
  half = period // 2
  stripe_h = np.mod(ry, period) >= half
  stripe_v = np.mod(rx, period) >= half
  # Chebyshev distance from the object centre, in half pixels (integer, symmetric).
  cheb = np.maximum(np.abs(2 * ry - (side - 1)), np.abs(2 * rx - (side - 1)))
  border = side - 1 - cheb  # 2 * (distance to the nearest edge), in half pixels
  masks = [
      np.zeros_like(stripe_h),  # solid
      stripe_h,  # horizontal stripes
      stripe_v,  # vertical stripes
      stripe_h ^ stripe_v,  # checker
      ~stripe_h & ~stripe_v,  # dots: a grid of half-period squares
      border < 2 * max(2, side // 6),  # rim: a darker margin
      (np.mod(ry + rx, period) == 0) | (np.mod(ry - rx, period) == 0),  # cross-hatch
      np.mod(cheb // 2, period) >= half,  # rings: concentric squares
  ]
  out = np.zeros(np.broadcast_shapes(texture.shape, ry.shape), bool)
  for t, mask in enumerate(masks):
    out |= (texture == t) & mask
  return out


def _draw_split(rng: np.random.Generator, *, num_super: int, fine_per_super: int,
                per_class: int, image_size: int, hue_spread: float,
                texture_value: float) -> dict[str, np.ndarray]:
  """Draws one split: ``per_class`` images of every species, shuffled."""
  num_fine = num_super * fine_per_super
  n = num_fine * per_class
  s = image_size
  protos = species_prototypes(num_super, fine_per_super, hue_spread)
  fine = rng.permutation(np.repeat(np.arange(num_fine, dtype=np.int32), per_class))
  super_ = (fine // fine_per_super).astype(np.int32)

  big = int(round(0.5 * s))
  small = int(round(s / 4))
  margin = max(1, s // 16)
  period = max(2, int(round(s / 8)))

  # Per-image nuisance and jitter, all drawn up front in a fixed order.
  bg_colours = rng.uniform(0.1, 0.9, size=(n, 2, 3))
  bg_angle = rng.uniform(0.0, 2 * np.pi, size=n)
  big_top = rng.integers(margin, s - big - margin + 1, size=(n, 2))
  small_off = rng.integers(1, big - small - 1 + 1, size=(n, 2))
  hue = (protos["hue"][fine] + rng.uniform(-0.01, 0.01, size=n)) % 1.0
  sat = 0.7 + rng.uniform(-0.08, 0.08, size=n)
  val = 0.85 + rng.uniform(-0.08, 0.08, size=n)
  base = rng.uniform(0.75, 0.95, size=(n, 1)) + rng.uniform(-0.04, 0.04, size=(n, 3))
  ink = rng.uniform(0.05, 0.25, size=(n, 1)) + rng.uniform(-0.04, 0.04, size=(n, 3))
  noise_seed = rng.integers(0, 2**63 - 1)

  f32 = np.float32
  bg_colours, base, ink = bg_colours.astype(f32), base.astype(f32), ink.astype(f32)
  tone_a = _hsv_to_rgb(hue, sat, val).astype(f32)  # [n, 3]
  tone_b = _hsv_to_rgb(hue, sat, texture_value * val).astype(f32)
  texture = protos["texture"][fine]
  template = protos["template"][fine]
  images = render_images(
      image_size=s, big=big, small=small, bg_colours=bg_colours, bg_angle=bg_angle,
      big_top=big_top, small_off=small_off, palette=np.stack([tone_a, tone_b, base, ink], axis=1),
      template=template,
      big_patch_code=lambda sl, ry, rx: _texture_mask(texture[sl, None, None], ry, rx, big,
                                                      period).astype(np.int32),
      noise_seed=noise_seed)
  return {
      "image": images,
      "fine_label": fine,
      "super_label": super_,
      "index": np.arange(n, dtype=np.int32),
  }


def _draw_split_v2(rng: np.random.Generator, *, num_super: int, fine_per_super: int,
                   per_class: int, image_size: int, hue_spread: float, texture_value: float,
                   background: str) -> dict[str, np.ndarray]:
  """Version 2: the same class traits on objects that differ per instance (`fgjax.data.scene`)."""
  num_fine = num_super * fine_per_super
  protos = species_prototypes(num_super, fine_per_super, hue_spread)
  fine = rng.permutation(np.repeat(np.arange(num_fine, dtype=np.int32), per_class))
  scenes = scene.draw_instances(
      rng, image_size=image_size, background=background,
      silhouette=np.zeros(len(fine), np.int32),  # every genus is a square: the texture names it
      texture=protos["texture"][fine], hue=protos["hue"][fine], hue_jitter=0.01,
      marking=protos["template"][fine], texture_value=texture_value)
  return {
      "image": scene.render(scenes, image_size),
      "fine_label": fine,
      "super_label": (fine // fine_per_super).astype(np.int32),
      "index": np.arange(len(fine), dtype=np.int32),
  }


def _check_fraction(name: str, value, low: float, high: float) -> float:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
    raise ValueError(f"{name} must be a number, got {value!r}")
  if not low < float(value) < high:
    raise ValueError(f"{name} must be in ({low}, {high}), got {value}")
  return float(value)


def make_hierarchy(*, num_super: int = 6, fine_per_super: int = 6, train_per_class: int = 80,
                   test_per_class: int = 20, image_size: int = 32, seed: int = 0,
                   hue_spread: float = 0.55, texture_value: float = 0.75,
                   hierarchy_names: bool = False, version: int = 2,
                   background: str = "tinted") -> dict:
  """Generates the *hierarchy* data set (see the module docstring for what encodes what).

  The argument names and the returned layout are those of `synthetic.make_patches`
  (super = genus, fine = species), so the two are interchangeable in a pipeline.

  Args:
    num_super: number of genera G, in [2, 8] (one texture each).
    fine_per_super: species per genus K, in [2, 8] (one ink template each).
    train_per_class: training images per species (>= 1).
    test_per_class: test images per species (>= 1).
    image_size: side S of the square images, >= 16.
    seed: non-negative int; the same seed gives the same arrays, bit for bit.
    hue_spread: half-width of a genus's hue range in units of the genus spacing
      ``1 / G``, in (0, 1). Above 0.5 neighbouring genera overlap in hue (default
      0.55); below 0.5 the hue alone separates the genera.
    texture_value: value (brightness) of the texture's second tone relative to
      the object colour, in (0, 1): closer to 1 is a subtler genus texture.
    hierarchy_names: also return genus/species aliases of the super/fine labels.
    version: 2 (default): the class traits above on objects that differ per
      instance (rotation, shear, texture period and phase, the marking's place,
      size and stroke: `fgjax.data.scene`) on ``background``; 1: the first
      generator (fixed prototypes on a random gradient), kept for old runs.
    background: ``'tinted'`` (default), ``'blank'`` or ``'gradient'``
      (`scene.BACKGROUNDS`); version 1 requires ``'gradient'``.

  Returns:
    ``{'train': split, 'test': split, 'num_fine_classes': int, 'num_super_classes':
    int, 'fine_to_super': int32 [F], 'fine_names': list[str], 'super_names':
    list[str]}``. Each split holds ``'image'`` uint8 [N, S, S, 3] and
    ``'fine_label'`` (species), ``'super_label'`` (genus), ``'index'`` (position in
    the split), all int32 [N], with ``N = F * per_class``, balanced exactly over
    species and shuffled. Names are ``'genus{g}'`` and ``'genus{g}_species{j}'``.
    With ``hierarchy_names`` each split also holds ``'genus_label'`` /
    ``'species_label'`` and the top level ``'num_genus_classes'`` /
    ``'num_species_classes'``.

  Raises:
    ValueError: naming the argument, when an argument is out of range.
  """
  num_super = _check_int("num_super", num_super, 2, len(GENUS_TEXTURE_NAMES))
  fine_per_super = _check_int("fine_per_super", fine_per_super, 2, MAX_SPECIES_PER_GENUS)
  train_per_class = _check_int("train_per_class", train_per_class, 1)
  test_per_class = _check_int("test_per_class", test_per_class, 1)
  image_size = _check_int("image_size", image_size, 16)
  seed = _check_int("seed", seed, 0)
  hue_spread = _check_fraction("hue_spread", hue_spread, 0.0, 1.0)
  texture_value = _check_fraction("texture_value", texture_value, 0.0, 1.0)
  if not isinstance(hierarchy_names, (bool, np.bool_)):
    raise ValueError(f"hierarchy_names must be a bool, got {hierarchy_names!r}")
  version, background = check_version(version, background)

  train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
  common = dict(num_super=num_super, fine_per_super=fine_per_super, image_size=image_size,
                hue_spread=hue_spread, texture_value=texture_value)
  draw = functools.partial(_draw_split_v2, background=background) if version == 2 else _draw_split
  splits = {
      "train": draw(np.random.default_rng(train_seq), per_class=train_per_class, **common),
      "test": draw(np.random.default_rng(test_seq), per_class=test_per_class, **common),
  }
  num_fine = num_super * fine_per_super
  out = dict(splits)
  out["num_fine_classes"] = num_fine
  out["num_super_classes"] = num_super
  out["fine_to_super"] = (np.arange(num_fine, dtype=np.int32) // fine_per_super).astype(np.int32)
  out["super_names"] = [f"genus{g}" for g in range(num_super)]
  out["fine_names"] = [f"genus{s // fine_per_super}_species{s % fine_per_super}"
                       for s in range(num_fine)]
  if hierarchy_names:
    for split in splits.values():
      split["genus_label"] = split["super_label"]
      split["species_label"] = split["fine_label"]
    out["num_genus_classes"] = num_super
    out["num_species_classes"] = num_fine
  return out
