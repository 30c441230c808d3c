"""The record contract every data source follows, and the data errors.

A *record source* is a grain random-access source (``__len__``,
``__getitem__``) whose item ``i`` is a dict:

* ``'image'``: uint8 ``[H, W, 3]`` RGB, decoded, at the file's own size
  (sources of different sizes are resized by ``fgjax.data.transforms``);
* ``'fine_label'``: int32 scalar in ``[0, len(fine_names))``;
* ``'super_label'``: int32 scalar in ``[0, len(super_names))`` (only when the
  source has a super-class level);
* ``'index'``: int32 scalar, the position ``i`` in the split.

and whose attributes are ``fine_names`` (list of class names, index = label),
``super_names`` (list or None), ``fine_labels`` / ``super_labels`` (int32
``[N]`` arrays of every record's labels, known without decoding an image) and
``description`` (one line naming the data for logs and results).

Image size limit: an image of more than ``data.max_image_pixels`` pixels
(default `MAX_IMAGE_PIXELS` = 89,478,485, PIL's own decompression-bomb warning
threshold, about 9459 x 9459) is refused before it is decoded:
`ImageTooLargeError`, which the file sources report like any unreadable image
(an error naming the file, or a counted skip with ``data.skip_corrupt``). PIL's
``DecompressionBombWarning`` is silenced, as this check replaces it; limits
above `MAX_IMAGE_PIXELS_LIMIT` (PIL's hard limit, twice its warning threshold)
cannot be configured, PIL refuses such images itself.
"""

from __future__ import annotations

import os
import warnings
from typing import IO
from typing import Sequence

import numpy as np
from PIL import Image

from fgjax.errors import DataError  # (re-exported: raised here)
from fgjax.errors import ImageTooLargeError


# 16-bit grayscale (PNG) opens in one of these modes; convert('RGB') would clip it.
_WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")

# Default of data.max_image_pixels: PIL's DecompressionBombWarning threshold (its
# default Image.MAX_IMAGE_PIXELS, fixed here so that a library changing PIL's
# global does not change what a config means).
MAX_IMAGE_PIXELS = 89_478_485
# The largest configurable limit: above it PIL raises DecompressionBombError itself.
MAX_IMAGE_PIXELS_LIMIT = 2 * MAX_IMAGE_PIXELS

# The limit above replaces PIL's warning (which would print a multi-line warning
# for an image that is then refused, or that the config allows).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def decode_rgb(file: str | IO[bytes], max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
  """An encoded image (path or binary file object) -> uint8 ``[H, W, 3]`` RGB at its own size.

  A full ``load()`` first, so truncated or corrupt data fails here; grayscale,
  palette, RGBA, CMYK, ... go through PIL's ``convert('RGB')`` (alpha is
  dropped); 16-bit grayscale is scaled 0..65535 -> 0..255. Raises whatever PIL
  raises on bad data (callers add the file name), and `ImageTooLargeError` for
  an image of more than ``max_pixels`` pixels (checked from the header, before
  the pixels are decoded).
  """
  with Image.open(file) as img:
    w, h = img.size
    if w * h > max_pixels:
      raise ImageTooLargeError(f"{w}x{h} = {w * h:,} pixels is more than data.max_image_pixels = {max_pixels:,}")
    img.load()
    if img.mode in _WIDE_GRAY_MODES:
      wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
      return np.repeat(((wide * 255 + 32767) // 65535).astype(np.uint8)[..., None], 3, axis=-1)
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    return np.array(rgb, dtype=np.uint8)


def load_super_map(path: str, fine_names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
  """Reads a fine class -> super class map and applies it to ``fine_names``.

  The file has one ``fine_class<sep>super_class`` pair per line, where <sep> is
  a tab or a comma (the first one on the line); blank lines and lines starting
  with ``#`` are ignored. Extra columns (e.g. genus and species for the
  hierarchical methods) are allowed and ignored here.

  Returns:
    (super_of_fine [num_fine] int32, super_names sorted).

  Raises:
    DataError: the file is missing or malformed, a class appears twice with
      different super classes, or a fine class of the data is not in the map
      (the message names the class and the file).
  """
  if not os.path.isfile(path):
    raise DataError(f"super-class map {path} does not exist")
  mapping: dict[str, str] = {}
  with open(path, "rb") as f:
    raw = f.read()
  if b"\0" in raw:
    offset = raw.index(b"\0")
    raise DataError(f"super-class map {path} is a binary file (a NUL byte at offset {offset}), "
                    "not a text file of 'fine_class<tab or comma>super_class' lines")
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line_number = raw.count(b"\n", 0, e.start) + 1
    raise DataError(f"super-class map {path} is not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} "
                    f"(line {line_number}); save it as UTF-8") from None
  for number, line in enumerate(text.splitlines(), 1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    sep = "\t" if "\t" in line else ","
    parts = [p.strip() for p in line.split(sep)]
    if len(parts) < 2 or not parts[0] or not parts[1]:
      raise DataError(f"{path}:{number}: expected 'fine_class<tab or comma>super_class', got {line!r}")
    fine, sup = parts[0], parts[1]
    if fine in mapping and mapping[fine] != sup:
      raise DataError(f"{path}:{number}: class {fine!r} maps to both {mapping[fine]!r} and {sup!r}")
    mapping[fine] = sup
  missing = [name for name in fine_names if name not in mapping]
  if missing:
    raise DataError(f"super-class map {path} has no entry for class {missing[0]!r}"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
  super_names = sorted({mapping[name] for name in fine_names})
  index = {name: i for i, name in enumerate(super_names)}
  return np.array([index[mapping[name]] for name in fine_names], np.int32), super_names
