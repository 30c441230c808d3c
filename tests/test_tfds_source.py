"""tfds record sources (`fgjax.data.tfds_source`), without TensorFlow and without downloads.

Two kinds of data:

* ``tfds.testing.mock_data(policy=MockPolicy.USE_CODE)``: patches
  ``DatasetBuilder.as_data_source``, so ``tfds.data_source`` returns a real tfds
  ``ArrayRecordDataSource`` whose reader is a (picklable) mock generating random
  examples from the builder's own features (its ``_info()`` in the installed tfds),
  with no files. This checks `TFDS_SPECS` against the real builders' features and the
  decoded-example read path. Mock labels are random: no hierarchy is asserted.
* a tiny data set written to a tmp dir by a tfds ``GeneratorBasedBuilder`` with
  ``download_and_prepare(file_format='array_record')`` (pure Python: images given as
  encoded bytes need no TensorFlow). This checks the serialized-record read path
  (what real prepared data goes through), image conversion, label reading, pickling
  and the errors.
"""

import io
import json
import pickle
import shutil

import grain
import numpy as np
import pytest
from PIL import Image


tfds = pytest.importorskip("tensorflow_datasets")

from fgjax.data import tfds_source  # noqa: E402
from fgjax.data.records import DataError  # noqa: E402


# name -> (number of fine classes, number of super classes or None), from the builders.
NAMED = {
    "caltech_birds2011": (200, None),
    "cars196": (196, None),
    "oxford_iiit_pet": (37, 2),
    "cifar100": (100, 20),
    "stanford_online_products": (22634, 12),
}
NUM_MOCK = 8


@pytest.fixture
def mock_tfds():
  with tfds.testing.mock_data(num_examples=NUM_MOCK, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_datasets_follow_the_record_contract(name, mock_tfds, tmp_path):
  num_fine, num_super = NAMED[name]
  spec = tfds_source.TFDS_SPECS[name]
  src = tfds_source.TfdsRecords(name, spec.train_split, data_dir=str(tmp_path))
  assert src.spec == spec
  assert len(src) == NUM_MOCK
  assert src.description == f"tfds {name}:train ({NUM_MOCK} images, " + (
      f"{num_fine} classes)" if num_super is None else f"{num_fine} fine / {num_super} super classes)")
  assert len(src.fine_names) == num_fine
  has_super = num_super is not None
  assert (src.super_names is not None) == has_super and (src.super_labels is not None) == has_super
  assert src.fine_labels.dtype == np.int32 and src.fine_labels.shape == (NUM_MOCK,)
  assert src.fine_labels.min() >= 0 and src.fine_labels.max() < num_fine
  if has_super:
    assert len(src.super_names) == num_super
    assert src.super_labels.dtype == np.int32 and src.super_labels.shape == (NUM_MOCK,)
    assert src.super_labels.min() >= 0 and src.super_labels.max() < num_super
  for i in (0, 3, NUM_MOCK - 1):
    item = src[i]
    assert set(item) == {"image", "fine_label", "index"} | ({"super_label"} if has_super else set())
    image = item["image"]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert item["index"].dtype == np.int32 and item["index"] == i
    assert item["fine_label"].dtype == np.int32 and item["fine_label"] == src.fine_labels[i]
    if has_super:
      assert item["super_label"].dtype == np.int32 and item["super_label"] == src.super_labels[i]
  copy = pickle.loads(pickle.dumps(src))
  assert copy[0]["fine_label"] == src[0]["fine_label"]
  np.testing.assert_array_equal(copy[0]["image"], src[0]["image"])
  if has_super:
    assert copy[0]["super_label"] == src[0]["super_label"]
  with pytest.raises(IndexError):
    src[NUM_MOCK]


@pytest.mark.parametrize("name", sorted(set(tfds_source.TFDS_SPECS) - set(NAMED)))
def test_other_specs_match_their_builders(name, mock_tfds):
  spec = tfds_source.TFDS_SPECS[name]
  src = tfds_source.TfdsRecords(name, spec.test_split)
  assert (src.super_labels is not None) == (spec.super_key is not None)
  assert set(src[1]) >= {"image", "fine_label", "index"}


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(DataError) as info:
    tfds_source.TfdsRecords("caltech_birds2011", "train", data_dir=str(tmp_path))
  message = str(info.value)
  assert "caltech_birds2011" in message and "array_record" in message
  assert "'train'" in message and str(tmp_path) in message and "\n" not in message


def test_unknown_name_is_a_data_error(tmp_path):
  with pytest.raises(DataError, match="no_such_dataset_fgjax"):
    tfds_source.TfdsRecords("no_such_dataset_fgjax", "train", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------
# A tiny real array_record data set, written by tfds itself.

FINE = ["a", "b", "c"]
COARSE = ["x", "y"]
NUM_TRAIN = 8
# Record k (identified by its image height 4 + k) is stored in this PIL mode.
MODES = ["RGB", "L", "RGBA", "P", "CMYK", "I;16", "LA", "RGB"]


def _pixels(k):
  rng = np.random.default_rng(k)
  return rng.integers(0, 256, (4 + k, 5, 4), dtype=np.uint8)


def _encoded(k):
  """(encoded image bytes, expected RGB array or None where lossy) of record k."""
  pixels, mode = _pixels(k), MODES[k]
  buf = io.BytesIO()
  if mode == "RGB":
    Image.fromarray(pixels[..., :3], "RGB").save(buf, "PNG")
    expected = pixels[..., :3]
  elif mode == "L":
    Image.fromarray(pixels[..., 0], "L").save(buf, "PNG")
    expected = np.repeat(pixels[..., :1], 3, axis=-1)
  elif mode == "RGBA":
    Image.fromarray(pixels, "RGBA").save(buf, "PNG")
    expected = pixels[..., :3]  # Alpha dropped, not composited.
  elif mode == "LA":
    Image.fromarray(pixels[..., :2], "LA").save(buf, "PNG")
    expected = np.repeat(pixels[..., :1], 3, axis=-1)
  elif mode == "P":
    img = Image.fromarray(pixels[..., :3], "RGB").quantize(4)
    img.save(buf, "PNG")
    expected = np.array(img.convert("RGB"))
  elif mode == "CMYK":
    Image.fromarray(pixels, "CMYK").save(buf, "JPEG", quality=95)
    expected = None  # Lossy; checked for shape only.
  else:  # 16-bit grayscale: scaled to 8 bits, not clipped.
    wide = pixels[..., 0].astype(np.uint16) * 257
    Image.fromarray(wide).save(buf, "PNG")  # uint16 -> mode I;16.
    expected = np.repeat(pixels[..., :1], 3, axis=-1)
  return buf.getvalue(), expected


class FgjaxTinyImages(tfds.core.GeneratorBasedBuilder):
  """Eight (train) / three (test) small images in assorted PIL modes; label k % 3, coarse k % 2."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(),
        "label": tfds.features.ClassLabel(names=FINE),
        "coarse": tfds.features.ClassLabel(names=COARSE),
        "mask": tfds.features.Image(shape=(None, None, 1)),
    }))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(NUM_TRAIN), "test": self._generate_examples(3)}

  def _generate_examples(self, n):
    mask = io.BytesIO()
    Image.fromarray(np.zeros((3, 3), np.uint8), "L").save(mask, "PNG")
    for k in range(n):
      yield k, {"image": _encoded(k)[0], "label": k % 3, "coarse": k % 2, "mask": mask.getvalue()}


class FgjaxTinyNoLabel(tfds.core.GeneratorBasedBuilder):
  """Images with a 'category' but no 'label' feature."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(),
        "category": tfds.features.ClassLabel(names=FINE),
    }))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    yield 0, {"image": _encoded(0)[0], "category": 1}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  for cls in (FgjaxTinyImages, FgjaxTinyNoLabel):
    cls(data_dir=str(data_dir)).download_and_prepare(file_format="array_record")
  return str(data_dir)


def _check_tiny(src):
  """Every record against what was written (records are shuffled: identified by height)."""
  seen = set()
  for i in range(len(src)):
    item = src[i]
    image = item["image"]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    k = image.shape[0] - 4
    seen.add(k)
    _, expected = _encoded(k)
    assert image.shape == (4 + k, 5, 3)
    if expected is not None:
      np.testing.assert_array_equal(image, expected, err_msg=f"mode {MODES[k]}")
    assert item["fine_label"] == k % 3 == src.fine_labels[i]
    assert item["index"] == i
    if src.super_labels is not None:
      assert item["super_label"] == k % 2 == src.super_labels[i]
  assert seen == set(range(len(src)))


def _no_decoding(*args, **kwargs):
  raise AssertionError("an image was decoded by tfds / by the source")


def test_real_array_record_generic_name(tiny_dir, monkeypatch):
  # Serialized records are parsed by the source, which decodes only the 'image' feature itself.
  monkeypatch.setattr(tfds.features.Image, "decode_example_np", _no_decoding)
  src = tfds_source.TfdsRecords("fgjax_tiny_images", "train", data_dir=tiny_dir)
  assert src.spec == tfds_source.TfdsSpec("image", "label", None, "train", "test")
  assert src.description == f"tfds fgjax_tiny_images:train ({NUM_TRAIN} images, 3 classes)"
  assert src.fine_names == FINE and src.super_names is None and src.super_labels is None
  _check_tiny(src)
  assert "super_label" not in src[0]


def test_real_array_record_with_super_level(tiny_dir, monkeypatch):
  monkeypatch.setitem(tfds_source.TFDS_SPECS, "fgjax_tiny_images",
                      tfds_source.TfdsSpec("image", "label", "coarse", "train", "test"))
  src = tfds_source.TfdsRecords("fgjax_tiny_images", "train", data_dir=tiny_dir)
  assert src.super_names == COARSE
  assert src.description == f"tfds fgjax_tiny_images:train ({NUM_TRAIN} images, 3 fine / 2 super classes)"
  _check_tiny(src)


def test_labels_are_read_without_decoding_images(tiny_dir, monkeypatch):
  src = tfds_source.TfdsRecords("fgjax_tiny_images", "train", data_dir=tiny_dir)
  monkeypatch.setattr(tfds_source, "_decode_image_bytes", _no_decoding)
  monkeypatch.setattr(tfds.features.Image, "decode_example_np", _no_decoding)
  labels = src.fine_labels
  assert labels.dtype == np.int32 and sorted(labels) == sorted(k % 3 for k in range(NUM_TRAIN))


def test_real_pickling_carries_the_source_or_reopens_it(tiny_dir, monkeypatch):
  src = tfds_source.TfdsRecords("fgjax_tiny_images", "train", data_dir=tiny_dir)
  labels = src.fine_labels  # Cached labels travel with the pickle.
  copy = pickle.loads(pickle.dumps(src))
  assert copy._source is not None and copy._fine_labels is not None
  np.testing.assert_array_equal(copy[2]["image"], src[2]["image"])
  monkeypatch.setattr(tfds_source, "_picklable", lambda obj: False)
  reopened = pickle.loads(pickle.dumps(src))
  assert reopened._source is None  # Reopened by name / split / data_dir on the first read.
  np.testing.assert_array_equal(reopened[2]["image"], src[2]["image"])
  np.testing.assert_array_equal(reopened.fine_labels, labels)


class _Summary(grain.transforms.Map):
  """Record -> (image height, fine label): the images differ in size, so no batching."""

  def map(self, record):
    return {"height": np.int32(record["image"].shape[0]), "fine_label": record["fine_label"]}


def test_grain_worker_processes_read_the_records(tiny_dir):
  src = tfds_source.TfdsRecords("fgjax_tiny_images", "train", data_dir=tiny_dir)
  from absl import flags
  if not flags.FLAGS.is_parsed():  # grain's workers read absl flags.
    flags.FLAGS.mark_as_parsed()
  ds = grain.MapDataset.source(src).map(_Summary()).to_iter_dataset()
  got = [(int(r["height"]), int(r["fine_label"]))
         for r in ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=1))]
  assert got == [(src[i]["image"].shape[0], int(src.fine_labels[i])) for i in range(len(src))]


def test_slices_of_a_split(tiny_dir):
  src = tfds_source.TfdsRecords("fgjax_tiny_images", "train[:3]", data_dir=tiny_dir)
  whole = tfds_source.TfdsRecords("fgjax_tiny_images", "train", data_dir=tiny_dir)
  assert len(src) == 3
  np.testing.assert_array_equal(src.fine_labels, whole.fine_labels[:3])


def test_missing_split_names_the_available_ones(tiny_dir):
  with pytest.raises(DataError) as info:
    tfds_source.TfdsRecords("fgjax_tiny_images", "validation", data_dir=tiny_dir)
  message = str(info.value)
  assert "fgjax_tiny_images" in message and "'validation'" in message and tiny_dir in message
  assert "'train'" in message and "'test'" in message and "\n" not in message


def test_prepared_without_array_record(tiny_dir, tmp_path):
  # tfrecord files cannot be written without TensorFlow: relabel a copy's metadata.
  shutil.copytree(f"{tiny_dir}/fgjax_tiny_images", tmp_path / "fgjax_tiny_images")
  info_path = tmp_path / "fgjax_tiny_images" / "1.0.0" / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info["fileFormat"] = "tfrecord"
  info_path.write_text(json.dumps(info))
  with pytest.raises(DataError) as error:
    tfds_source.TfdsRecords("fgjax_tiny_images", "train", data_dir=str(tmp_path))
  message = str(error.value)
  assert "fgjax_tiny_images" in message and "tfrecord" in message and "array_record" in message
  assert str(tmp_path) in message and "\n" not in message


def test_unknown_name_without_label_feature(tiny_dir):
  with pytest.raises(DataError, match="fgjax_tiny_no_label.*'label'"):
    tfds_source.TfdsRecords("fgjax_tiny_no_label", "train", data_dir=tiny_dir)


@pytest.mark.parametrize("shape,channels_from", [
    ((4, 5), None), ((4, 5, 1), None), ((4, 5, 2), None), ((4, 5, 3), 3), ((4, 5, 4), 3)])
def test_decoded_arrays_become_rgb(shape, channels_from):
  array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  rgb = tfds_source._to_rgb(array)
  assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
  if channels_from is None:
    gray = array if array.ndim == 2 else array[..., 0]
    np.testing.assert_array_equal(rgb, np.repeat(gray[..., None], 3, axis=-1))
  else:
    np.testing.assert_array_equal(rgb, array[..., :3])
  assert tfds_source._to_rgb(np.zeros((4, 5, 5), np.uint8)) is None
