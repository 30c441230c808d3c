"""tfds data sets as record sources, read with ``tfds.data_source`` (no TensorFlow).

`TfdsRecords` opens one split of a prepared tfds data set with
``tfds.data_source(name, split=..., data_dir=..., download=False)`` (array_record
files, random access, no ``tf.data``) and serves the record contract of
`fgjax.data.records`: item ``i`` is ``{'image': uint8 [H, W, 3] RGB, 'fine_label',
['super_label',] 'index'}`` (int32 scalars).

Which features are the image, the fine label and the super label is said per data
set by `TFDS_SPECS` (the keys were read off each builder's ``_info()`` in
tensorflow_datasets 4.9.10). Any other tfds name is accepted when it has an
``'image'`` and a ``'label'`` feature (fine = ``'label'``, no super level).

Reading. A tfds array_record file holds one serialized ``tf.train.Example`` per
record. The source reads the serialized record through the data source's
underlying array_record reader (``data_source.data_source``), parses it with the
pure-protobuf ``tf.train.Example`` message that tfds ships
(``tensorflow_datasets.proto``), and decodes only the image feature, with PIL
``convert('RGB')`` (grayscale, palette, CMYK -> RGB; alpha dropped, not
composited; 16-bit grayscale scaled to 8 bits). Other image features of the
record (e.g. the segmentation masks of caltech_birds2011 and oxford_iiit_pet),
which ``tfds.data_source``'s own decoding would decode every time, are left alone.
When the underlying reader does not hand out serialized bytes (another file
format, or ``tfds.testing.mock_data``, whose mock hands out generated examples),
the record is read through the data source's own decoding instead and its image
array is brought to ``[H, W, 3]`` uint8 (2-d or 1 channel -> 3 channels, alpha
dropped).

Labels. ``fine_labels`` / ``super_labels`` are read once, lazily, on first access
(then cached, and carried along when the source is pickled). array_record keeps the
labels inside each record, so this reads every record of the split from disk once
(all of the split's bytes, images included, in parallel batches of 256 records) and
parses its label fields; no image is decoded. Only on the fallback path above (no
serialized bytes) does it decode every record.

Pickling (grain worker processes). The tfds data source pickles (its array_record
reader reopens its files lazily), so a pickled `TfdsRecords` carries it along; if
it ever cannot be pickled, the copy drops it and reopens ``tfds.data_source(name,
split, data_dir)`` on its first read.

Preparing a data set (needs the download and, for these builders, TensorFlow;
reading does not)::

  tfds build caltech_birds2011 --file_format=array_record --data_dir=/data/tfds
  # or: tfds.builder(name, data_dir=...).download_and_prepare(file_format='array_record')
"""

from __future__ import annotations

import dataclasses
import io
import operator
import os
import pickle
import re
from typing import Any
from typing import Mapping

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from fgjax.data.records import DataError
from fgjax.data.records import decode_rgb


__all__ = ["TFDS_SPECS", "TfdsRecords", "TfdsSpec", "spec_for"]


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """Which features of a tfds data set make a record, and its standard splits.

  Attributes:
    image_key: the ``tfds.features.Image`` feature.
    fine_key: the fine-class label (a ``ClassLabel``, or an integer scalar).
    super_key: the super-class label, or None when the data set has none.
    train_split, test_split: the tfds split names used for training / evaluation.
  """

  image_key: str
  fine_key: str
  super_key: str | None
  train_split: str
  test_split: str


# Feature keys and split names verified against the builders' `_info()` and
# `_split_generators()` in tensorflow_datasets 4.9.10 (files under
# site-packages/tensorflow_datasets/).
TFDS_SPECS: dict[str, TfdsSpec] = {
    # image_classification/caltech_birds.py, CaltechBirds2011 (v0.2.0): 'image', 'label'
    # ClassLabel(200), also 'label_name', 'bbox', 'segmentation_mask'; Split.TRAIN / TEST.
    "caltech_birds2011": TfdsSpec("image", "label", None, "train", "test"),
    # image_classification/cars196.py (v2.1.0): 'image', 'label' ClassLabel(196 names),
    # 'bbox', 'id'; splits 'train' / 'test'.
    "cars196": TfdsSpec("image", "label", None, "train", "test"),
    # datasets/oxford_iiit_pet/oxford_iiit_pet_dataset_builder.py (v4.0.0): 'label'
    # ClassLabel(37 breeds), 'species' ClassLabel(['Cat', 'Dog']); splits 'train' / 'test'.
    "oxford_iiit_pet": TfdsSpec("image", "label", "species", "train", "test"),
    # image_classification/cifar.py, Cifar100 (v3.0.2): 'label' ClassLabel(100),
    # 'coarse_label' ClassLabel(20), 'id'; Split.TRAIN / TEST.
    "cifar100": TfdsSpec("image", "label", "coarse_label", "train", "test"),
    # datasets/stanford_online_products/stanford_online_products_dataset_builder.py
    # (v1.0.0): 'class_id' ClassLabel(num_classes=22634), 'super_class_id' ClassLabel(12
    # names) (and 'super_class_id/num', the same number); Split.TRAIN / TEST. Train and
    # test hold disjoint classes (the retrieval protocol).
    "stanford_online_products": TfdsSpec("image", "class_id", "super_class_id", "train", "test"),
    # datasets/stanford_dogs/stanford_dogs_dataset_builder.py: 'label' ClassLabel(120).
    "stanford_dogs": TfdsSpec("image", "label", None, "train", "test"),
    # datasets/oxford_flowers102/oxford_flowers102_dataset_builder.py: 'label'
    # ClassLabel(102); splits train / test / validation.
    "oxford_flowers102": TfdsSpec("image", "label", None, "train", "test"),
    # image_classification/food101.py: 'label' ClassLabel(101); splits train / validation.
    "food101": TfdsSpec("image", "label", None, "train", "validation"),
    # image_classification/inaturalist.py: 'label' ClassLabel(5089), 'supercategory'
    # ClassLabel(13); the 'test' split is unlabelled (-1), so evaluate on 'validation'.
    "i_naturalist2017": TfdsSpec("image", "label", "supercategory", "train", "validation"),
}

_GENERIC_SPEC = TfdsSpec("image", "label", None, "train", "test")
_LABEL_CHUNK = 256  # Records read at once when reading every label.
_RAW_TYPES = (bytes, bytearray, memoryview)


def _one_line(text: Any, limit: int = 400) -> str:
  text = " ".join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _base_name(name: str) -> str:
  """'cifar100:3.0.2' / 'foo/config' -> the registered builder name."""
  return re.split(r"[/:]", name.strip(), maxsplit=1)[0]


def _feature_keys(features: Any) -> list[str]:
  return list(features.keys()) if hasattr(features, "keys") else []


def spec_for(name: str, features: Any) -> TfdsSpec:
  """The `TfdsSpec` of tfds data set ``name`` whose top-level features are ``features``.

  A name in `TFDS_SPECS` (config and version suffixes ignored) gets its entry; any
  other name gets ``image`` / ``label`` / no super level, provided it has both
  features.

  Raises:
    DataError: an unknown name without an ``'image'`` and a ``'label'`` feature, or
      a spec key missing from ``features`` (the message names the data set and key).
  """
  keys = _feature_keys(features)
  spec = TFDS_SPECS.get(_base_name(name))
  if spec is None:
    if "image" not in keys or "label" not in keys:
      raise DataError(
          f"tfds dataset {name!r} is not one of the known data sets ({', '.join(TFDS_SPECS)}) and "
          f"has no 'image' and 'label' features to use instead (its features: {', '.join(keys)})")
    spec = _GENERIC_SPEC
  roles = (("image", spec.image_key), ("fine label", spec.fine_key), ("super label", spec.super_key))
  for role, key in roles:
    if key is not None and key not in keys:
      raise DataError(f"tfds dataset {name!r} has no feature {key!r} (the {role}); its features: "
                      f"{', '.join(keys)}")
  if not isinstance(features[spec.image_key], tfds.features.Image):
    raise DataError(f"tfds dataset {name!r}: feature {spec.image_key!r} is a "
                    f"{type(features[spec.image_key]).__name__}, not an Image")
  for key in (spec.fine_key, spec.super_key):
    if key is None:
      continue
    feature = features[key]
    shape = tuple(getattr(feature, "shape", (None,)))
    dtype = np.dtype(getattr(feature, "np_dtype", np.float32))
    if not isinstance(feature, tfds.features.ClassLabel) and (shape != () or dtype.kind not in "iu"):
      raise DataError(f"tfds dataset {name!r}: label feature {key!r} is not a ClassLabel or an integer "
                      f"scalar ({feature!r})")
  return spec


def _data_dir_text(data_dir: str | None) -> str:
  if data_dir:
    return data_dir
  return f"{tfds.core.constants.get_default_data_dir()} (the default)"


def _open_error(name: str, split: str, data_dir: str | None, error: BaseException) -> DataError:
  """Says in one line why ``tfds.data_source`` failed, and how to prepare the data."""
  where = f"tfds dataset {name!r} split {split!r} in data_dir {_data_dir_text(data_dir)}"
  build_dir = data_dir or tfds.core.constants.get_default_data_dir()
  hint = (f"prepare it with `tfds build {name} --file_format=array_record --data_dir={build_dir}` "
          f"or tfds.builder({name!r}, data_dir=...).download_and_prepare(file_format='array_record')")
  not_found = DataError(f"{where}: tensorflow_datasets {tfds.__version__} has no dataset named "
                        f"{_base_name(name)!r} (see tfds.list_builders())")
  if isinstance(error, tfds.core.registered.DatasetNotFoundError):
    return not_found
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    return not_found
  except Exception as e:  # Bad config / version: tfds says which.
    return DataError(f"{where}: cannot construct the tfds builder: {_one_line(e)}")
  spec_for(name, builder.info.features)  # An unusable data set is said before "not prepared".
  if not builder.is_prepared():
    return DataError(f"{where} is not prepared (no {builder.data_dir}); {hint} (building downloads the data "
                     "and needs TensorFlow; reading does not)")
  random_access = tfds.core.file_adapters.FileFormat.with_random_access()
  formats = set(builder.info.available_file_formats())
  if not formats & random_access:
    found = ", ".join(sorted(f.value for f in formats)) or "an unknown format"
    return DataError(f"{where} is prepared at {builder.data_dir} as {found}, which tfds.data_source "
                     f"cannot read (it needs array_record files); {hint} into another data_dir (or delete "
                     "that copy)")
  splits = ", ".join(repr(s) for s in builder.info.splits) or "none"
  return DataError(f"{where} cannot be opened (prepared splits: {splits}): {_one_line(error)}")


def _open(name: str, split: str, data_dir: str | None) -> Any:
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:
    raise _open_error(name, split, data_dir, e) from e


def _class_names(feature: Any) -> list[str] | None:
  """The names of a ClassLabel feature (``'0'``, ``'1'``, ... when it has none), else None."""
  if isinstance(feature, tfds.features.ClassLabel):
    return [str(n) for n in feature.names]
  return None


def _picklable(obj: Any) -> bool:
  try:
    pickle.dumps(obj)
  except Exception:  # PicklingError, TypeError, AttributeError, ...: all mean no.
    return False
  return True


def _to_rgb(image: np.ndarray) -> np.ndarray:
  """A decoded image array -> uint8 [H, W, 3] (gray repeated, alpha dropped). None if impossible."""
  if image.dtype != np.uint8:
    if image.dtype == np.uint16:
      image = ((image.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
    else:
      return None
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3:
    return None
  channels = image.shape[-1]
  if channels in (1, 2):  # Gray, gray + alpha.
    image = np.repeat(image[..., :1], 3, axis=-1)
  elif channels == 4:  # RGBA.
    image = image[..., :3]
  elif channels != 3:
    return None
  return np.ascontiguousarray(image)


def _decode_image_bytes(data: bytes) -> np.ndarray:
  """Encoded image bytes (PNG, JPEG, ...) -> uint8 [H, W, 3] RGB. Raises on bad data."""
  return decode_rgb(io.BytesIO(data))


class TfdsRecords:
  """One split of a prepared tfds data set as a grain random-access record source.

  ``source[i]`` is ``{'image': uint8 [H, W, 3] RGB, 'fine_label': int32,
  ['super_label': int32,] 'index': int32}`` (see the module docstring for how the
  record is read and decoded).

  Attributes:
    name, split, data_dir: what was opened (``data_dir`` None: the tfds default).
    spec: the `TfdsSpec` in use.
    fine_names, super_names: class names, index = label, from the ``ClassLabel``
      features (``super_names`` None without a super level). A label that is a
      plain integer feature is named ``str(i)`` for ``i < max label + 1``, which
      reads every label at construction.
    fine_labels, super_labels: int32 ``[N]`` labels of every record (``super_labels``
      None without a super level). Read on first access, without decoding images
      but reading every record once (see the module docstring), then cached.
    description: e.g. ``tfds caltech_birds2011:train (5994 images, 200 classes)``.
    num_skipped: always 0 (tfds has no unreadable-file skipping).

  Raises (constructor):
    DataError: unknown or unsuitable data set, not prepared in ``data_dir``, not
      prepared as array_record, or no such split; one line naming the data set, the
      split and the data_dir, and how to prepare it.
  """

  def __init__(self, name: str, split: str, *, data_dir: str | os.PathLike | None = None):
    self.name = str(name)
    self.split = str(split)
    self.data_dir = os.fspath(data_dir) if data_dir else None
    self._source = _open(self.name, self.split, self.data_dir)
    features = self._source.dataset_info.features
    self.spec = spec_for(self.name, features)
    self._len = len(self._source)
    self._fine_labels: np.ndarray | None = None
    self._super_labels: np.ndarray | None = None
    self.fine_names = _class_names(features[self.spec.fine_key])
    self.super_names = None
    if self.spec.super_key is not None:
      self.super_names = _class_names(features[self.spec.super_key])
    if self.fine_names is None or (self.spec.super_key is not None and self.super_names is None):
      self._load_labels(check=False)  # Plain integer labels: the names come from the labels.
      if self.fine_names is None:
        self.fine_names = [str(i) for i in range(int(self._fine_labels.max(initial=-1)) + 1)]
      if self.spec.super_key is not None and self.super_names is None:
        self.super_names = [str(i) for i in range(int(self._super_labels.max(initial=-1)) + 1)]
      self._check_labels()
    self.num_skipped = 0
    if self.super_names is None:
      classes = f"{len(self.fine_names)} classes"
    else:
      classes = f"{len(self.fine_names)} fine / {len(self.super_names)} super classes"
    self.description = f"tfds {self.name}:{self.split} ({self._len} images, {classes})"

  # ---------------------------------------------------------------------------------
  # Labels.

  @property
  def fine_labels(self) -> np.ndarray:
    if self._fine_labels is None:
      self._load_labels()
    return self._fine_labels

  @property
  def super_labels(self) -> np.ndarray | None:
    if self.spec.super_key is None:
      return None
    if self._super_labels is None:
      self._load_labels()
    return self._super_labels

  def _label_keys(self) -> list[str]:
    return [self.spec.fine_key] + ([self.spec.super_key] if self.spec.super_key else [])

  def _load_labels(self, check: bool = True) -> None:
    """Reads the labels of every record (serialized records: no image is decoded)."""
    keys = self._label_keys()
    out = {key: np.empty(self._len, np.int32) for key in keys}
    reader = self._reader()
    for start in range(0, self._len, _LABEL_CHUNK):
      indices = list(range(start, min(self._len, start + _LABEL_CHUNK)))
      raws = self._read_raw(reader, indices)
      for i, raw in zip(indices, raws):
        if isinstance(raw, _RAW_TYPES):
          feature_map = self._parse(raw, i)
          for key in keys:
            out[key][i] = self._int_feature(feature_map, key, i)
        else:
          example = self._ensure_source()[i]
          for key in keys:
            out[key][i] = int(example[key])
    self._fine_labels = out[self.spec.fine_key]
    if self.spec.super_key is not None:
      self._super_labels = out[self.spec.super_key]
    if check:
      self._check_labels()

  def _check_labels(self) -> None:
    for what, labels, names in (("fine", self._fine_labels, self.fine_names),
                                ("super", self._super_labels, self.super_names)):
      if labels is None or names is None or not len(labels):
        continue
      bad = np.flatnonzero((labels < 0) | (labels >= len(names)))
      if bad.size:
        raise DataError(f"{self.description}: {what} label {int(labels[bad[0]])} of record {int(bad[0])} is "
                        f"outside [0, {len(names)}) ({bad.size} records; an unlabelled split?)")

  # ---------------------------------------------------------------------------------
  # Reading.

  def _ensure_source(self) -> Any:
    if self._source is None:  # Unpickled without its data source: reopen.
      self._source = _open(self.name, self.split, self.data_dir)
    return self._source

  def _reader(self) -> Any:
    """The data source's underlying reader (serialized records), or None."""
    return getattr(self._ensure_source(), "data_source", None)

  def _read_raw(self, reader: Any, indices: list[int]) -> list[Any]:
    if reader is None:
      return [None] * len(indices)
    getitems = getattr(type(reader), "__getitems__", None)  # Looked up on the type, as dunders are.
    if getitems is not None:  # array_record reads a batch of records in parallel.
      return list(getitems(reader, indices))
    return [reader[i] for i in indices]

  def _parse(self, raw: Any, i: int) -> Mapping[str, Any]:
    try:
      return tf_example_pb2.Example.FromString(bytes(raw)).features.feature
    except Exception as e:  # protobuf DecodeError.
      raise DataError(f"record {i} of {self.description} is not a serialized tf.train.Example: "
                      f"{_one_line(e)}") from e

  def _int_feature(self, feature_map: Mapping[str, Any], key: str, i: int) -> int:
    if key not in feature_map or len(feature_map[key].int64_list.value) != 1:
      raise DataError(f"record {i} of {self.description} has no integer feature {key!r}")
    return int(feature_map[key].int64_list.value[0])

  def _record_from_raw(self, raw: Any, i: int) -> tuple[np.ndarray, dict[str, int]]:
    feature_map = self._parse(raw, i)
    key = self.spec.image_key
    if key not in feature_map or len(feature_map[key].bytes_list.value) != 1:
      raise DataError(f"record {i} of {self.description} has no encoded image {key!r}")
    try:
      image = _decode_image_bytes(feature_map[key].bytes_list.value[0])
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... on bad data.
      raise DataError(f"cannot decode the image of record {i} of {self.description}: "
                      f"{_one_line(f'{type(e).__name__}: {e}')}") from e
    return image, {k: self._int_feature(feature_map, k, i) for k in self._label_keys()}

  def _record_from_source(self, i: int) -> tuple[np.ndarray, dict[str, int]]:
    example = self._ensure_source()[i]
    array = np.asarray(example[self.spec.image_key])
    image = _to_rgb(array)
    if image is None:
      raise DataError(f"record {i} of {self.description}: image of shape {array.shape} {array.dtype} is "
                      "not uint8 [H, W, 1-4]")
    return image, {k: int(example[k]) for k in self._label_keys()}

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    i = operator.index(i)
    if not 0 <= i < self._len:
      raise IndexError(f"record {i} out of range for {self._len} records ({self.description})")
    reader = self._reader()
    raw = reader[i] if reader is not None else None
    if isinstance(raw, _RAW_TYPES):
      image, labels = self._record_from_raw(raw, i)
    else:
      image, labels = self._record_from_source(i)
    item = {"image": image}
    for out_key, key, names in (("fine_label", self.spec.fine_key, self.fine_names),
                                ("super_label", self.spec.super_key, self.super_names)):
      if key is None:
        continue
      label = labels[key]
      if not 0 <= label < len(names):
        raise DataError(f"record {i} of {self.description}: {out_key} {label} outside [0, {len(names)})")
      item[out_key] = np.int32(label)
    item["index"] = np.int32(i)
    return item

  # ---------------------------------------------------------------------------------
  # Pickling (grain worker processes).

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    if state["_source"] is not None and not _picklable(state["_source"]):
      state["_source"] = None  # Reopened by name / split / data_dir on the first read.
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)

  def __repr__(self) -> str:
    return f"TfdsRecords({self.description})"
