"""Weights and images drawn from a fixed NumPy seed, for the pretrained-import correctness tests.

``launch/make_pretrained_fixtures.py`` (needs torch, torchvision and timm) fills a
torchvision / timm model with :func:`draw_weights` of its state_dict's names and
shapes, runs it on :func:`draw_images`, and stores the names, shapes and the
reference outputs in ``tests/fixtures/pretrained/<arch>.npz``. The tests draw the
same weights here without torch, convert them with ``fgjax.pretrained`` and
compare fgjax's outputs with the stored ones. Keep this file free of torch and
jax: both sides import it.
"""

from __future__ import annotations

import zlib

import numpy as np


def _rng(seed: int, name: str) -> np.random.Generator:
  # One stream per tensor name: adding or reordering tensors does not change the others.
  return np.random.default_rng([seed, zlib.crc32(name.encode())])


def draw_tensor(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
  """A float32 tensor for state_dict entry ``name``: scaled so that a deep network stays finite.

  BatchNorm running variances are in [0.5, 1.5], running means and biases small,
  weights ``N(0, 1 / fan_in)`` (fan_in: the product of all but the first axis),
  LayerNorm / BatchNorm scales near 1, tables and tokens ``N(0, 0.02)``.
  """
  rng = _rng(seed, name)
  leaf = name.rsplit(".", 1)[-1]
  if leaf == "running_var":
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)
  if leaf == "running_mean":
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)
  if leaf == "bias":
    return (0.02 * rng.standard_normal(shape)).astype(np.float32)
  if leaf == "weight" and len(shape) == 1:  # a norm layer's scale
    return rng.uniform(0.8, 1.2, shape).astype(np.float32)
  if leaf == "weight":
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
  return (0.02 * rng.standard_normal(shape)).astype(np.float32)  # tokens, position tables


def draw_weights(names: list[str], shapes: list[tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
  """``{name: draw_tensor(name, shape, seed)}`` for every float entry."""
  return {name: draw_tensor(name, tuple(shape), seed) for name, shape in zip(names, shapes)}


def draw_images(n: int, size: int, seed: int) -> np.ndarray:
  """``[n, size, size, 3]`` float32 "normalised" images (NHWC, as fgjax takes them)."""
  return np.random.default_rng([seed, 7]).standard_normal((n, size, size, 3)).astype(np.float32)
