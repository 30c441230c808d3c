"""Record sources over image files on disk: a class-per-folder tree and CUB-200-2011.

Both builders return a `FileRecords`, a grain random-access source that follows the
record contract of `fgjax.data.records`: item ``i`` is decoded from its file when it
is read (``'image'`` uint8 ``[H, W, 3]`` RGB at the file's own size), while the
labels of every record are known at construction (``fine_labels``, ``super_labels``).

* `image_folder`: ``root/<split>/<class>/*.{jpg,jpeg,png}``. The classes are the
  sorted class folder names, and they must be the same in every split under ``root``
  (so a label means the same class in train and test).
* `cub200`: the CUB_200_2011 directory as distributed (``images.txt``,
  ``train_test_split.txt``, ``image_class_labels.txt``, ``classes.txt``,
  ``images/``), records in image-id order.

Files are checked lazily by default: a file that cannot be decoded raises `DataError`
naming it when it is read. With ``skip_corrupt=True`` every image is decoded once at
construction (two threads) and the unreadable ones are dropped and counted
(``num_skipped``, ``skipped_paths``); the description (the log line) counts the
images kept. An image of more than ``max_image_pixels`` pixels
(`records.MAX_IMAGE_PIXELS` by default) is unreadable in the same way.

An entry with an image extension that is not a regular file -- a dangling symbolic
link, a symbolic link loop, a FIFO, a socket, a device -- is found when the folder
is listed: a `DataError` naming it, or with ``skip_corrupt=True`` a counted skip
(never opened: reading a FIFO would block). A symbolic link loop among the split
or class folders is a `DataError` naming it.

The decode keeps PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` as it is (False by
default): a truncated file is an error, not an image with a grey bottom. EXIF
orientation is not applied (as in torchvision's ImageFolder and tf.image decoders),
and an alpha channel is dropped (``convert('RGB')``), not composited.
"""

from __future__ import annotations

import concurrent.futures
import errno
import os
import stat
from typing import Sequence

import numpy as np

from fgjax.data.records import MAX_IMAGE_PIXELS
from fgjax.data.records import DataError
from fgjax.data.records import decode_rgb
from fgjax.data.records import load_super_map


__all__ = ["IMAGE_EXTENSIONS", "FileRecords", "cub200", "decode_image", "image_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # Compared case-insensitively.
_VERIFY_THREADS = 2
_CUB_DIR = "CUB_200_2011"
_CUB_FILES = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt")


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def file_problem(path: str) -> str | None:
  """Why ``path`` is not a readable image file, or None for a regular file (links followed).

  E.g. ``'no such file'``, ``'a dangling symbolic link to x.png'``, ``'a symbolic
  link loop'``, ``'not a regular file (a FIFO)'``. Only ``stat``: nothing is opened.
  """
  try:
    mode = os.stat(path).st_mode
  except OSError as e:
    if e.errno == errno.ELOOP:
      return "a symbolic link loop"
    if os.path.islink(path):
      try:
        return f"a dangling symbolic link to {os.readlink(path)}"
      except OSError:
        return "a dangling symbolic link"
    if e.errno == errno.ENOENT:
      return "no such file"
    return _one_line(e.strerror or e)
  if stat.S_ISREG(mode):
    return None
  kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
          else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
          else "an unknown kind of file")
  return f"not a regular file ({kind})"


def decode_image(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
  """Decodes an image file to uint8 ``[H, W, 3]`` RGB at its own size.

  Grayscale, palette, RGBA, CMYK, ... are converted with PIL's ``convert('RGB')``
  after a full load, so a truncated or corrupt file fails here, not later; 16-bit
  grayscale is scaled to 8 bits (``convert`` would clip it).

  Raises:
    DataError: ``cannot read image <path>: <reason>`` (missing file, not a regular
      file (never opened), unknown format, truncated or corrupt data, more than
      ``max_pixels`` pixels (`records.ImageTooLargeError`), ...).
  """
  problem = file_problem(path)
  if problem is not None and problem != "no such file":  # (PIL names a missing file)
    raise DataError(f"cannot read image {path}: {problem}")
  try:
    array = decode_rgb(path, max_pixels)
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... on bad data.
    reason = _one_line(f"{type(e).__name__}: {e}")
    raise DataError(f"cannot read image {path}: {reason}") from e
  if array.ndim != 3 or array.shape[2] != 3:
    raise DataError(f"cannot read image {path}: decoded to shape {array.shape}, expected [H, W, 3]")
  return array


def _as_label_array(labels, name: str) -> np.ndarray:
  array = np.asarray(labels)
  if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
    raise DataError(f"FileRecords: {name} must be a 1-d integer sequence, got {array.dtype} {array.shape}")
  return array.astype(np.int32)


def _checked_labels(labels, names: list[str], num_paths: int, level: str) -> np.ndarray:
  """int32 [N] labels, one per path, each in [0, len(names)); DataError otherwise."""
  array = _as_label_array(labels, f"{level}_labels")
  if len(array) != num_paths:
    raise DataError(f"FileRecords: {num_paths} paths but {len(array)} {level} labels")
  if len(array) and (array.min() < 0 or array.max() >= len(names)):
    raise DataError(f"FileRecords: {level} labels outside [0, {len(names)})")
  return array


class FileRecords:
  """A grain random-access source of image files with known labels.

  ``source[i]`` decodes ``paths[i]`` with `decode_image` and returns
  ``{'image', 'fine_label', 'index'}`` (plus ``'super_label'`` when the source has
  a super-class level), labels and index as int32 numpy scalars.

  Attributes (plain, so the source pickles to grain worker processes):
    paths: list of file paths, index = record position.
    fine_names, super_names: class names (``super_names`` None without a super level).
    fine_labels, super_labels: int32 ``[N]`` (``super_labels`` None without a super level).
    description: one line naming the data.
    num_skipped, skipped_paths: unreadable files dropped at construction (0 and []
      unless the builder verified the files with ``skip_corrupt=True``).
    max_pixels: images above this many pixels are unreadable (`decode_image`).
  """

  def __init__(self, paths: Sequence[str], fine_labels: Sequence[int], fine_names: Sequence[str], *,
               super_labels: Sequence[int] | None = None, super_names: Sequence[str] | None = None,
               description: str, num_skipped: int = 0, skipped_paths: Sequence[str] = (),
               max_pixels: int = MAX_IMAGE_PIXELS):
    self.paths = [os.fspath(p) for p in paths]
    self.max_pixels = int(max_pixels)
    self.fine_names = list(fine_names)
    self.fine_labels = _checked_labels(fine_labels, self.fine_names, len(self.paths), "fine")
    if (super_labels is None) != (super_names is None):
      raise DataError("FileRecords: give both super_labels and super_names, or neither")
    if super_labels is None:
      self.super_labels, self.super_names = None, None
    else:
      self.super_names = list(super_names)
      self.super_labels = _checked_labels(super_labels, self.super_names, len(self.paths), "super")
    self.description = _one_line(description)
    self.num_skipped = int(num_skipped)
    self.skipped_paths = list(skipped_paths)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    i = int(i)
    if not 0 <= i < len(self.paths):
      raise IndexError(f"record {i} out of range for {len(self.paths)} records ({self.description})")
    item = {
        "image": decode_image(self.paths[i], self.max_pixels),
        "fine_label": self.fine_labels[i],
        "index": np.int32(i),
    }
    if self.super_labels is not None:
      item["super_label"] = self.super_labels[i]
    return item

  def __repr__(self) -> str:
    return f"FileRecords({self.description})"


# ---------------------------------------------------------------------------------------
# Shared construction steps.


def _readable(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> bool:
  try:
    decode_image(path, max_pixels)
  except DataError:
    return False
  return True


def _build(paths: list[str], fine_labels: list[int], fine_names: list[str], *, super_map: str | None,
           skip_corrupt: bool, name: str, where: str, max_pixels: int = MAX_IMAGE_PIXELS) -> FileRecords:
  """Applies the super map, optionally drops unreadable files, and builds the source.

  ``name`` starts the description (e.g. ``image folder <root> split train``), which
  then counts the images kept; ``where`` names the split for messages (e.g.
  ``split 'train' of <root>``).
  """
  super_of_fine, super_names = (None, None) if super_map is None else load_super_map(super_map, fine_names)
  skipped: list[str] = []
  if skip_corrupt and paths:
    with concurrent.futures.ThreadPoolExecutor(max_workers=_VERIFY_THREADS) as pool:
      ok = list(pool.map(lambda p: _readable(p, max_pixels), paths))
    before = set(fine_labels)
    skipped = [p for p, good in zip(paths, ok) if not good]
    paths = [p for p, good in zip(paths, ok) if good]
    fine_labels = [label for label, good in zip(fine_labels, ok) if good]
    emptied = sorted(before - set(fine_labels))
    if emptied:  # The class would silently vanish from this split.
      names = _names([fine_names[c] for c in emptied], limit=3)
      raise DataError(f"every image of class {names} in {where} is unreadable "
                      f"(first: {skipped[0]})")
  description = f"{name}: {len(paths)} images, {len(fine_names)} classes"  # the images kept
  if super_map is not None:
    description += f", super map {super_map}"
  if skipped:
    description += f", skipped {len(skipped)} unreadable"
  fine = np.asarray(fine_labels, np.int32)
  return FileRecords(
      paths, fine, fine_names,
      super_labels=None if super_of_fine is None else super_of_fine[fine],
      super_names=super_names, description=description,
      num_skipped=len(skipped), skipped_paths=skipped, max_pixels=max_pixels)


def _names(items, limit: int = 5) -> str:
  items = list(items)
  text = ", ".join(repr(x) for x in items[:limit])
  return text + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


# ---------------------------------------------------------------------------------------
# root/<split>/<class>/*.{jpg,jpeg,png}


def _is_dir(entry: os.DirEntry) -> bool:
  """``entry.is_dir()`` (symlinks followed); DataError for a link loop or a dangling link."""
  try:
    if entry.is_dir():
      return True
  except OSError:  # ELOOP: a symbolic link loop
    pass
  if entry.is_symlink():
    problem = file_problem(entry.path)
    if problem is not None and not problem.startswith("not a regular file"):
      raise DataError(f"cannot read folder entry {entry.path}: {problem}")
  return False


def _subdirs(path: str) -> list[str]:
  """Sorted names of the non-hidden subdirectories of ``path`` (symlinks followed).

  Raises:
    DataError: an entry is a symbolic link loop or a dangling symbolic link.
  """
  with os.scandir(path) as entries:
    return sorted(e.name for e in entries if not e.name.startswith(".") and _is_dir(e))


def _image_files(path: str) -> tuple[list[str], list[str]]:
  """Sorted names of the non-hidden image files directly in ``path``: (regular files, the others).

  The others have an image extension but cannot be read as a file: dangling links,
  link loops, FIFOs, sockets, devices. A folder named like an image is ignored.
  """
  files, others = [], []
  with os.scandir(path) as entries:
    for e in entries:
      if e.name.startswith(".") or not e.name.lower().endswith(IMAGE_EXTENSIONS):
        continue
      try:
        if e.is_file():
          files.append(e.name)
          continue
        if e.is_dir():
          continue
      except OSError:  # ELOOP: a symbolic link loop
        pass
      others.append(e.name)
  return sorted(files), sorted(others)


def image_folder(root: str, split: str, *, super_map: str | None = None,
                 skip_corrupt: bool = False, max_image_pixels: int = MAX_IMAGE_PIXELS) -> FileRecords:
  """Image files laid out as ``root/<split>/<class>/*.{jpg,jpeg,png}``.

  The classes (and so the labels) are the sorted class folder names, the same for
  every split: every subdirectory of ``root`` that holds class folders is a split,
  and they must all hold the same class folders. Records are ordered by class, then
  by file name. Extensions are matched case-insensitively; other files, hidden files
  and nested folders inside a class folder are ignored.

  Args:
    root: the directory holding the split directories.
    split: the split directory to read (e.g. ``'train'``).
    super_map: optional fine -> super class map file (see `load_super_map`).
    skip_corrupt: decode every image once now and drop the unreadable ones (and
      the entries that are not regular files).
    max_image_pixels: images of more pixels are unreadable (default
      `records.MAX_IMAGE_PIXELS`; the config's ``data.max_image_pixels``).

  Raises:
    DataError: root or split missing, a split without class folders, class folders
      differing between splits, an empty class folder, a class missing from the super
      map, a symbolic link loop or dangling link among the folders, an image entry
      that is not a regular file (without ``skip_corrupt``), or (``skip_corrupt``)
      every image of a class unreadable.
  """
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise DataError(f"image folder root {root} does not exist or is not a directory")
  splits = {name: _subdirs(os.path.join(root, name)) for name in _subdirs(root)}
  splits = {name: classes for name, classes in splits.items() if classes}
  split_dir = os.path.join(root, split)
  if not os.path.isdir(split_dir):
    present = ", ".join(sorted(splits)) or "none"
    raise DataError(f"split {split!r} not found: {split_dir} does not exist (splits under {root}: {present})")
  if split not in splits:
    raise DataError(f"split directory {split_dir} has no class folders")
  classes = sorted(set().union(*splits.values()))
  problems = []
  for name, present in sorted(splits.items()):
    missing = [c for c in classes if c not in set(present)]
    if missing:
      problems.append(f"split {name!r} lacks {_names(missing)}")
  if problems:
    raise DataError(f"class folders differ between splits under {root}: " + "; ".join(problems))

  paths: list[str] = []
  labels: list[int] = []
  not_files: list[str] = []
  for label, name in enumerate(classes):
    class_dir = os.path.join(split_dir, name)
    files, others = _image_files(class_dir)
    not_files.extend(os.path.join(class_dir, f) for f in others)
    if skip_corrupt:  # kept until _build drops them (decode_image refuses them unopened) and counts them
      files = sorted(files + others)
    if not files and not others:
      raise DataError(f"class folder {class_dir} (class {name!r}) has no image files "
                      f"({'/'.join(IMAGE_EXTENSIONS)})")
    paths.extend(os.path.join(class_dir, f) for f in files)
    labels.extend([label] * len(files))
  if not_files and not skip_corrupt:
    more = f" (and {len(not_files) - 1} more)" if len(not_files) > 1 else ""
    raise DataError(f"cannot read image {not_files[0]}: {file_problem(not_files[0]) or 'not a regular file'}"
                    f"{more}; remove it, or set data.skip_corrupt=True to skip and count such entries")
  return _build(paths, labels, classes, super_map=super_map, skip_corrupt=skip_corrupt,
                name=f"image folder {root} split {split}", where=f"split {split!r} of {root}",
                max_pixels=max_image_pixels)


# ---------------------------------------------------------------------------------------
# CUB-200-2011


def _read_id_table(path: str) -> list[tuple[int, str, int]]:
  """Reads ``<int id> <value>`` lines: [(id, value, line number)]; blank lines skipped."""
  if not os.path.isfile(path):
    raise DataError(f"CUB metadata file {path} is missing")
  rows = []
  seen: dict[int, int] = {}
  try:
    with open(path, encoding="utf-8") as f:
      lines = list(f)
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"cannot read CUB metadata file {path}: {_one_line(e)}") from e
  for number, line in enumerate(lines, 1):
    line = line.strip()
    if not line:
      continue
    parts = line.split(None, 1)
    if len(parts) != 2 or not parts[0].isdigit():
      raise DataError(f"{path}:{number}: expected '<id> <value>', got {line!r}")
    key = int(parts[0])
    if key in seen:
      raise DataError(f"{path}:{number}: id {key} already on line {seen[key]}")
    seen[key] = number
    rows.append((key, parts[1].strip(), number))
  return rows


def _cub_root(root: str) -> str:
  if not os.path.isdir(root):
    raise DataError(f"CUB-200-2011 root {root} does not exist or is not a directory")
  inner = os.path.join(root, _CUB_DIR)
  if not os.path.isfile(os.path.join(root, _CUB_FILES[0])) and os.path.isdir(inner):
    return inner
  return root


def cub200(root: str, split: str, *, super_map: str | None = None,
           skip_corrupt: bool = False, max_image_pixels: int = MAX_IMAGE_PIXELS) -> FileRecords:
  """The CUB-200-2011 birds as distributed (``CUB_200_2011/``), records in image-id order.

  ``root`` is the ``CUB_200_2011`` directory or its parent. The fine names are the
  ``classes.txt`` names (e.g. ``001.Black_footed_Albatross``) in class-id order, and
  label ``k`` is the ``k``-th class id in ascending order.

  Raises:
    DataError: unknown split, root or a metadata file missing, a malformed line
      (``file:line``), ids that do not match across the files, an image file missing
      or not a regular file (without ``skip_corrupt``), a class missing from the super map.
  """
  if split not in ("train", "test"):
    raise DataError(f"CUB-200-2011 split must be 'train' or 'test', got {split!r}")
  root = _cub_root(os.fspath(root))
  images_txt, split_txt, labels_txt, classes_txt = (os.path.join(root, f) for f in _CUB_FILES)
  images = _read_id_table(images_txt)
  is_train = {}
  for key, value, number in _read_id_table(split_txt):
    if value not in ("0", "1"):
      raise DataError(f"{split_txt}:{number}: expected '<image id> <1 train|0 test>', got {value!r}")
    is_train[key] = value == "1"
  classes = _read_id_table(classes_txt)
  classes.sort(key=lambda row: row[0])
  fine_names = [name for _, name, _ in classes]
  label_of_class = {key: label for label, (key, _, _) in enumerate(classes)}
  class_of_image = {}
  for key, value, number in _read_id_table(labels_txt):
    if not value.isdigit() or int(value) not in label_of_class:
      raise DataError(f"{labels_txt}:{number}: class id {value!r} is not in {classes_txt}")
    class_of_image[key] = label_of_class[int(value)]

  image_dir = os.path.join(root, "images")
  paths: list[str] = []
  labels: list[int] = []
  for key, rel, number in sorted(images, key=lambda row: row[0]):
    if key not in is_train:
      raise DataError(f"{images_txt}:{number}: image id {key} has no entry in {split_txt}")
    if key not in class_of_image:
      raise DataError(f"{images_txt}:{number}: image id {key} has no entry in {labels_txt}")
    if is_train[key] != (split == "train"):
      continue
    paths.append(os.path.join(image_dir, rel))
    labels.append(class_of_image[key])
  if not paths:
    raise DataError(f"CUB-200-2011 {root} has no {split} images in {split_txt}")
  if not skip_corrupt:
    bad = [(p, problem) for p in paths if (problem := file_problem(p)) is not None]
    if bad:
      path, problem = bad[0]
      what = "is missing" if problem == "no such file" else f"cannot be read: {problem}"
      raise DataError(f"CUB-200-2011 image file {path} {what}"
                      + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
  return _build(paths, labels, fine_names, super_map=super_map, skip_corrupt=skip_corrupt,
                name=f"CUB-200-2011 {root} split {split}", where=f"CUB-200-2011 split {split!r} of {root}",
                max_pixels=max_image_pixels)
