"""The embedded *patches* data set: a fine-grained toy problem generated from a seed.

Two versions (``make_patches(version=...)``, ``data.version`` in a config, recorded
in every run's ``config.json``):

**Version 2 (the default).** One object per image whose every instance differs
(drawing and instance variation: `fgjax.data.scene`, which also states the design
rules); nested labels as in version 1.

* **Super-class = the object's silhouette and texture** (`super_prototypes`):
  super-class ``c`` has silhouette ``(c // 4) % 4`` of (square, disc, diamond,
  cross) and a two-tone texture, ``c % 4`` of (solid, horizontal stripes, vertical
  stripes, checker) for ``c < 16`` and of (dots, rim, cross-hatch, rings) from
  16 on: up to 32 super-classes. The texture's second tone is the object colour at
  35 % of its value (high contrast). Colour is no class trait: every object is
  orange (hue 0.08) before the image's colour cast.
* **Fine class = the marking's shape**: fine class ``j`` within its super-class
  carries marking ``scene.MARKING_NAMES[j]`` (horizontal bars, vertical bars,
  plus, frame, X, centre block, T, inverted T), a grey-0.25 ink on a grey-0.8
  base, 5-9 px wide at S = 32, on the object.
* ``background``: ``'tinted'`` (default: a flat blue-grey and a colour cast of
  the whole image that colour jitter undoes), ``'blank'`` (the Base-Indi paper's
  blank images) or ``'gradient'`` (version 1's random two-colour ramp, which no
  augmentation removes).

Sanity numbers (default layout 8 x 4 classes, 64 train / 32 test images per
fine class, data seed 0; ``docs/data.md`` has the pictures and the commands):
raw-pixel nearest-class-mean on the test split: super 34.6 % (chance 12.5 %),
fine 20.1 % (chance 3.1 %). The CPU default encoder (quarter-width ResNet-18)
at random init: kNN super 39.6 %, fine 16.2 %; linear probe super 56.3 %, fine
25.4 %. Trained at the CPU defaults (seeds 0-2): MoCo v2 kNN super 66.3 %, fine
39.6 %; SimSiam 78.3 %, 40.7 %. Supervised upper bound (cross-entropy on the fine
classes, seed 0): kNN fine 99.7 %, super 99.9 %.

**Version 1** (``version=1``, ``background='gradient'``; the first generator,
kept so that runs made with it stay reproducible). Every image is a small
scene with an *object* on a nuisance background:

* **Background (nuisance, random per image).** A linear colour gradient between two
  random colours along a random direction, plus i.i.d. Gaussian pixel noise over the
  whole image (std ``0.04`` on the [0, 1] scale). It carries no class information.
* **Big patch = the object; it names the SUPER-class.** A square of side
  ``round(0.5 * S)`` (16 px at S=32) at a jittered position (top-left uniform in
  ``[S//16, S - side - S//16]``, so its centre stays within the middle ~40% of the
  image). Its look is the super-class *prototype*: hue ``c / num_super`` on the HSV
  wheel (saturation 0.75, value 0.85) and a two-tone texture chosen by ``c % 4`` from
  {solid, horizontal stripes, vertical stripes, checkerboard} (period 4 px at S=32;
  the second tone is the same hue at 55% value). Hue, saturation and value are
  perturbed per image (±0.02, ±0.08, ±0.08), so the prototype is a distribution,
  not a constant. Texture keeps super-classes apart under MoCo's colour jitter and
  grayscale; hue keeps classes ``c`` and ``c + 4`` apart.
* **Small patch = a marking on the object; it names the FINE class.** A square of side
  ``round(S / 4)`` (8 px at S=32) that sits **inside** the big patch (1 px margin,
  position jittered within it), like a wing bar on a bird. It has a light base and a
  dark "ink" (random greys per image: base in [0.75, 0.95], ink in [0.05, 0.25], with
  a small random tint), identical in colour statistics for every class. Only the
  *shape* of the ink differs: fine class ``j`` (within its super-class) uses the 8x8
  template ``FINE_TEMPLATE_NAMES[j]`` (horizontal bars, vertical bars, plus, frame, X,
  centre block, T, inverted T), resampled by `fine_templates` for ``S != 32``.

Labels are nested: ``fine_label = super_label * fine_per_super + j``; every fine class
belongs to exactly one super-class (``fine_to_super[f] == f // fine_per_super``).

Why this is *fine-grained*: all fine classes of one super-class share the whole
object look (about 25% of the image area) and differ only in the ink shape of an
8x8 marking (6% of the image area; two templates differ in 20-64 of the 1,024 pixels,
32-44 for the default four), on top of random position and colour nuisance. Raw-pixel
class means barely see it (the marking's position jitter averages the templates away):
a nearest-class-mean classifier on raw pixels gets the super-class right ~57% of the
time (chance 12.5%) but the fine class only ~17% (chance 3.1%; roughly 30% of the
super-class hits, where chance within a super-class is 25%), at 128 / 32 images per
class. A small CNN (6 conv layers) trained with labels on aug+ views reaches ~100% test
accuracy on the 32 fine classes within 400 steps, so the signal survives augmentation.

Choices made so that the signal survives MoCo v2 "aug+":

* The marking sits inside the object, whose centre stays near the image centre, so a
  RandomResizedCrop (area 0.2-1) that shows the object usually shows the marking too.
  The marking is 8 px at S=32 (4 px at the smallest S=16) and crops only enlarge it.
* Every fine template is invariant under a horizontal flip (no diagonal-only strokes,
  no left/right asymmetry, also after resampling), and a flipped super texture is the
  same texture up to phase, so flip augmentation does not merge classes. The templates
  are achromatic shapes and the textures survive grayscale, so colour jitter and
  grayscale do not erase them either.

The class prototypes are fixed (they do not depend on the seed); the seed drives all
per-image randomness. Train and test are drawn from independent streams of the same
seed (``numpy.random.SeedSequence(seed).spawn``), and samples are shuffled within each
split.

Hierarchical naming (for SupCon/HCL): ``make_patches(..., hierarchy_names=True)``
also returns ``genus_label`` / ``species_label`` (aliases of ``super_label`` /
``fine_label``) and ``num_genus_classes`` / ``num_species_classes``.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from fgjax.data import scene


__all__ = [
    "FINE_TEMPLATE_NAMES", "FINE_TEMPLATES", "SUPER_TEXTURE_NAMES", "fine_templates",
    "make_patches",
]

_T = 8  # Template resolution (pixels of the marking at S = 32).


def _fine_templates() -> np.ndarray:
  """The 8x8 binary ink templates, one per fine class within a super-class: [8, 8, 8]."""
  r, c = np.mgrid[0:_T, 0:_T]
  bars = np.isin(r, (1, 2, 5, 6))  # Two 2-px bars, symmetric about both axes.
  mid_r, mid_c = np.isin(r, (3, 4)), np.isin(c, (3, 4))
  templates = [
      bars,  # horizontal bars
      bars.T,  # vertical bars
      mid_r | mid_c,  # plus
      (r < 2) | (r >= _T - 2) | (c < 2) | (c >= _T - 2),  # frame
      (np.abs(r - c) <= 1) | (np.abs(r + c - (_T - 1)) <= 1),  # X
      (r >= 2) & (r < _T - 2) & (c >= 2) & (c < _T - 2),  # centre block
      (r < 2) | mid_c,  # T
      (r >= _T - 2) | mid_c,  # inverted T
  ]
  return np.stack(templates).astype(bool)


FINE_TEMPLATES = _fine_templates()
FINE_TEMPLATE_NAMES = (
    "hbars", "vbars", "plus", "frame", "x", "centre_block", "t", "inverted_t")
SUPER_TEXTURE_NAMES = ("solid", "hstripes", "vstripes", "checker")


def fine_templates(size: int) -> np.ndarray:
  """The fine-class templates resampled to size x size pixels: bool [8, size, size].

  Nearest neighbour at pixel centres, mirrored about the middle so that the resampled
  templates stay invariant under a horizontal flip at every size.
  """
  half = (size + 1) // 2
  first = np.floor((np.arange(half) + 0.5) * _T / size).astype(np.int64)
  idx = np.concatenate([first, (_T - 1) - first[:size - half][::-1]])
  return FINE_TEMPLATES[:, idx][:, :, idx]


_NOISE_STD = 0.04
_CHUNK_PIXELS = 2048 * 32 * 32  # Pixels built at once (2048 images at S=32): bounds memory.


_hsv_to_rgb = scene.hsv_to_rgb  # (version 1 draws with the same conversion)


def _check_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an int, got {value!r}")
  if value < minimum or (maximum is not None and value > maximum):
    bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    raise ValueError(f"{name} must be {bound}, got {value}")
  return int(value)


def check_version(version, background) -> tuple[int, str]:
  """Validates the generator ``version`` and ``background`` (shared with `hierarchy`)."""
  if isinstance(version, (bool, np.bool_)) or version not in VERSIONS:
    raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
  if background not in scene.BACKGROUNDS:
    raise ValueError(f"background must be one of {scene.BACKGROUNDS}, got {background!r}")
  if version == 1 and background != "gradient":
    raise ValueError(f"background {background!r} needs version 2: version 1 draws only its "
                     "random 'gradient' background")
  return int(version), str(background)


def render_images(*, image_size: int, big: int, small: int, bg_colours: np.ndarray,
                  bg_angle: np.ndarray, big_top: np.ndarray, small_off: np.ndarray,
                  palette: np.ndarray, template: np.ndarray,
                  big_patch_code: Callable[[slice, np.ndarray, np.ndarray], np.ndarray],
                  noise_seed: int) -> np.ndarray:
  """Draws the images of a split, in chunks of ``_CHUNK_PIXELS`` (shared by *patches* and *hierarchy*).

  Each image: a background gradient between two colours along a random
  direction; a ``big`` x ``big`` patch at ``big_top`` whose pixels take palette
  colour 0 or 1 by ``big_patch_code``; inside it, at ``small_off``, a ``small`` x
  ``small`` marking of ink template ``template`` (colours 2 = base, 3 = ink);
  Gaussian pixel noise; rounded to uint8.

  Args:
    image_size: S.
    bg_colours: float32 ``[n, 2, 3]``; bg_angle: ``[n]`` radians.
    big_top: ``[n, 2]`` top-left corner of the big patch; small_off: ``[n, 2]``
      offset of the marking inside it.
    palette: float32 ``[n, 4, 3]``: tone A, tone B, marking base, ink.
    template: int ``[n]`` ink template of each image (``fine_templates(small)``).
    big_patch_code: ``(chunk slice, ry [m, S, S], rx [m, S, S]) -> int32 [m, S, S]``
      in {0, 1}, from pixel coordinates relative to the big patch.
    noise_seed: seed of the pixel noise.

  Returns:
    uint8 ``[n, S, S, 3]``.
  """
  s = image_size
  f32 = np.float32
  n = bg_angle.shape[0]
  templates = fine_templates(small)  # [8, small, small]
  yy, xx = np.mgrid[0:s, 0:s].astype(np.int32)
  coords = (np.stack([yy, xx], -1).astype(f32) + 0.5) / s - 0.5  # [s, s, 2], centred
  big_top, small_off = big_top.astype(np.int32), small_off.astype(np.int32)
  images = np.empty((n, s, s, 3), np.uint8)
  noise_rng = np.random.default_rng(noise_seed)
  chunk = max(1, _CHUNK_PIXELS // (s * s))
  for lo in range(0, n, chunk):
    sl = slice(lo, min(n, lo + chunk))
    m = sl.stop - sl.start
    # Background: gradient along a random direction, t in [0, 1] over the image.
    direction = np.stack([np.sin(bg_angle[sl]), np.cos(bg_angle[sl])], -1).astype(f32)
    t = np.einsum("hwk,mk->mhw", coords, direction)
    t = (t / np.abs(direction).sum(-1)[:, None, None] + f32(0.5))[..., None]
    colour_0, colour_1 = bg_colours[sl, 0, None, None], bg_colours[sl, 1, None, None]
    img = colour_0 + (colour_1 - colour_0) * t  # [m, s, s, 3]

    # Big patch: code 0 (tone A) or 1 (tone B).
    ry = yy[None] - big_top[sl, 0, None, None]  # [m, s, s]
    rx = xx[None] - big_top[sl, 1, None, None]
    in_big = (ry >= 0) & (ry < big) & (rx >= 0) & (rx < big)
    code = big_patch_code(sl, ry, rx)

    # Small patch (the marking) inside the big patch: code 2 (base) or 3 (ink).
    sy = ry - small_off[sl, 0, None, None]
    sx = rx - small_off[sl, 1, None, None]
    in_small = (sy >= 0) & (sy < small) & (sx >= 0) & (sx < small)
    inked = templates[template[sl, None, None], np.clip(sy, 0, small - 1), np.clip(sx, 0, small - 1)]
    code = np.where(in_small, 2 + inked, code)

    code += 4 * np.arange(m, dtype=np.int32)[:, None, None]  # Row in the flat palette.
    img = np.where(in_big[..., None], palette[sl].reshape(4 * m, 3)[code], img)
    img += f32(_NOISE_STD) * noise_rng.standard_normal(size=(m, s, s, 3), dtype=f32)
    img *= f32(255.0)
    img += f32(0.5)  # + 0.5, clip, truncate: rounds to the nearest uint8.
    np.clip(img, 0, 255, out=img)
    images[sl] = img.astype(np.uint8)
  return images


def _draw_split(rng: np.random.Generator, *, num_super: int, fine_per_super: int,
                per_class: int, image_size: int) -> dict[str, np.ndarray]:
  """Draws one split: `per_class` images of every fine class, shuffled."""
  num_fine = num_super * fine_per_super
  n = num_fine * per_class
  s = image_size
  fine = rng.permutation(np.repeat(np.arange(num_fine, dtype=np.int32), per_class))
  super_ = (fine // fine_per_super).astype(np.int32)
  j = fine % fine_per_super

  big = int(round(0.5 * s))
  small = int(round(s / 4))
  margin = max(1, s // 16)
  period = max(2, int(round(s / 8)))  # Texture period of the big patch.

  # Per-image nuisance and jitter, all drawn up front in a fixed order.
  bg_colours = rng.uniform(0.1, 0.9, size=(n, 2, 3))
  bg_angle = rng.uniform(0.0, 2 * np.pi, size=n)
  big_top = rng.integers(margin, s - big - margin + 1, size=(n, 2))
  small_off = rng.integers(1, big - small - 1 + 1, size=(n, 2))
  hue = (super_ / num_super + rng.uniform(-0.02, 0.02, size=n)) % 1.0
  sat = 0.75 + rng.uniform(-0.08, 0.08, size=n)
  val = 0.85 + rng.uniform(-0.08, 0.08, size=n)
  base = rng.uniform(0.75, 0.95, size=(n, 1)) + rng.uniform(-0.04, 0.04, size=(n, 3))
  ink = rng.uniform(0.05, 0.25, size=(n, 1)) + rng.uniform(-0.04, 0.04, size=(n, 3))
  noise_seed = rng.integers(0, 2**63 - 1)

  f32 = np.float32
  bg_colours, base, ink = bg_colours.astype(f32), base.astype(f32), ink.astype(f32)
  tone_a = _hsv_to_rgb(hue, sat, val).astype(f32)  # [n, 3]
  tone_b = _hsv_to_rgb(hue, sat, 0.55 * val).astype(f32)
  texture = super_ % len(SUPER_TEXTURE_NAMES)

  half = period // 2

  def big_patch_code(sl, ry, rx):
    """Code 0 (tone A) or 1 (tone B) inside the big patch, by the super-class texture."""
    stripe_h = np.mod(ry, period) >= half
    stripe_v = np.mod(rx, period) >= half
    tex = texture[sl, None, None]
    second = (((tex == 1) & stripe_h) | ((tex == 2) & stripe_v)
              | ((tex == 3) & (stripe_h ^ stripe_v)))
    return second.astype(np.int32)

  images = render_images(
      image_size=s, big=big, small=small, bg_colours=bg_colours, bg_angle=bg_angle,
      big_top=big_top, small_off=small_off, palette=np.stack([tone_a, tone_b, base, ink], axis=1),
      template=j, big_patch_code=big_patch_code, noise_seed=noise_seed)
  return {
      "image": images,
      "fine_label": fine,
      "super_label": super_,
      "index": np.arange(n, dtype=np.int32),
  }


def _draw_split_v2(rng: np.random.Generator, *, num_super: int, fine_per_super: int,
                   per_class: int, image_size: int, background: str) -> dict[str, np.ndarray]:
  """Version 2: one object per image whose instance varies (`fgjax.data.scene`), shuffled."""
  num_fine = num_super * fine_per_super
  fine = rng.permutation(np.repeat(np.arange(num_fine, dtype=np.int32), per_class))
  super_ = (fine // fine_per_super).astype(np.int32)
  protos = super_prototypes(num_super)
  scenes = scene.draw_instances(
      rng, image_size=image_size, background=background, silhouette=protos["silhouette"][super_],
      texture=protos["texture"][super_], hue=np.full(len(fine), OBJECT_HUE),
      marking=fine % fine_per_super, texture_value=0.35)
  return {
      "image": scene.render(scenes, image_size),
      "fine_label": fine,
      "super_label": super_,
      "index": np.arange(len(fine), dtype=np.int32),
  }


def super_prototypes(num_super: int) -> dict[str, np.ndarray]:
  """Version 2's super-class traits (no randomness): what names the super-class.

  Super-class ``c``: silhouette ``(c // 4) % 4`` (square, disc, diamond, cross) and
  texture ``c % 4`` (solid, horizontal stripes, vertical stripes, checker) for
  ``c < 16``, texture ``4 + c % 4`` (dots, rim, cross-hatch, rings) from 16 on:
  32 distinct (silhouette, texture) pairs, all visible in grayscale. Colour is no
  class trait: every object has hue ``OBJECT_HUE`` before the image's colour cast.

  Returns:
    ``{'texture', 'silhouette': int32 [num_super]}`` (indices into
    ``scene.TEXTURE_NAMES`` and ``scene.SILHOUETTE_NAMES``).
  """
  if not 1 <= num_super <= MAX_SUPER_V2:
    raise ValueError(f"num_super must be in [1, {MAX_SUPER_V2}] for version 2, got {num_super}")
  c = np.arange(num_super)
  return {"texture": (c % 4 + 4 * (c >= 16)).astype(np.int32),
          "silhouette": ((c // 4) % 4).astype(np.int32)}


VERSIONS = (1, 2)
MAX_SUPER_V2 = 32  # distinct (silhouette, texture) pairs
OBJECT_HUE = 0.08  # orange, every class: colour is no class trait


def make_patches(*, num_super: int = 8, fine_per_super: int = 4, train_per_class: int = 128,
                 test_per_class: int = 32, image_size: int = 32, seed: int = 0,
                 hierarchy_names: bool = False, version: int = 2,
                 background: str = "tinted") -> dict:
  """Generates the *patches* data set (see the module docstring for what encodes what).

  Args:
    num_super: number of super-classes (>= 2).
    fine_per_super: fine classes per super-class, in [2, 8] (one ink template each).
    train_per_class: training images per fine class (>= 1).
    test_per_class: test images per fine class (>= 1).
    image_size: side S of the square images, >= 16 (the marking is round(S/4) px).
    seed: non-negative int; the same seed gives the same arrays, bit for bit.
    hierarchy_names: also return genus/species aliases of the super/fine labels.
    version: 2 (default) draws objects that differ per instance on the chosen
      ``background`` (`fgjax.data.scene`); 1 draws the first generator (a fixed
      prototype per class on a random gradient, module docstring), kept so that
      runs made with it stay reproducible.
    background: version 2 only: ``'tinted'`` (default), ``'blank'`` or
      ``'gradient'`` (`scene.BACKGROUNDS`); version 1 has only its own gradient
      and requires ``'gradient'``.

  Returns:
    ``{'train': split, 'test': split, 'num_fine_classes': int, 'num_super_classes': int,
    'fine_to_super': int32 [num_fine]}`` where each split holds ``'image'`` uint8
    [N, S, S, 3], ``'fine_label'``, ``'super_label'``, ``'index'`` (position in the
    split), all int32 [N], with N = num_super * fine_per_super * per_class, balanced
    exactly over fine classes and shuffled. With ``hierarchy_names`` each split also
    holds ``'genus_label'`` / ``'species_label'`` and the top level
    ``'num_genus_classes'`` / ``'num_species_classes'``.

  Raises:
    ValueError: naming the argument, when an argument is out of range.
  """
  num_super = _check_int("num_super", num_super, 2)
  fine_per_super = _check_int("fine_per_super", fine_per_super, 2, len(FINE_TEMPLATES))
  train_per_class = _check_int("train_per_class", train_per_class, 1)
  test_per_class = _check_int("test_per_class", test_per_class, 1)
  image_size = _check_int("image_size", image_size, 16)
  seed = _check_int("seed", seed, 0)
  if not isinstance(hierarchy_names, (bool, np.bool_)):
    raise ValueError(f"hierarchy_names must be a bool, got {hierarchy_names!r}")
  version, background = check_version(version, background)
  if version == 2:
    num_super = _check_int("num_super", num_super, 2, MAX_SUPER_V2)

  train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
  common = dict(num_super=num_super, fine_per_super=fine_per_super, image_size=image_size)
  if version == 2:
    draw = functools.partial(_draw_split_v2, background=background)
  else:
    draw = _draw_split
  splits = {
      "train": draw(np.random.default_rng(train_seq), per_class=train_per_class, **common),
      "test": draw(np.random.default_rng(test_seq), per_class=test_per_class, **common),
  }
  num_fine = num_super * fine_per_super
  out = dict(splits)
  out["num_fine_classes"] = num_fine
  out["num_super_classes"] = num_super
  out["fine_to_super"] = (np.arange(num_fine, dtype=np.int32) // fine_per_super).astype(np.int32)
  if hierarchy_names:
    for split in splits.values():
      split["genus_label"] = split["super_label"]
      split["species_label"] = split["fine_label"]
    out["num_genus_classes"] = num_super
    out["num_species_classes"] = num_fine
  return out
