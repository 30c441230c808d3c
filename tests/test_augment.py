"""Tests for fgjax.data.augment (MoCo v2 aug+ and the simple crop + flip, on device)."""

import colorsys
import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.data import augment


OFF = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_prob=0.0, grayscale_prob=0.0,
           blur_prob=0.0, flip_prob=0.0)


def _images(batch=8, size=16, seed=0):
  return jax.random.uniform(jax.random.key(seed), (batch, size, size, 3), jnp.float32)


def _jit_aug(**kwargs):
  return jax.jit(functools.partial(augment.mocov2_augment, **kwargs))


@pytest.fixture(scope="module")
def aug_default():
  """The default aug+, jitted once for the module; every use has images [8, 16, 16, 3],
  so a second trace (a recompilation) fails `test_jit_compiles_once`."""
  return jax.jit(chex.assert_max_traces(augment.mocov2_augment, n=1))


def test_output_shape_dtype_range(aug_default):
  x = _images()
  y = aug_default(jax.random.key(0), x)
  assert y.shape == x.shape and y.dtype == jnp.float32
  assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
  assert not np.allclose(y, x, atol=1e-3)


def test_same_key_same_output_other_key_other_output(aug_default):
  x = _images()
  a = aug_default(jax.random.key(1), x)
  b = aug_default(jax.random.key(1), x)
  c = aug_default(jax.random.key(2), x)
  np.testing.assert_array_equal(a, b)
  # Every example differs (independent draws per key and per example).
  assert np.all(np.abs(np.asarray(a - c)).reshape(len(x), -1).max(-1) > 1e-3)
  # Two copies of one image in one batch get different views.
  twins = aug_default(jax.random.key(3), jnp.stack([x[0]] * 8))
  assert not np.allclose(twins[0], twins[1], atol=1e-3)


def test_jit_compiles_once(aug_default):
  x = _images()
  for seed in range(3):  # Raises if `aug_default` is traced a second time.
    aug_default(jax.random.key(seed), x + 0.01 * seed).block_until_ready()


def test_all_off_is_identity():
  x = _images(size=32)
  np.testing.assert_allclose(_jit_aug(**OFF)(jax.random.key(0), x), x, atol=1e-5)


def test_flip_with_probability_one():
  x = _images()
  y = _jit_aug(**{**OFF, "flip_prob": 1.0})(jax.random.key(0), x)
  np.testing.assert_allclose(y, jnp.flip(x, axis=2), atol=1e-5)


def test_grayscale_with_probability_one():
  x = _images()
  y = _jit_aug(**{**OFF, "grayscale_prob": 1.0})(jax.random.key(0), x)
  np.testing.assert_allclose(y[..., 0], y[..., 1], atol=1e-6)
  np.testing.assert_allclose(y[..., 0], y[..., 2], atol=1e-6)
  want = x @ jnp.asarray([0.2989, 0.587, 0.114])
  np.testing.assert_allclose(y[..., 0], want, atol=1e-5)


def test_grayscale_and_flip_rates():
  """Per-example decisions are taken at the requested rates (binomial, 6 sigma)."""
  n = 1000
  x = _images(batch=n, size=4)
  y = np.asarray(_jit_aug(**{**OFF, "grayscale_prob": 0.2, "flip_prob": 0.5})(
      jax.random.key(1), x))
  x = np.asarray(x)
  grey = np.broadcast_to(x @ np.asarray([0.2989, 0.587, 0.114], np.float32)[:, None], x.shape)
  matches = [np.all(np.abs(y - c) < 1e-5, axis=(1, 2, 3))
             for c in (x, x[:, :, ::-1], grey, grey[:, :, ::-1])]
  assert (sum(m.astype(int) for m in matches) == 1).all()  # Exactly one case each.
  grey_rate = (matches[2] | matches[3]).mean()
  flip_rate = (matches[1] | matches[3]).mean()
  assert abs(grey_rate - 0.2) < 6 * np.sqrt(0.2 * 0.8 / n), grey_rate
  assert abs(flip_rate - 0.5) < 6 * np.sqrt(0.25 / n), flip_rate


def test_hsv_round_trip_and_reference():
  rgb = jax.random.uniform(jax.random.key(0), (4096, 3))
  # Edge cases: greys, black, white, primaries, ties between channels.
  edges = jnp.asarray([[0, 0, 0], [1, 1, 1], [.5, .5, .5], [1, 0, 0], [0, 1, 0], [0, 0, 1],
                       [1, 1, 0], [0, 1, 1], [1, 0, 1], [.2, .7, .7], [.7, .7, .2]], jnp.float32)
  rgb = jnp.concatenate([rgb, edges])
  hsv = jax.jit(augment.rgb_to_hsv)(rgb)
  assert float(hsv.min()) >= 0.0 and float(hsv.max()) <= 1.0 and float(hsv[:, 0].max()) < 1.0
  np.testing.assert_allclose(jax.jit(augment.hsv_to_rgb)(hsv), rgb, atol=1e-5)
  adjust_hue = jax.jit(augment.adjust_hue)
  np.testing.assert_allclose(adjust_hue(rgb, 0.0), rgb, atol=1e-5)
  ref = np.asarray([colorsys.rgb_to_hsv(*map(float, c)) for c in np.asarray(rgb)])
  np.testing.assert_allclose(hsv[:, 1:], ref[:, 1:], atol=1e-5)
  hue_err = np.abs(np.asarray(hsv[:, 0]) - ref[:, 0])
  np.testing.assert_allclose(np.minimum(hue_err, 1 - hue_err), 0, atol=1e-5)
  # A third of a turn maps red -> green -> blue.
  red = jnp.asarray([[1.0, 0.0, 0.0]])
  np.testing.assert_allclose(adjust_hue(red, 1 / 3), [[0, 1, 0]], atol=1e-5)
  np.testing.assert_allclose(adjust_hue(red, -1 / 3), [[0, 0, 1]], atol=1e-5)


def test_brightness_contrast_saturation_match_torchvision_formulas():
  img = np.asarray(_images(batch=1)[0])
  grey = img @ np.asarray([0.2989, 0.587, 0.114], np.float32)
  np.testing.assert_allclose(augment.adjust_brightness(img, 1.3), np.clip(img * 1.3, 0, 1),
                             atol=1e-6)
  np.testing.assert_allclose(augment.adjust_contrast(img, 0.7),
                             np.clip(0.7 * img + 0.3 * grey.mean(), 0, 1), atol=1e-6)
  np.testing.assert_allclose(augment.adjust_saturation(img, 1.4),
                             np.clip(1.4 * img + -0.4 * grey[..., None], 0, 1), atol=1e-6)


def test_color_jitter_applies_ops_in_the_drawn_order():
  """For all 24 orders, the hue-once implementation equals the four ops applied in order."""
  image = _images(batch=1, size=6)[0]
  factors = (1.3, 0.7, 1.35, 0.08)  # brightness, contrast, saturation, hue
  strengths = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
  perms = np.asarray(list(itertools.permutations(range(4))))
  u = np.zeros((len(perms), 8), np.float32)
  u[:, :3] = [(f - 0.6) / 0.8 for f in factors[:3]]
  u[:, 3] = (factors[3] + 0.1) / 0.2
  for i, perm in enumerate(perms):
    u[i, 4 + perm] = np.arange(4) / 4 + 0.1  # argsort(u[4:]) == perm
  got = jax.jit(jax.vmap(functools.partial(augment._color_jitter_from_uniform, **strengths),
                         in_axes=(0, None)))(jnp.asarray(u), image)
  ops = (augment.adjust_brightness, augment.adjust_contrast, augment.adjust_saturation,
         augment.adjust_hue)

  @jax.jit
  def reference(perm):  # Not vmapped: lax.switch runs one op per step.
    out = image
    for step in range(4):
      out = jax.lax.switch(perm[step], [functools.partial(op, factor=jnp.float32(f))
                                        for op, f in zip(ops, factors)], out)
    return out

  for i, perm in enumerate(perms):
    np.testing.assert_allclose(got[i], reference(jnp.asarray(perm)), atol=1e-5, err_msg=perm)
  # The orders matter (clipping and hue do not commute): outputs are not all equal.
  assert np.abs(np.asarray(got - got[0])).max() > 1e-3


def test_crop_boxes_follow_torchvision_sampling():
  keys = jax.random.split(jax.random.key(0), 2000)
  box_fn = functools.partial(augment.random_resized_crop_box, height=32, width=32,
                             scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
  boxes = np.asarray(jax.jit(jax.vmap(lambda k: box_fn(k)))(keys))
  top, left, h, w = boxes.T
  assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
  assert (top + h <= 32).all() and (left + w <= 32).all()
  area = h * w / 1024
  assert area.min() > 0.15 and area.max() <= 1.0 and 0.5 < area.mean() < 0.7
  assert 0.6 < (w / h).min() and (w / h).max() < 1.6
  assert len(np.unique(top)) > 10 and len(np.unique(left)) > 10
  # No candidate fits (ratio 3 on a square image at scale ~1): torchvision's centre crop.
  box = jax.jit(functools.partial(augment.random_resized_crop_box, height=30, width=30,
                                  scale=(0.95, 1.0), ratio=(3.0, 4.0)))(jax.random.key(0))
  np.testing.assert_array_equal(box, [10, 0, 10, 30])


def test_resized_crop_matches_numpy_bilinear():
  image = np.asarray(_images(batch=1, size=12)[0])
  top, left, h, w = 2, 3, 6, 8
  crop = jax.jit(augment.resized_crop)
  got = crop(jnp.asarray(image), jnp.asarray([top, left, h, w]))

  def coords(start, length, out):  # Half-pixel centres, clamped at the image border.
    src = start + (np.arange(out) + 0.5) * length / out - 0.5
    src = np.clip(src, 0, 11)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, 11)
    return lo, hi, src - lo

  y0, y1, fy = coords(top, h, 12)
  x0, x1, fx = coords(left, w, 12)
  rows = image[y0] * (1 - fy)[:, None, None] + image[y1] * fy[:, None, None]
  want = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
  np.testing.assert_allclose(got, want, atol=1e-5)
  full = crop(jnp.asarray(image), jnp.asarray([0, 0, 12, 12]))
  np.testing.assert_allclose(full, image, atol=1e-5)


def test_gaussian_blur():
  assert augment.blur_kernel_size(224) == 23 and augment.blur_kernel_size(32) == 3
  assert augment.blur_kernel_size(64) == 7 and augment.blur_kernel_size(8) == 3
  taps = np.asarray(augment.gaussian_kernel(jnp.float32(1.0), 5))
  want = np.exp(-0.5 * np.arange(-2, 3) ** 2)
  np.testing.assert_allclose(taps, want / want.sum(), atol=1e-6)
  blur = jax.jit(augment.gaussian_blur, static_argnums=2)
  x = np.zeros((3, 9, 9, 3), np.float32)
  x[0] = 0.3  # constant image
  x[1, 4, 4] = 1.0  # impulse
  x[2] = _images(batch=1, size=9)[0]
  out = np.asarray(jax.vmap(blur, in_axes=(0, 0, None))(x, jnp.asarray([2.0, 1.0, 0.1]), 5))
  np.testing.assert_allclose(out[0], x[0], atol=1e-6)
  # An impulse spreads to the separable kernel's outer product; mass is kept.
  np.testing.assert_allclose(out[1, 2:7, 2:7, 0], np.outer(taps, taps), atol=1e-6)
  np.testing.assert_allclose(out[1].sum(axis=(0, 1)), 1.0, atol=1e-5)
  # Tiny sigma is (numerically) the identity.
  np.testing.assert_allclose(out[2], x[2], atol=1e-5)


def test_gaussian_blur_matches_numpy_reflect_convolution():
  x = np.asarray(_images(batch=1, size=9)[0])
  taps = np.exp(-0.5 * (np.arange(-3, 4) / 1.7) ** 2)
  taps /= taps.sum()
  padded = np.pad(x, ((3, 3), (3, 3), (0, 0)), mode="reflect")
  rows = sum(taps[i] * padded[i:i + 9] for i in range(7))
  want = sum(taps[i] * rows[:, i:i + 9] for i in range(7))
  got = jax.jit(augment.gaussian_blur, static_argnums=2)(x, jnp.float32(1.7), 7)
  np.testing.assert_allclose(got, want, atol=1e-5)
  with pytest.raises(ValueError, match="kernel_size"):
    augment.blur_matrix(jnp.float32(1.0), 9, 4)


def test_early_flip_equals_flip_last():
  """Flipping right after the crop gives torchvision's flip-last result (same draws)."""
  x = _images(batch=4)
  key = jax.random.key(5)
  kw = dict(jitter_prob=1.0, grayscale_prob=0.5, blur_prob=1.0)
  flipped = _jit_aug(**kw, flip_prob=1.0)(key, x)
  unflipped = _jit_aug(**kw, flip_prob=1e-9)(key, x)  # Same graph and uniforms, no flip.
  np.testing.assert_allclose(flipped, jnp.flip(unflipped, axis=2), atol=1e-5)


def test_simple_augment():
  x = _images(batch=6, size=8)
  np.testing.assert_allclose(augment.simple_augment(jax.random.key(0), x, pad=0,
                                                    flip_prob=0.0), x)
  np.testing.assert_allclose(augment.simple_augment(jax.random.key(0), x, pad=0,
                                                    flip_prob=1.0), x[:, :, ::-1])
  y = np.asarray(augment.simple_augment(jax.random.key(1), x, pad=2))
  padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
  for i in range(len(x)):  # Each output is one of the 5 x 5 crops, possibly flipped.
    candidates = [c for t in range(5) for l in range(5)
                  for c in (padded[i, t:t + 8, l:l + 8], padded[i, t:t + 8, l:l + 8][:, ::-1])]
    assert any(np.array_equal(y[i], c) for c in candidates), i
  assert not np.array_equal(y, np.asarray(x))


def test_normalize_round_trip():
  x = _images(batch=2)
  n = augment.normalize(x)
  np.testing.assert_allclose(n[..., 1], (x[..., 1] - 0.456) / 0.224, atol=1e-6)
  np.testing.assert_allclose(augment.denormalize(n), x, atol=1e-6)
  np.testing.assert_allclose(augment.normalize(x, (0.5,) * 3, (0.5,) * 3), 2 * x - 1, atol=1e-6)


@pytest.mark.parametrize("kwargs, name", [
    (dict(crop_scale=(0.0, 1.0)), "crop_scale"),
    (dict(crop_scale=(0.5, 1.2)), "crop_scale"),
    (dict(crop_scale=(0.8, 0.5)), "crop_scale"),
    (dict(crop_ratio=(1.5, 1.0)), "crop_ratio"),
    (dict(blur_sigma=(0.0, 2.0)), "blur_sigma"),
    (dict(jitter_prob=1.5), "jitter_prob"),
    (dict(grayscale_prob=-0.1), "grayscale_prob"),
    (dict(blur_prob=2), "blur_prob"),
    (dict(flip_prob=None), "flip_prob"),
    (dict(jitter_strength=(0.4, 0.4, 0.4)), "jitter_strength"),
    (dict(jitter_strength=(0.4, 0.4, 0.4, 0.6)), "jitter_strength"),
    (dict(blur_kernel_frac=0.0), "blur_kernel_frac"),
])
def test_argument_validation(kwargs, name):
  with pytest.raises(ValueError, match=name):
    augment.mocov2_augment(jax.random.key(0), _images(batch=1), **kwargs)


def test_image_validation():
  with pytest.raises(ValueError, match="images"):
    augment.mocov2_augment(jax.random.key(0), jnp.zeros((2, 8, 8)))
  with pytest.raises(ValueError, match="images"):
    augment.mocov2_augment(jax.random.key(0), jnp.zeros((2, 8, 8, 3), jnp.uint8))
  with pytest.raises(ValueError, match="pad"):
    augment.simple_augment(jax.random.key(0), _images(batch=1), pad=-1)
