"""Host-side image transforms in the grain pipeline: bring decoded images to a fixed size.

Real images come in their own sizes; a batch needs one. The photometric and
crop augmentation (MoCo v2 aug+) runs on the accelerator inside the jitted
step (``fgjax.data.augment``), so the host does only what needs the original
pixels:

* training: the whole image resized (squashed) to ``data.base_size`` x
  ``data.base_size``: the random resized crop then happens on device, from a
  base larger than the training size, so a small crop keeps its detail;
* evaluation: resize the shorter side to ``image_size / eval_crop_fraction``
  and take the centre ``image_size`` x ``image_size`` crop (the usual "resize
  256, centre crop 224").

Resizing uses PIL's bilinear filter with antialiasing (``Image.resize``).
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np
from PIL import Image


def _pil(image: np.ndarray) -> Image.Image:
  return Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [size, size, 3], the whole image, aspect not kept."""
  if image.shape[:2] == (size, size):
    return image
  return np.asarray(_pil(image).resize((size, size), Image.BILINEAR))


def resize_center_crop(image: np.ndarray, size: int, crop_fraction: float = 0.875) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [size, size, 3]: shorter side to size / crop_fraction, centre crop."""
  h, w = image.shape[:2]
  if (h, w) == (size, size) and crop_fraction == 1.0:
    return image
  short = max(size, int(round(size / crop_fraction)))
  scale = short / min(h, w)
  new_w, new_h = max(size, int(round(w * scale))), max(size, int(round(h * scale)))
  top, left = (new_h - size) // 2, (new_w - size) // 2
  resized = _pil(image).resize((new_w, new_h), Image.BILINEAR)
  return np.asarray(resized.crop((left, top, left + size, top + size)))


class TrainResize(grain.transforms.Map):
  """record['image'] -> the base image of the on-device augmentation."""

  def __init__(self, base_size: int):
    self.base_size = int(base_size)

  def map(self, record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "image": resize_square(record["image"], self.base_size)}


class EvalResize(grain.transforms.Map):
  """record['image'] -> resize + centre crop at the evaluation size."""

  def __init__(self, image_size: int, crop_fraction: float):
    self.image_size = int(image_size)
    self.crop_fraction = float(crop_fraction)

  def map(self, record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "image": resize_center_crop(record["image"], self.image_size, self.crop_fraction)}
