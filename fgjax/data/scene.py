"""The drawing of the embedded image data sets, version 2: objects that differ per instance.

`fgjax.data.synthetic` (*patches*) and `fgjax.data.hierarchy` (*hierarchy*) both
draw one *object* on a *background*; the object carries a small *marking*. The
generators decide what is a class trait (the object's silhouette, texture and hue,
the marking's shape); this module draws the scene and the variation of every
single instance, which is the same for every class.

Design rules (the reasons for version 2; version 1 broke the first two):

1. **Every instance differs in the object itself**, in ways that survive the SSL
   augmentation (random resized crop, colour jitter, grayscale, horizontal flip),
   as real birds or cars do: the object's rotation, shear, aspect ratio, texture
   period and texture phase, and the marking's place on the object, its size
   relative to the object and its stroke width. In version 1 the object of a
   class was a fixed prototype: the only per-image identity that survived the
   augmentation was the background, so instance discrimination learned the
   background.
2. **The nuisance is one the augmentation can remove.** The default background
   (``'tinted'``) is a flat blue-grey, and the whole image -- object and
   background together -- gets a random colour cast (brightness, contrast and
   saturation factors in 1 +- 0.2, hue shift +- 0.05): exactly the operations of
   colour jitter, inside the range of the CPU recipes' jitter, so a model that is
   invariant to the jitter is invariant to the cast. A nuisance that varies one
   part of the image *against* another (a background colour independent of the
   object's) survives any global jitter, and instance discrimination learns it:
   measured with a first draft of version 2, whose background brightness varied
   on its own, MoCo's features predicted that brightness with R^2 = 0.95 and no
   class better than at random init. Likewise the object's position and size vary
   little (+-5 % of the side, +-8 % of the size): a larger jitter of the position
   was the next identity MoCo learned (R^2 0.73), since crops do not remove it.
   ``'blank'`` is the Base-Indi paper's setting: a constant grey, no cast, no
   noise. ``'gradient'`` is version 1's nuisance: a ramp between two random
   colours (each channel uniform in [0.1, 0.9]) along a random direction, which
   no colour jitter removes (the hard setting).
3. **The class traits are larger than the instance variation** where the class
   must stay recognisable: rotations stay within +-15 degrees (so horizontal and
   vertical bars, or a plus and an X, never swap), every marking shape is
   symmetric under a horizontal flip (flip augmentation never changes a class),
   and the super-class's texture is drawn at high contrast, the fine class's
   marking at a lower one (the fine-grained premise: the fine signal is the
   smaller one).

Per-instance variation (uniform draws; S = image side in pixels, lengths of the
object in units of its half-size h):

===================  =====================================================
object centre        image centre + [-0.05, 0.05] * S on each axis
object half-size h   [0.24, 0.28] * S (a 15-18 px object at S = 32)
aspect ratio         width / height in [0.9, 1.11]
rotation             [-15, 15] degrees
shear                [-0.15, 0.15]
texture period       [0.45, 0.65] h, random phase on both axes
marking centre       object centre + [-0.08, 0.08] h on each axis
marking half-size    [0.38, 0.48] h (a 5-9 px marking at S = 32)
stroke width         [0.35, 0.6] of the marking's half-size
colour cast          ``'tinted'`` only: brightness, contrast, saturation x [0.8, 1.2],
                     hue + [-0.05, 0.05], of the whole image
===================  =====================================================

Fixed: the object's first tone (saturation 0.7, value 0.85, the hue the
generator gives), its texture tone (``texture_value`` of that value), the
marking's base (grey 0.8) and ink (grey 0.25), the 'tinted' background colour.

Pixels are rendered at ``supersampling(S)`` samples per pixel side and averaged
(anti-aliasing: rotated strokes of one or two pixels stay readable), then pixel
noise is added and the image rounded to uint8.
"""

from __future__ import annotations

import dataclasses

import numpy as np


__all__ = ["BACKGROUNDS", "MARKING_NAMES", "SILHOUETTE_NAMES", "Scenes", "draw_instances", "render",
           "supersampling"]

BACKGROUNDS = ("tinted", "blank", "gradient")
SILHOUETTE_NAMES = ("square", "disc", "diamond", "cross")
# Marking shapes, one per fine class within a super-class (same order and names as
# version 1's 8x8 templates). Every one is symmetric under s -> -s (horizontal flip).
MARKING_NAMES = ("hbars", "vbars", "plus", "frame", "x", "centre_block", "t", "inverted_t")
# Object textures (version 1's four, then the hierarchy's four more).
TEXTURE_NAMES = ("solid", "hstripes", "vstripes", "checker", "dots", "rim", "crosshatch", "rings")

_NOISE_STD = {"tinted": 0.03, "blank": 0.0, "gradient": 0.04}
_LUMA = (0.2989, 0.587, 0.114)  # torchvision's grayscale weights
BACKGROUND_COLOUR = (0.43, 0.46, 0.5)  # 'tinted': a flat blue-grey (HSV 0.6, 0.15, 0.5)
# 'tinted' colour cast of the whole image: brightness, contrast, saturation factors
# in 1 +- CAST[i], hue shift +- CAST[3]: half of MoCo v2's colour jitter (0.4, 0.4, 0.4, 0.1).
CAST = (0.2, 0.2, 0.2, 0.05)
OBJECT_SATURATION, OBJECT_VALUE = 0.7, 0.85  # the object's first tone (its hue: the generator's)
MARKING_BASE, MARKING_INK = 0.8, 0.25  # greys of the marking
_CHUNK_SAMPLES = 512 * 96 * 96  # sub-pixel samples drawn at once: bounds memory (~20 MB per array)


def supersampling(image_size: int) -> int:
  """Samples per pixel side: 4 at S <= 24, 3 at S = 32, 2 up to S = 64, 1 from S = 192."""
  return int(min(4, max(1, round(96 / image_size))))


@dataclasses.dataclass
class Scenes:
  """Everything that decides the pixels of ``n`` images (arrays of length n).

  Lengths are in pixels (``centre``, ``half_size``) or in units of the object's
  half-size (marking and texture fields); angles in radians; colours RGB in [0, 1].
  """

  background: str
  bg_colours: np.ndarray  # [n, 2, 3] the two ends of the background ramp
  bg_angle: np.ndarray  # [n] direction of the ramp
  cast: np.ndarray  # [n, 4] colour cast of the whole image (brightness, contrast, saturation, hue)
  centre: np.ndarray  # [n, 2] (y, x)
  half_size: np.ndarray  # [n]
  aspect: np.ndarray  # [n] width / height
  rotation: np.ndarray  # [n]
  shear: np.ndarray  # [n]
  silhouette: np.ndarray  # [n] index into SILHOUETTE_NAMES
  texture: np.ndarray  # [n] index into TEXTURE_NAMES
  texture_period: np.ndarray  # [n]
  texture_phase: np.ndarray  # [n, 2]
  tone_a: np.ndarray  # [n, 3]
  tone_b: np.ndarray  # [n, 3]
  marking: np.ndarray  # [n] index into MARKING_NAMES
  marking_centre: np.ndarray  # [n, 2] (b, a) in object units
  marking_half_size: np.ndarray  # [n]
  stroke: np.ndarray  # [n] stroke width in units of the marking's half-size
  marking_base: np.ndarray  # [n, 3]
  marking_ink: np.ndarray  # [n, 3]
  noise_seed: int


def hsv_to_rgb(h, s, v):
  """NumPy HSV -> RGB on arrays of any (equal) shape, all in [0, 1]. Returns [..., 3]."""
  i = np.floor(h * 6.0)
  f = h * 6.0 - i
  i = i.astype(np.int64) % 6
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  r = np.choose(i, [v, q, p, p, t, v])
  g = np.choose(i, [t, v, v, q, p, p])
  b = np.choose(i, [p, p, t, v, v, q])
  return np.stack([r, g, b], axis=-1)


def draw_instances(rng: np.random.Generator, *, image_size: int, background: str,
                   silhouette: np.ndarray, texture: np.ndarray, hue: np.ndarray,
                   marking: np.ndarray, hue_jitter: float = 0.0,
                   texture_value: float = 0.6) -> Scenes:
  """Draws the per-instance variation (module docstring table) around the class traits.

  Args:
    rng: the split's generator; draws happen in a fixed order.
    image_size: S.
    background: one of ``BACKGROUNDS``.
    silhouette, texture, marking: int ``[n]`` class traits of each image.
    hue: ``[n]`` the centre of each image's object hue, in [0, 1).
    hue_jitter: the object hue is ``hue`` + uniform(-hue_jitter, hue_jitter).
    texture_value: value of the texture's second tone relative to the first.

  Returns:
    The ``Scenes`` of the n images.
  """
  if background not in BACKGROUNDS:
    raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
  n = len(hue)
  s = float(image_size)
  u = lambda lo, hi, size=n: rng.uniform(lo, hi, size=size)
  # The object's pose and shape (instance identity that survives aug+).
  centre = s / 2 + u(-0.05, 0.05, (n, 2)) * s
  half_size = u(0.24, 0.28) * s
  aspect = np.exp(u(np.log(0.9), np.log(1 / 0.9)))
  rotation = np.deg2rad(u(-15.0, 15.0))
  shear = u(-0.15, 0.15)
  texture_period = u(0.45, 0.65)
  texture_phase = u(0.0, 1.0, (n, 2))  # in periods
  marking_centre = u(-0.08, 0.08, (n, 2))
  marking_half_size = u(0.38, 0.48)
  stroke = u(0.35, 0.6)
  obj_hue = (np.asarray(hue, np.float64) + (u(-hue_jitter, hue_jitter) if hue_jitter else 0.0)) % 1.0
  # The nuisance: the background, and on 'tinted' a colour cast of the whole image.
  if background == "gradient":
    bg_colours = u(0.1, 0.9, (n, 2, 3))
  else:
    colour = BACKGROUND_COLOUR if background == "tinted" else (0.5, 0.5, 0.5)
    bg_colours = np.broadcast_to(np.asarray(colour, np.float64), (n, 2, 3)).copy()
  bg_angle = u(0.0, 2 * np.pi)
  if background == "tinted":
    cast = np.stack([u(1 - CAST[0], 1 + CAST[0]), u(1 - CAST[1], 1 + CAST[1]),
                     u(1 - CAST[2], 1 + CAST[2]), u(-CAST[3], CAST[3])], axis=1)
  else:
    cast = np.tile([1.0, 1.0, 1.0, 0.0], (n, 1))
  noise_seed = int(rng.integers(0, 2**63 - 1))
  ones = np.ones(n)
  return Scenes(
      background=background, bg_colours=bg_colours, bg_angle=bg_angle, cast=cast, centre=centre,
      half_size=half_size, aspect=aspect, rotation=rotation, shear=shear,
      silhouette=np.asarray(silhouette, np.int32), texture=np.asarray(texture, np.int32),
      texture_period=texture_period, texture_phase=texture_phase,
      tone_a=hsv_to_rgb(obj_hue, OBJECT_SATURATION * ones, OBJECT_VALUE * ones),
      tone_b=hsv_to_rgb(obj_hue, OBJECT_SATURATION * ones, texture_value * OBJECT_VALUE * ones),
      marking=np.asarray(marking, np.int32), marking_centre=marking_centre,
      marking_half_size=marking_half_size, stroke=stroke,
      marking_base=np.full((n, 3), MARKING_BASE), marking_ink=np.full((n, 3), MARKING_INK),
      noise_seed=noise_seed)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
  """NumPy RGB -> HSV, ``[..., 3]`` in [0, 1] (the inverse of :func:`hsv_to_rgb`)."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  maxc, minc = rgb.max(-1), rgb.min(-1)
  v = maxc
  delta = maxc - minc
  safe = np.where(delta > 0, delta, 1.0)
  s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1.0), 0.0)
  rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
  h = np.where(r == maxc, bc - gc, np.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
  h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
  return np.stack([h, s, v], axis=-1)


def colour_cast(images: np.ndarray, cast: np.ndarray) -> np.ndarray:
  """Brightness, contrast, saturation and hue of whole images, in that order (float [m, H, W, 3]).

  The same operations as colour jitter (torchvision's definitions: contrast and
  saturation blend with the grey image or its mean, every step clipped to [0, 1]),
  so an augmentation with at least these ranges can undo the cast. ``cast``:
  ``[m, 4]`` factors (brightness, contrast, saturation) and hue shift.
  """
  f = lambda k: cast[:, k, None, None, None].astype(images.dtype)
  luma = lambda x: (x @ np.asarray(_LUMA, images.dtype))[..., None]
  x = np.clip(images * f(0), 0, 1)
  x = np.clip((x - luma(x).mean(axis=(1, 2), keepdims=True)) * f(1) + luma(x).mean(axis=(1, 2), keepdims=True), 0, 1)
  x = np.clip(luma(x) + (x - luma(x)) * f(2), 0, 1)
  hsv = rgb_to_hsv(x)
  hsv[..., 0] = (hsv[..., 0] + cast[:, 3, None, None]) % 1.0
  return hsv_to_rgb(hsv[..., 0], hsv[..., 1], hsv[..., 2]).astype(images.dtype)


def _by_kind(kind: np.ndarray, shapes: tuple, *arrays: np.ndarray) -> np.ndarray:
  """``shapes[kind[i]](*arrays[i])`` for every image i, each shape evaluated on its images only.

  ``kind``: an int scalar, or ``[m, 1, 1]`` with ``arrays`` ``[m, ...]`` (broadcastable).
  """
  if np.ndim(kind) == 0:
    return shapes[int(kind)](*arrays)
  kinds = np.asarray(kind).reshape(-1)
  shape = np.broadcast_shapes(*(x.shape for x in arrays))
  out = np.zeros(shape, bool)
  for k in np.unique(kinds):
    idx = np.nonzero(kinds == k)[0]
    out[idx] = shapes[int(k)](*(x[idx] for x in arrays))
  return out


# Silhouettes in object coordinates (the square is |a|, |b| <= 1).
_SILHOUETTES = (
    lambda a, b: np.maximum(np.abs(a), np.abs(b)) <= 1.0,  # square
    lambda a, b: a * a + b * b <= 1.1,  # disc of about the square's area
    lambda a, b: np.abs(a) + np.abs(b) <= 1.35,  # diamond
    lambda a, b: (np.maximum(np.abs(a), np.abs(b)) <= 1.0)
    & (np.minimum(np.abs(a), np.abs(b)) <= 0.6),  # cross
)


def _silhouette_mask(kind: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Inside the object (``SILHOUETTE_NAMES[kind]``), in object coordinates."""
  return _by_kind(kind, _SILHOUETTES, a, b)


def _stripes(x, period, phase):
  return ((x / period + phase) % 1.0) >= 0.5


# Textures: where the object shows its second tone; (a, b, period, phase_b, phase_a).
# Every texture is symmetric under a horizontal flip up to its phase.
_TEXTURES = (
    lambda a, b, p, pb, pa: np.zeros(np.broadcast_shapes(a.shape, b.shape), bool),  # solid
    lambda a, b, p, pb, pa: _stripes(b, p, pb),  # horizontal stripes
    lambda a, b, p, pb, pa: _stripes(a, p, pa),  # vertical stripes
    lambda a, b, p, pb, pa: _stripes(b, p, pb) ^ _stripes(a, p, pa),  # checker
    lambda a, b, p, pb, pa: ~_stripes(b, p, pb) & ~_stripes(a, p, pa),  # dots
    lambda a, b, p, pb, pa: np.maximum(np.abs(a), np.abs(b)) >= 0.7,  # rim: a darker margin
    lambda a, b, p, pb, pa: ((((a + b) / p + pa) % 1.0) < 0.3)
    | ((((a - b) / p + pb) % 1.0) < 0.3),  # cross-hatch: diagonal lines both ways
    lambda a, b, p, pb, pa: _stripes(np.maximum(np.abs(a), np.abs(b)), p, pb),  # rings
)


def _texture_mask(kind: np.ndarray, a: np.ndarray, b: np.ndarray, period: np.ndarray,
                  phase_b: np.ndarray, phase_a: np.ndarray) -> np.ndarray:
  """Where the object shows its second tone (``TEXTURE_NAMES[kind]``)."""
  return _by_kind(kind, _TEXTURES, a, b, period, phase_b, phase_a)


def _x_shape(s, t, w):
  reach = w / 2 * np.sqrt(2)
  return (np.abs(s - t) <= reach) | (np.abs(s + t) <= reach)


# Marking shapes in marking coordinates (|s|, |t| <= 1), stroke width w; each is
# symmetric under s -> -s (a horizontal flip keeps the class).
_MARKINGS = (
    lambda s, t, w: np.abs(np.abs(t) - 0.5) <= w / 2,  # hbars: two horizontal bars
    lambda s, t, w: np.abs(np.abs(s) - 0.5) <= w / 2,  # vbars
    lambda s, t, w: (np.abs(t) <= w / 2) | (np.abs(s) <= w / 2),  # plus
    lambda s, t, w: np.maximum(np.abs(s), np.abs(t)) >= 1.0 - w,  # frame
    _x_shape,  # x
    lambda s, t, w: np.maximum(np.abs(s), np.abs(t)) <= 0.25 + w,  # centre block
    lambda s, t, w: (t <= -1.0 + w) | (np.abs(s) <= w / 2),  # t
    lambda s, t, w: (t >= 1.0 - w) | (np.abs(s) <= w / 2),  # inverted t
)


def _marking_ink(kind: np.ndarray, s: np.ndarray, t: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Ink of the marking ``MARKING_NAMES[kind]`` (the marking is |s|, |t| <= 1, stroke ``w``)."""
  return _by_kind(kind, _MARKINGS, s, t, w)


def render(scenes: Scenes, image_size: int) -> np.ndarray:
  """Draws the images: uint8 ``[n, S, S, 3]`` (deterministic given ``scenes``)."""
  s = image_size
  ss = supersampling(s)
  n = len(scenes.half_size)
  f32 = np.float32
  # Sample positions in pixel units (pixel i covers [i, i + 1)).
  grid = (np.arange(s * ss, dtype=f32) + f32(0.5)) / f32(ss)
  yy, xx = np.meshgrid(grid, grid, indexing="ij")
  images = np.empty((n, s, s, 3), np.uint8)
  noise_rng = np.random.default_rng(scenes.noise_seed)
  chunk = max(1, _CHUNK_SAMPLES // (s * s * ss * ss))
  col = lambda x, sl: np.asarray(x[sl], f32)[:, None, None]  # [m] -> [m, 1, 1]

  for lo in range(0, n, chunk):
    sl = slice(lo, min(n, lo + chunk))
    m = sl.stop - sl.start
    # Background: a ramp between two colours along a direction, t in [0, 1].
    direction = np.stack([np.sin(scenes.bg_angle[sl]), np.cos(scenes.bg_angle[sl])], -1).astype(f32)
    rel = np.stack([yy, xx], -1) / f32(s) - f32(0.5)
    ramp = np.einsum("hwk,mk->mhw", rel, direction) / np.abs(direction).sum(-1)[:, None, None] + f32(0.5)
    c0 = np.asarray(scenes.bg_colours[sl, 0], f32)[:, None, None]
    c1 = np.asarray(scenes.bg_colours[sl, 1], f32)[:, None, None]
    img = c0 + (c1 - c0) * ramp[..., None]  # [m, H, W, 3]

    # Object coordinates: translate, rotate by -rotation, un-shear, scale by the half-sizes.
    dy = yy[None] - col(scenes.centre[:, 0], sl)
    dx = xx[None] - col(scenes.centre[:, 1], sl)
    cos, sin = np.cos(col(scenes.rotation, sl)), np.sin(col(scenes.rotation, sl))
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    u = u - col(scenes.shear, sl) * v
    h = col(scenes.half_size, sl)
    root = np.sqrt(col(scenes.aspect, sl))
    a, b = u / (h * root), v * root / h  # width h*sqrt(aspect), height h/sqrt(aspect)
    inside = _silhouette_mask(col(scenes.silhouette, sl), a, b)
    second = _texture_mask(col(scenes.texture, sl), a, b, col(scenes.texture_period, sl),
                           col(scenes.texture_phase[:, 0], sl), col(scenes.texture_phase[:, 1], sl))
    # Marking coordinates.
    mh = col(scenes.marking_half_size, sl)
    ms = (a - col(scenes.marking_centre[:, 1], sl)) / mh
    mt = (b - col(scenes.marking_centre[:, 0], sl)) / mh
    in_marking = inside & (np.maximum(np.abs(ms), np.abs(mt)) <= 1.0)
    inked = _marking_ink(col(scenes.marking, sl), ms, mt, col(scenes.stroke, sl))

    code = np.where(in_marking, 2 + inked, second.astype(np.int32))  # 0 A, 1 B, 2 base, 3 ink
    palette = np.stack([scenes.tone_a[sl], scenes.tone_b[sl], scenes.marking_base[sl],
                        scenes.marking_ink[sl]], axis=1).astype(f32)  # [m, 4, 3]
    code = code + 4 * np.arange(m, dtype=np.int32)[:, None, None]
    img = np.where(inside[..., None], palette.reshape(4 * m, 3)[code], img)
    img = img.reshape(m, s, ss, s, ss, 3).mean(axis=(2, 4))  # anti-aliasing
    if scenes.background == "tinted":
      img = colour_cast(img, scenes.cast[sl])
    noise = _NOISE_STD[scenes.background]
    if noise:
      img += f32(noise) * noise_rng.standard_normal(size=img.shape, dtype=f32)
    img = np.clip(img * f32(255.0) + f32(0.5), 0, 255)  # + 0.5, truncate: rounds
    images[sl] = img.astype(np.uint8)
  return images
