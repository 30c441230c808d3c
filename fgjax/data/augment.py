"""Image augmentation on device, in pure JAX: MoCo v2 "aug+" and a simple crop + flip.

Every function takes float32 images in [0, 1], channels last, and a `jax.random` key,
so a run is reproducible from its seed and the augmentation can sit inside a jitted
training step. Batched entry points draw all the uniforms they need in ONE
`jax.random.uniform(rng, (B, n))` call (each separate random call costs ~1 s of compile
time on CPU) and `jax.vmap` a per-example function over the rows; per-example decisions
("apply with probability p") are `jnp.where` selections, so every branch is computed and
there is no data-dependent control flow.

`mocov2_augment` follows the MoCo v2 training transform (official code, ``aug+``)::

  RandomResizedCrop(224, scale=(0.2, 1.0))
  RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)
  RandomGrayscale(p=0.2)
  RandomApply([GaussianBlur([0.1, 2.0])], p=0.5)
  RandomHorizontalFlip()

with these documented deviations from torchvision / PIL:

* **RandomResizedCrop.** torchvision's algorithm (10 tries of area scale ~ U(scale),
  aspect ratio log-uniform in ``ratio``, integer box sizes; first box that fits is taken;
  otherwise a centre crop with the ratio clamped to ``ratio``) is reproduced exactly
  in vectorised form: all 10 candidate draws are made and the first valid one picked.
  The box is resized back to HxW with bilinear interpolation
  (`jax.image.scale_and_translate`, half-pixel centres); boxes are never larger than
  the image, so anti-aliasing plays no part. One small difference: at the box border
  the interpolation reads the image pixels just outside the box (torchvision crops
  first and so replicates the box's edge pixels); at the image border it replicates.
* **ColorJitter.** brightness, contrast, saturation and hue factors are drawn as in
  torchvision (U(1 - s, 1 + s) and U(-h, h)) and applied in a random order per example
  (torchvision's ``randperm(4)``); each step clips to [0, 1] as torchvision does for float
  tensors. Hue is a shift of H in HSV space (`rgb_to_hsv` / `hsv_to_rgb`).
* **Grayscale** uses torchvision's luma weights (0.2989, 0.587, 0.114), copied to 3 channels.
* **GaussianBlur.** MoCo v2 blurs 224-px images with PIL radius sigma in [0.1, 2] px.
  Here sigma is drawn in pixels from ``blur_sigma`` as well, but the kernel has an odd
  size of about ``blur_kernel_frac`` (10%) of the image side, at least 3 (SimCLR's
  convention: 23 taps at 224 px, 3 taps at 32 px). On small images the short kernel is
  what keeps the blur *relatively* as mild as at 224 px: at 32 px the blur never reaches
  beyond one neighbour (sigma = 2 becomes roughly a 3x3 box filter), instead of wiping
  out 8-px details. The convolution is separable with reflect padding (torchvision),
  done as two small matrix products per image (`blur_matrix`).
* **Flip** is horizontal (axis W) and is applied right after the crop instead of last.
  This is the same distribution of outputs: colour jitter (per pixel, plus the image
  mean), grayscale and the symmetric reflect-padded blur all commute with a horizontal
  flip. (Flipping the materialised crop keeps XLA from fusing, and so computing twice,
  the colour steps into both branches of a late select.)
* No `Normalize` inside: use `normalize` afterwards (ImageNet statistics by default).

All hyperparameters are static Python values (validated when traced); jit a partial
of the function, e.g. ``jax.jit(functools.partial(mocov2_augment, blur_prob=0.0))``.
A probability of exactly 0 removes its step from the graph.

Cost (XLA:CPU, 2 shared cores, images [128, 32, 32, 3], jitted, after warm-up):
`mocov2_augment` ~10-15 ms per batch (two views ~20-28 ms), `simple_augment` ~0.4 ms;
compiling aug+ takes ~3 s.
"""

from __future__ import annotations

import math
from typing import Any
from typing import Sequence

import jax
import jax.numpy as jnp


__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "normalize", "denormalize",
    "mocov2_augment", "simple_augment",
    "random_resized_crop_box", "resized_crop", "color_jitter", "adjust_brightness",
    "adjust_contrast", "adjust_saturation", "adjust_hue", "rgb_to_hsv", "hsv_to_rgb",
    "rgb_to_grayscale", "gaussian_blur", "gaussian_kernel", "blur_matrix", "blur_kernel_size",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_LUMA = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights.
_CROP_TRIES = 10  # torchvision's RandomResizedCrop.get_params.


# ----------------------------------------------------------------------------- helpers


def normalize(images: jax.Array, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> jax.Array:
  """(images - mean) / std over the last (channel) axis. images: [..., C]."""
  mean = jnp.asarray(mean, images.dtype)
  std = jnp.asarray(std, images.dtype)
  return (images - mean) / std


def normalize_uint8(images: Any) -> jax.Array:
  """uint8 images ``[..., H, W, 3]`` -> the models' input: float32, ImageNet-normalised."""
  return normalize(jnp.asarray(images, jnp.float32) / 255.0)


def denormalize(images: jax.Array, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> jax.Array:
  """Inverse of `normalize`: images * std + mean. images: [..., C]."""
  mean = jnp.asarray(mean, images.dtype)
  std = jnp.asarray(std, images.dtype)
  return images * std + mean


def _check_prob(name: str, p) -> None:
  if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
    raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")


def _check_range(name: str, pair, *, low: float, high: float | None = None,
                 low_inclusive: bool = False) -> tuple[float, float]:
  try:
    lo, hi = (float(v) for v in pair)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a pair (min, max), got {pair!r}") from None
  too_low = lo < low if low_inclusive else lo <= low
  if too_low or lo > hi or (high is not None and hi > high):
    bound = f"{'>=' if low_inclusive else '>'} {low}" + (f" and <= {high}" if high else "")
    raise ValueError(f"{name} must satisfy min <= max, both {bound}; got {pair!r}")
  return lo, hi


def _check_images(images: jax.Array) -> None:
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must be [B, H, W, 3], got shape {images.shape}")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")


# -------------------------------------------------------------- colour (one image [H, W, 3])


def rgb_to_grayscale(image: jax.Array) -> jax.Array:
  """Luma with torchvision's weights. image: [..., 3] -> [..., 1]."""
  # Channel slices, not a reduction over the last axis: XLA:CPU fuses this with the
  # elementwise code around it (a size-3 minor-axis reduction was ~10x slower).
  return _LUMA[0] * image[..., 0:1] + _LUMA[1] * image[..., 1:2] + _LUMA[2] * image[..., 2:3]


def rgb_to_hsv(image: jax.Array) -> jax.Array:
  """RGB -> HSV, all channels in [0, 1] (hue as a fraction of a turn). [..., 3] -> [..., 3]."""
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  maxc = jnp.maximum(jnp.maximum(r, g), b)
  minc = jnp.minimum(jnp.minimum(r, g), b)
  chroma = maxc - minc
  grey = chroma == 0
  sat = chroma / jnp.where(maxc == 0, 1.0, maxc)
  safe_chroma = jnp.where(grey, 1.0, chroma)
  rc, gc, bc = (maxc - r) / safe_chroma, (maxc - g) / safe_chroma, (maxc - b) / safe_chroma
  # Which channel holds the max decides the sextant (ties: red, then green).
  hue = jnp.where(maxc == r, bc - gc, jnp.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
  hue = hue / 6.0  # In [-1/6, 1); wrap to [0, 1) (jnp.mod is slow on XLA:CPU).
  hue = jnp.where(grey, 0.0, jnp.where(hue < 0.0, hue + 1.0, hue))
  return jnp.stack([hue, sat, maxc], axis=-1)


def hsv_to_rgb(image: jax.Array) -> jax.Array:
  """HSV -> RGB, inverse of `rgb_to_hsv`. [..., 3] -> [..., 3].

  Closed form without branches: channel n in (R, G, B) = (5, 3, 1) is
  v - v * s * clip(min(k, 4 - k), 0, 1) with k = (n + 6h) mod 6.
  """
  h, s, v = image[..., 0], image[..., 1], image[..., 2]
  h6 = 6.0 * (h - jnp.floor(h))  # Hue in turns, wrapped, in sextants [0, 6].

  def channel(n):
    k = n + h6
    k = jnp.where(k >= 6.0, k - 6.0, k)  # (n + 6h) mod 6 without jnp.mod (slow on CPU).
    return v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)

  return jnp.stack([channel(5.0), channel(3.0), channel(1.0)], axis=-1)


def adjust_brightness(image: jax.Array, factor: jax.Array) -> jax.Array:
  """torchvision adjust_brightness: clip(image * factor). image: [H, W, 3], factor: []."""
  return jnp.clip(image * factor, 0.0, 1.0)


def adjust_contrast(image: jax.Array, factor: jax.Array) -> jax.Array:
  """torchvision adjust_contrast: blend with the mean grey level of the image."""
  mean = jnp.mean(rgb_to_grayscale(image))
  return jnp.clip(factor * image + (1.0 - factor) * mean, 0.0, 1.0)


def adjust_saturation(image: jax.Array, factor: jax.Array) -> jax.Array:
  """torchvision adjust_saturation: blend with the per-pixel grey image."""
  return jnp.clip(factor * image + (1.0 - factor) * rgb_to_grayscale(image), 0.0, 1.0)


def adjust_hue(image: jax.Array, factor: jax.Array) -> jax.Array:
  """torchvision adjust_hue: shift H by `factor` turns (factor in [-0.5, 0.5])."""
  hsv = rgb_to_hsv(image)
  hue = hsv[..., 0] + factor
  hsv = hsv.at[..., 0].set(hue - jnp.floor(hue))
  return jnp.clip(hsv_to_rgb(hsv), 0.0, 1.0)


def _blend_step(image: jax.Array, op: jax.Array, factor: jax.Array) -> jax.Array:
  """One of brightness (op 0), contrast (1), saturation (2) or identity (3), as one blend.

  All three are clip(f * x + (1 - f) * base) with base 0, the mean grey level, or the grey
  image; one fused formula avoids computing every branch of a per-example switch.
  """
  grey = rgb_to_grayscale(image)
  # Scalar weights instead of selects over images keep this one fused elementwise loop.
  is_contrast = (op == 1).astype(image.dtype)
  is_saturation = (op == 2).astype(image.dtype)
  base = is_contrast * jnp.mean(grey) + is_saturation * grey
  factor = jnp.where(op == 3, 1.0, factor)
  return jnp.clip(factor * image + (1.0 - factor) * base, 0.0, 1.0)


_JITTER_UNIFORMS = 8  # 4 factors + 4 sort keys for the random order.


def _color_jitter_from_uniform(u: jax.Array, image: jax.Array, *, brightness: float,
                               contrast: float, saturation: float, hue: float) -> jax.Array:
  """`color_jitter` driven by 8 uniforms u: [8] in [0, 1)."""

  def scale(x, lo, hi):
    return lo + (hi - lo) * x

  blend_factors = jnp.stack([
      scale(u[0], max(0.0, 1.0 - brightness), 1.0 + brightness),
      scale(u[1], max(0.0, 1.0 - contrast), 1.0 + contrast),
      scale(u[2], max(0.0, 1.0 - saturation), 1.0 + saturation),
      jnp.ones((), u.dtype),  # Unused: op 3 is the identity in `_blend_step`.
  ])
  hue_factor = scale(u[3], -hue, hue)
  order = jnp.argsort(u[4:8])  # A uniform random permutation of the ops; op 3 is hue.
  hue_pos = jnp.argmax(order == 3)
  padded_order = jnp.concatenate([order, jnp.full((3,), 3, order.dtype)])
  for step in range(3):  # Blend ops that come before hue.
    op = jnp.where(step < hue_pos, order[step], 3)
    image = _blend_step(image, op, blend_factors[op])
  image = adjust_hue(image, hue_factor)
  for step in range(3):  # Blend ops that come after hue.
    op = padded_order[hue_pos + 1 + step]
    image = _blend_step(image, op, blend_factors[op])
  return image


def color_jitter(rng: jax.Array, image: jax.Array, *, brightness: float, contrast: float,
                 saturation: float, hue: float) -> jax.Array:
  """torchvision ColorJitter on one image [H, W, 3]: factors and order drawn from `rng`.

  Brightness, contrast and saturation factors ~ U(max(0, 1 - s), 1 + s); hue ~ U(-h, h);
  the four adjustments run in a random order (torchvision's ``randperm(4)``). A strength
  of 0 gives the factor that leaves the image unchanged (up to float rounding for hue).

  The expensive hue step (via HSV) runs once: the permutation is split into the blend
  steps before hue and those after it, each a fixed run of 3 steps padded with identity.
  """
  u = jax.random.uniform(rng, (_JITTER_UNIFORMS,), jnp.float32)
  return _color_jitter_from_uniform(u, image, brightness=brightness, contrast=contrast,
                                    saturation=saturation, hue=hue)


# ------------------------------------------------------------- geometry (one image [H, W, 3])


_CROP_UNIFORMS = 2 * _CROP_TRIES + 2  # Areas, log-ratios, top, left.


def _crop_box_from_uniform(u: jax.Array, height: int, width: int, *,
                           scale: tuple[float, float], ratio: tuple[float, float]) -> jax.Array:
  """`random_resized_crop_box` driven by 22 uniforms u: [22] in [0, 1)."""
  area = height * width
  target_area = area * (scale[0] + (scale[1] - scale[0]) * u[:_CROP_TRIES])
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  aspect = jnp.exp(log_lo + (log_hi - log_lo) * u[_CROP_TRIES:2 * _CROP_TRIES])
  w = jnp.round(jnp.sqrt(target_area * aspect)).astype(jnp.int32)
  h = jnp.round(jnp.sqrt(target_area / aspect)).astype(jnp.int32)
  fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
  first = jnp.argmax(fits)

  # Fallback: the whole image, or the largest centred box with a clamped aspect ratio.
  in_ratio = width / height
  if in_ratio < ratio[0]:
    fb_w, fb_h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    fb_w, fb_h = int(round(height * ratio[1])), height
  else:
    fb_w, fb_h = width, height
  any_fits = jnp.any(fits)
  w = jnp.where(any_fits, w[first], fb_w)
  h = jnp.where(any_fits, h[first], fb_h)
  # Uniform integer offsets in [0, H - h] and [0, W - w] (torchvision's randint).
  top_u, left_u = u[2 * _CROP_TRIES], u[2 * _CROP_TRIES + 1]
  top = jnp.minimum(jnp.floor(top_u * (height - h + 1)).astype(jnp.int32), height - h)
  left = jnp.minimum(jnp.floor(left_u * (width - w + 1)).astype(jnp.int32), width - w)
  top = jnp.where(any_fits, top, (height - fb_h) // 2)
  left = jnp.where(any_fits, left, (width - fb_w) // 2)
  return jnp.stack([top, left, h, w]).astype(jnp.int32)


def random_resized_crop_box(rng: jax.Array, height: int, width: int, *,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> jax.Array:
  """torchvision RandomResizedCrop.get_params, vectorised: returns (top, left, h, w) int32.

  Ten candidates with area ~ U(scale) * H * W and log-uniform aspect ratio w/h are drawn
  at once; the first whose rounded size fits in the image is used, else a centre crop
  with the image's aspect ratio clamped to `ratio`. The offsets are uniform integers.
  """
  u = jax.random.uniform(rng, (_CROP_UNIFORMS,), jnp.float32)
  return _crop_box_from_uniform(u, height, width, scale=scale, ratio=ratio)


def resized_crop(image: jax.Array, box: jax.Array, out_size: int | None = None) -> jax.Array:
  """Crops box (top, left, h, w) from image [H, W, C] and resizes it, bilinear.

  The output is [H, W, C], or [out_size, out_size, C] when ``out_size`` is
  given (real data: the host hands over a larger base image, so a small crop
  keeps its detail instead of being upsampled from the training size).
  """
  out_h, out_w = (image.shape[0], image.shape[1]) if out_size is None else (out_size, out_size)
  box = box.astype(jnp.float32)
  top, left, h, w = box[0], box[1], box[2], box[3]
  scale = jnp.stack([out_h / h, out_w / w])
  translation = -jnp.stack([top, left]) * scale  # Input pixel `top` lands on output 0.
  return jax.image.scale_and_translate(
      image, (out_h, out_w, image.shape[2]), spatial_dims=(0, 1), scale=scale,
      translation=translation, method="linear", antialias=True)


def blur_kernel_size(image_side: int, frac: float = 0.1) -> int:
  """Odd kernel size of about `frac` * side, at least 3 (23 at 224 px, 3 at 32 px)."""
  size = int(frac * image_side)
  size = size if size % 2 == 1 else size + 1
  return max(3, size)


def gaussian_kernel(sigma: jax.Array, size: int) -> jax.Array:
  """Normalised 1-D Gaussian taps at offsets -(size-1)/2 .. (size-1)/2. -> [size]."""
  x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0
  taps = jnp.exp(-0.5 * (x / sigma) ** 2)
  return taps / jnp.sum(taps)


def blur_matrix(sigma: jax.Array, kernel_size: int, length: int) -> jax.Array:
  """The 1-D Gaussian blur of a length-`length` signal with reflect padding, as a matrix.

  Returns [length, length] B with (B @ x)[i] = sum_t taps[t] * x[reflect(i + t - half)],
  where reflect mirrors about the end samples (torchvision's / numpy's "reflect").
  """
  if not 0 <= kernel_size // 2 < length:
    raise ValueError(f"kernel_size {kernel_size} is too large for length {length}")
  taps = gaussian_kernel(sigma, kernel_size)
  src = jnp.arange(length)[:, None] + jnp.arange(kernel_size)[None, :] - kernel_size // 2
  src = jnp.abs(src)
  src = jnp.where(src > length - 1, 2 * (length - 1) - src, src)  # [length, kernel_size]
  one_hot = (src[:, :, None] == jnp.arange(length)).astype(taps.dtype)
  return jnp.einsum("t,itj->ij", taps, one_hot)


def gaussian_blur(image: jax.Array, sigma: jax.Array, kernel_size: int) -> jax.Array:
  """Separable Gaussian blur of image [H, W, C] with reflect padding (torchvision).

  Written as two small matrix products (B_h @ image @ B_w^T) rather than shifted slices:
  XLA keeps a dot as its own kernel, so the colour steps before the blur are computed
  once instead of being fused into (and recomputed for) every tap.
  """
  blur_h = blur_matrix(sigma, kernel_size, image.shape[0])
  blur_w = blur_matrix(sigma, kernel_size, image.shape[1])
  return jnp.einsum("ij,jwc,kw->ikc", blur_h, image, blur_w)


# ----------------------------------------------------------------------- batched entry points


def mocov2_augment(rng: jax.Array, images: jax.Array, *,
                   crop_scale: tuple[float, float] = (0.2, 1.0),
                   crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
                   jitter_strength: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
                   jitter_prob: float = 0.8, grayscale_prob: float = 0.2,
                   blur_prob: float = 0.5, blur_sigma: tuple[float, float] = (0.1, 2.0),
                   blur_kernel_frac: float = 0.1, flip_prob: float = 0.5,
                   out_size: int | None = None) -> jax.Array:
  """MoCo v2 "aug+" on a batch, one independent draw per example (see module docstring).

  Args:
    rng: a `jax.random` key; the same key gives the same output.
    images: float [B, H, W, 3] in [0, 1].
    crop_scale, crop_ratio: RandomResizedCrop area fraction and aspect ratio (w/h) ranges.
    jitter_strength: ColorJitter (brightness, contrast, saturation, hue).
    jitter_prob, grayscale_prob, blur_prob, flip_prob: probabilities of each step.
    blur_sigma: range of the Gaussian blur sigma, in pixels.
    blur_kernel_frac: blur kernel size as a fraction of the image side (odd, >= 3).
    out_size: side of the output (the crop is resized to it); None: the input's
      H x W.

  Returns:
    float32 [B, H, W, 3] (or [B, out_size, out_size, 3]) in [0, 1].
  """
  _check_images(images)
  _check_range("crop_scale", crop_scale, low=0.0, high=1.0)
  _check_range("crop_ratio", crop_ratio, low=0.0)
  _check_range("blur_sigma", blur_sigma, low=0.0)
  if len(jitter_strength) != 4 or any(s < 0 for s in jitter_strength):
    raise ValueError("jitter_strength must be 4 non-negative numbers (brightness, contrast, "
                     f"saturation, hue), got {jitter_strength!r}")
  if jitter_strength[3] > 0.5:
    raise ValueError(f"jitter_strength hue must be <= 0.5, got {jitter_strength[3]}")
  for name, p in (("jitter_prob", jitter_prob), ("grayscale_prob", grayscale_prob),
                  ("blur_prob", blur_prob), ("flip_prob", flip_prob)):
    _check_prob(name, p)
  if not 0.0 < blur_kernel_frac <= 1.0:
    raise ValueError(f"blur_kernel_frac must be in (0, 1], got {blur_kernel_frac!r}")

  images = images.astype(jnp.float32)
  height, width = images.shape[1], images.shape[2]
  if out_size is not None and int(out_size) < 1:
    raise ValueError(f"out_size must be >= 1, got {out_size!r}")
  kernel_size = blur_kernel_size(min(height, width) if out_size is None else int(out_size),
                                 blur_kernel_frac)
  brightness, contrast, saturation, hue = jitter_strength

  # One random draw for the whole batch (each jax.random call costs compile time on
  # CPU); column blocks of `u` drive the steps of one example.
  crop_u = slice(0, _CROP_UNIFORMS)
  jitter_u = slice(crop_u.stop, crop_u.stop + _JITTER_UNIFORMS)
  apply_jitter, apply_grey, apply_blur, blur_u, apply_flip = range(jitter_u.stop,
                                                                   jitter_u.stop + 5)
  num_uniforms = apply_flip + 1

  def one(u, image):
    box = _crop_box_from_uniform(u[crop_u], height, width, scale=crop_scale, ratio=crop_ratio)
    image = resized_crop(image, box, out_size)
    if flip_prob > 0:
      # Flipped here rather than last: jitter, grayscale and the symmetric blur commute
      # with a horizontal flip, and flipping the materialised crop avoids XLA fusing the
      # colour steps into both branches of a late select (2x the work on CPU).
      image = jnp.where(u[apply_flip] < flip_prob, image[:, ::-1], image)
    if jitter_prob > 0:
      jittered = _color_jitter_from_uniform(u[jitter_u], image, brightness=brightness,
                                            contrast=contrast, saturation=saturation, hue=hue)
      image = jnp.where(u[apply_jitter] < jitter_prob, jittered, image)
    if grayscale_prob > 0:
      grey = jnp.broadcast_to(rgb_to_grayscale(image), image.shape)
      image = jnp.where(u[apply_grey] < grayscale_prob, grey, image)
    if blur_prob > 0:
      sigma = blur_sigma[0] + (blur_sigma[1] - blur_sigma[0]) * u[blur_u]
      blurred = gaussian_blur(image, sigma, kernel_size)
      image = jnp.where(u[apply_blur] < blur_prob, blurred, image)
    return jnp.clip(image, 0.0, 1.0)

  u = jax.random.uniform(rng, (images.shape[0], num_uniforms), jnp.float32)
  return jax.vmap(one)(u, images)


def simple_augment(rng: jax.Array, images: jax.Array, *, pad: int = 4,
                   flip_prob: float = 0.5) -> jax.Array:
  """Random crop of the zero-padded image back to H x W, then horizontal flip.

  The CIFAR-style supervised augmentation (torchvision RandomCrop(S, padding=pad) +
  RandomHorizontalFlip). images: float [B, H, W, C] -> float32 [B, H, W, C].
  """
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
  if not isinstance(pad, int) or pad < 0:
    raise ValueError(f"pad must be a non-negative int, got {pad!r}")
  _check_prob("flip_prob", flip_prob)
  images = images.astype(jnp.float32)
  _, height, width, channels = images.shape

  def one(u, image):
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    # Integer offsets uniform in [0, 2 * pad].
    top, left = (jnp.minimum(jnp.floor(u[:2] * (2 * pad + 1)), 2 * pad).astype(jnp.int32))
    image = jax.lax.dynamic_slice(padded, (top, left, 0), (height, width, channels))
    return jnp.where(u[2] < flip_prob, image[:, ::-1], image)

  u = jax.random.uniform(rng, (images.shape[0], 3), jnp.float32)
  return jax.vmap(one)(u, images)
