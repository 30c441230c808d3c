"""Tests for fgjax.data.folder_source on tiny trees of real JPEG and PNG files."""

import os
import pickle

import grain
import numpy as np
import pytest
from PIL import Image
from PIL import ImageFile

from fgjax.data import folder_source
from fgjax.data.folder_source import FileRecords
from fgjax.data.folder_source import cub200
from fgjax.data.folder_source import decode_image
from fgjax.data.folder_source import image_folder
from fgjax.data.records import DataError


JPEG_TOL = 8  # Max abs error of a solid colour through JPEG (quality 95).

# Class folder names deliberately not in creation order, so sorting matters.
CLASSES = ("warbler", "albatross", "sparrow")
COLOURS = {"albatross": (200, 30, 40), "sparrow": (20, 180, 60), "warbler": (40, 60, 220)}
PER_SPLIT = {"train": 4, "test": 2}
# (file name, size (w, h), kind) per class and split; kinds: rgb jpeg, gray png, rgba png.
FILES = {
    "train": [("img_b.jpg", (20, 14), "rgb"), ("img_a.JPG", (16, 16), "rgb"),
              ("img_d.jpeg", (12, 18), "rgb"), ("img_c.png", (10, 8), "png")],
    "test": [("t2.jpg", (15, 11), "rgb"), ("t1.png", (9, 13), "png")],
}
GRAY_FILE = os.path.join("train", "sparrow", "img_c.png")  # Written as mode L.
RGBA_FILE = os.path.join("test", "albatross", "t1.png")  # Written as mode RGBA.
GRAY_VALUE = 77


def _save(path, size, colour, mode="RGB"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  w, h = size
  array = np.broadcast_to(np.array(colour, np.uint8), (h, w, 3))
  img = Image.fromarray(np.ascontiguousarray(array), "RGB")
  if mode == "L":
    img = Image.new("L", size, GRAY_VALUE)
  elif mode == "RGBA":
    rgba = np.concatenate([array, np.full((h, w, 1), 90, np.uint8)], axis=-1)
    img = Image.fromarray(np.ascontiguousarray(rgba), "RGBA")
  if path.lower().endswith((".jpg", ".jpeg")):
    img.save(path, format="JPEG", quality=95)
  else:
    img.save(path, format="PNG")


def _make_tree(root, classes=CLASSES, splits=("train", "test")):
  """root/<split>/<class>/files of solid colour, with one gray and one RGBA PNG."""
  for split in splits:
    for name in classes:
      for file_name, size, kind in FILES[split]:
        rel = os.path.join(split, name, file_name)
        mode = "L" if rel == GRAY_FILE else "RGBA" if rel == RGBA_FILE else "RGB"
        _save(os.path.join(root, rel), size, COLOURS.get(name, (128, 128, 128)), mode)
      # Non-image files are ignored.
      with open(os.path.join(root, split, name, "notes.txt"), "w") as f:
        f.write("not an image\n")
      with open(os.path.join(root, split, name, ".DS_Store"), "wb") as f:
        f.write(b"\0\1\2")
  return str(root)


def _write_map(path, sep, rows):
  with open(path, "w") as f:
    f.write("# fine<sep>super\n\n")
    for fine, sup in rows:
      f.write(f"{fine}{sep}{sup}\n")
  return str(path)


def _truncate_half(path):
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])


def _noisy_jpeg(path, size=(64, 64)):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, format="JPEG")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  return _make_tree(tmp_path_factory.mktemp("folder"))


# ---------------------------------------------------------------------------------------
# decode_image


def test_decode_image_modes(tmp_path):
  a = (np.arange(12 * 10 * 3) % 256).astype(np.uint8).reshape(12, 10, 3)
  Image.fromarray(a).save(tmp_path / "rgb.png")
  Image.fromarray(a).convert("RGBA").save(tmp_path / "rgba.png")
  Image.fromarray(a).convert("P").save(tmp_path / "pal.png")
  Image.fromarray(a[..., 0]).save(tmp_path / "gray.png")
  Image.fromarray((a[..., 0].astype(np.uint16) * 257)).save(tmp_path / "gray16.png")
  Image.fromarray(a).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
  np.testing.assert_array_equal(decode_image(str(tmp_path / "rgb.png")), a)
  np.testing.assert_array_equal(decode_image(str(tmp_path / "rgba.png")), a)
  np.testing.assert_array_equal(decode_image(str(tmp_path / "gray.png")), np.repeat(a[..., :1], 3, -1))
  np.testing.assert_array_equal(decode_image(str(tmp_path / "gray16.png")), np.repeat(a[..., :1], 3, -1))
  for name in ("pal.png", "cmyk.jpg"):
    out = decode_image(str(tmp_path / name))
    assert out.dtype == np.uint8 and out.shape == (12, 10, 3), name


def test_decode_image_errors(tmp_path):
  assert ImageFile.LOAD_TRUNCATED_IMAGES is False
  missing = str(tmp_path / "nope.jpg")
  with pytest.raises(DataError, match="cannot read image .*nope.jpg"):
    decode_image(missing)
  path = str(tmp_path / "cut.jpg")
  _noisy_jpeg(path)
  _truncate_half(path)
  with Image.open(path) as img:  # The header survives: only a full decode notices.
    assert img.size == (64, 64)
  with pytest.raises(DataError) as e:
    decode_image(path)
  assert path in str(e.value) and "\n" not in str(e.value)
  text = tmp_path / "text.jpg"
  text.write_text("hello, I am not a JPEG\n")
  with pytest.raises(DataError, match="text.jpg"):
    decode_image(str(text))
  assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ---------------------------------------------------------------------------------------
# image_folder


def test_image_folder_labels_names_and_sizes(tree):
  train, test = image_folder(tree, "train"), image_folder(tree, "test")
  names = sorted(CLASSES)
  for split, src in (("train", train), ("test", test)):
    n = PER_SPLIT[split]
    assert len(src) == 3 * n
    assert src.fine_names == names
    assert src.super_names is None and src.super_labels is None
    assert src.fine_labels.dtype == np.int32 and src.fine_labels.shape == (3 * n,)
    np.testing.assert_array_equal(src.fine_labels, np.repeat(np.arange(3), n))
    assert src.num_skipped == 0 and src.skipped_paths == []
    assert split in src.description and "\n" not in src.description
    for i, path in enumerate(src.paths):  # Class by class, file names sorted, no .txt/.DS_Store.
      assert os.path.basename(os.path.dirname(path)) == names[src.fine_labels[i]]
      assert path.lower().endswith((".jpg", ".jpeg", ".png"))
  assert [os.path.basename(p) for p in train.paths[:4]] == sorted(f for f, _, _ in FILES["train"])


def test_image_folder_items_decode(tree):
  src = image_folder(tree, "train")
  sizes = {f: s for f, s, _ in FILES["train"]}
  for i in range(len(src)):
    item = src[i]
    assert set(item) == {"image", "fine_label", "index"}
    image = item["image"]
    w, h = sizes[os.path.basename(src.paths[i])]
    assert image.dtype == np.uint8 and image.shape == (h, w, 3)
    assert item["fine_label"].dtype == np.int32 and item["fine_label"].shape == ()
    assert item["index"].dtype == np.int32 and int(item["index"]) == i
    name = src.fine_names[int(item["fine_label"])]
    if src.paths[i].endswith(GRAY_FILE):
      np.testing.assert_array_equal(image, np.full((h, w, 3), GRAY_VALUE, np.uint8))
    else:
      diff = np.abs(image.astype(int) - np.array(COLOURS[name]))
      assert diff.max() <= JPEG_TOL, (src.paths[i], diff.max())
  # The RGBA PNG drops its alpha channel exactly.
  test = image_folder(tree, "test")
  i = next(i for i, p in enumerate(test.paths) if p.endswith(RGBA_FILE))
  np.testing.assert_array_equal(test[i]["image"], np.full((13, 9, 3), COLOURS["albatross"], np.uint8))
  with pytest.raises(IndexError):
    test[len(test)]


@pytest.mark.parametrize("sep", ["\t", ","])
def test_image_folder_super_map(tree, tmp_path, sep):
  rows = [("albatross", "seabird"), ("sparrow", "songbird"), ("warbler", "songbird")]
  path = _write_map(tmp_path / "map.txt", sep, rows)
  src = image_folder(tree, "train", super_map=path)
  assert src.super_names == ["seabird", "songbird"]
  np.testing.assert_array_equal(src.super_labels, np.repeat([0, 1, 1], 4))
  assert src.super_labels.dtype == np.int32
  item = src[5]
  assert item["super_label"].dtype == np.int32 and int(item["super_label"]) == 1
  assert int(src[0]["super_label"]) == 0


def test_image_folder_deterministic_and_picklable(tree):
  a, b = image_folder(tree, "train"), image_folder(tree, "train")
  assert a.paths == b.paths
  np.testing.assert_array_equal(a.fine_labels, b.fine_labels)
  c = pickle.loads(pickle.dumps(a))
  assert isinstance(c, FileRecords) and c.paths == a.paths and c.fine_names == a.fine_names
  np.testing.assert_array_equal(c.fine_labels, a.fine_labels)
  for i in (0, 7):
    x, y = a[i], c[i]
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_image_folder_grain(tree, tmp_path):
  path = _write_map(tmp_path / "map.csv", ",", [(c, "bird") for c in CLASSES])
  src = image_folder(tree, "test", super_map=path)
  ds = grain.MapDataset.source(src)
  assert len(ds) == 6
  item = ds[3]
  assert item["image"].dtype == np.uint8 and int(item["fine_label"]) == 1
  assert int(item["super_label"]) == 0 and int(item["index"]) == 3
  labels = [int(x) for x in ds.map(lambda r: r["fine_label"])]
  assert labels == src.fine_labels.tolist()


def test_image_folder_missing_root(tmp_path):
  root = str(tmp_path / "does_not_exist")
  with pytest.raises(DataError, match="does_not_exist"):
    image_folder(root, "train")


def test_image_folder_missing_split_lists_splits(tree):
  with pytest.raises(DataError) as e:
    image_folder(tree, "val")
  message = str(e.value)
  assert "'val'" in message and "test, train" in message and "\n" not in message


def test_image_folder_split_without_classes(tmp_path):
  root = _make_tree(tmp_path / "d", splits=("train",))
  os.makedirs(os.path.join(root, "test"))
  with pytest.raises(DataError, match="test"):
    image_folder(root, "test")


def test_image_folder_empty_class(tmp_path):
  root = _make_tree(tmp_path / "d")
  empty = os.path.join(root, "test", "sparrow")
  for name in os.listdir(empty):
    if name.endswith((".jpg", ".png")):
      os.remove(os.path.join(empty, name))
  image_folder(root, "train")  # Only the split read is listed.
  with pytest.raises(DataError) as e:
    image_folder(root, "test")
  assert empty in str(e.value) and "sparrow" in str(e.value)


def test_image_folder_classes_differ_between_splits(tmp_path):
  root = _make_tree(tmp_path / "d")
  _save(os.path.join(root, "train", "zebra_finch", "a.jpg"), (8, 8), (1, 2, 3))
  for split in ("train", "test"):  # Either split refuses: labels would not match.
    with pytest.raises(DataError) as e:
      image_folder(root, split)
    assert "split 'test' lacks 'zebra_finch'" in str(e.value)


def test_image_folder_super_map_missing_class(tree, tmp_path):
  path = _write_map(tmp_path / "map.tsv", "\t", [("albatross", "seabird"), ("warbler", "songbird")])
  with pytest.raises(DataError) as e:
    image_folder(tree, "train", super_map=path)
  assert "sparrow" in str(e.value) and path in str(e.value)


@pytest.mark.parametrize("content, match", [
    ("albatross\tseabird\n".encode() + "warbler\tSingv\u00f6gel\n".encode("latin-1"),
     r"is not UTF-8 text: byte 0xf6 at offset 31 \(line 2\); save it as UTF-8"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", r"is a binary file \(a NUL byte at offset 8\)"),
])
def test_a_super_map_that_is_not_utf8_text_is_one_error_naming_the_byte(tree, tmp_path, content, match):
  """It was a UnicodeDecodeError traceback from the reader."""
  path = tmp_path / "map.tsv"
  path.write_bytes(content)
  with pytest.raises(DataError, match=match) as e:
    image_folder(tree, "train", super_map=str(path))
  assert str(path) in str(e.value)


@pytest.fixture
def corrupt_tree(tmp_path):
  root = _make_tree(tmp_path / "d")
  cut = os.path.join(root, "train", "albatross", "img_a.JPG")
  _noisy_jpeg(cut)
  _truncate_half(cut)
  text = os.path.join(root, "train", "warbler", "img_b.jpg")
  with open(text, "w") as f:
    f.write("this is a text file, renamed\n")
  return root, cut, text


def test_image_folder_corrupt_raises_when_read(corrupt_tree):
  root, cut, text = corrupt_tree
  src = image_folder(root, "train")  # No verification at construction.
  assert len(src) == 12 and src.num_skipped == 0
  for bad in (cut, text):
    with pytest.raises(DataError) as e:
      src[src.paths.index(bad)]
    assert bad in str(e.value)
  src[src.paths.index(cut) + 1]  # The others still read.


def test_image_folder_skip_corrupt(corrupt_tree):
  root, cut, text = corrupt_tree
  src = image_folder(root, "train", skip_corrupt=True)
  assert src.num_skipped == 2 and sorted(src.skipped_paths) == sorted([cut, text])
  assert len(src) == 10 and "skipped 2" in src.description
  assert cut not in src.paths and text not in src.paths
  np.testing.assert_array_equal(np.bincount(src.fine_labels), [3, 4, 3])
  for i in range(len(src)):
    assert src[i]["image"].dtype == np.uint8
  clean = image_folder(root, "test", skip_corrupt=True)
  assert clean.num_skipped == 0 and len(clean) == 6


def test_image_folder_skip_corrupt_whole_class(tmp_path):
  root = _make_tree(tmp_path / "d")
  folder = os.path.join(root, "test", "sparrow")
  for name in ("t1.png", "t2.jpg"):
    with open(os.path.join(folder, name), "w") as f:
      f.write("junk")
  with pytest.raises(DataError, match="sparrow"):
    image_folder(root, "test", skip_corrupt=True)


# ---------------------------------------------------------------------------------------
# CUB-200-2011

CUB_CLASSES = {1: "001.Black_footed_Albatross", 2: "002.Laysan_Albatross",
               3: "003.Sooty_Albatross", 4: "004.Groove_billed_Ani"}
# image id -> (class id, file name, is_train); ids not in path order.
CUB_IMAGES = {
    7: (1, "Black_Footed_Albatross_0001.jpg", 1), 2: (1, "Black_Footed_Albatross_0002.jpg", 0),
    5: (2, "Laysan_Albatross_0001.jpg", 1), 1: (2, "Laysan_Albatross_0002.jpg", 0),
    3: (3, "Sooty_Albatross_0001.jpg", 1), 8: (3, "Sooty_Albatross_0002.jpg", 0),
    4: (4, "Groove_Billed_Ani_0001.jpg", 1), 6: (4, "Groove_Billed_Ani_0002.jpg", 1),
    9: (4, "Groove_Billed_Ani_0003.jpg", 0), 10: (2, "Laysan_Albatross_0003.jpg", 1),
}
CUB_COLOURS = {1: (250, 10, 10), 2: (10, 250, 10), 3: (10, 10, 250), 4: (240, 240, 20)}


def _make_cub(parent):
  root = os.path.join(str(parent), "CUB_200_2011")
  os.makedirs(root)
  order = [7, 3, 9, 10, 1, 5, 2, 8, 6, 4]  # The metadata files are not sorted either.
  with open(os.path.join(root, "classes.txt"), "w") as f:
    for cid in (3, 1, 4, 2):
      f.write(f"{cid} {CUB_CLASSES[cid]}\n")
  with open(os.path.join(root, "images.txt"), "w") as f, \
       open(os.path.join(root, "train_test_split.txt"), "w") as g, \
       open(os.path.join(root, "image_class_labels.txt"), "w") as h:
    for iid in order:
      cid, name, train = CUB_IMAGES[iid]
      rel = f"{CUB_CLASSES[cid]}/{name}"
      f.write(f"{iid} {rel}\n")
      g.write(f"{iid} {train}\n")
      h.write(f"{iid} {cid}\n")
      _save(os.path.join(root, "images", rel), (10 + iid, 8 + cid), CUB_COLOURS[cid])
  return root


@pytest.fixture
def cub(tmp_path):
  return _make_cub(tmp_path)


def test_cub200(cub):
  train, test = cub200(cub, "train"), cub200(cub, "test")
  names = [CUB_CLASSES[c] for c in (1, 2, 3, 4)]
  assert train.fine_names == names and test.fine_names == names
  train_ids = sorted(i for i, v in CUB_IMAGES.items() if v[2])
  test_ids = sorted(i for i, v in CUB_IMAGES.items() if not v[2])
  assert len(train) == len(train_ids) == 6 and len(test) == len(test_ids) == 4
  for src, ids in ((train, train_ids), (test, test_ids)):  # Image-id order.
    assert [os.path.basename(p) for p in src.paths] == [CUB_IMAGES[i][1] for i in ids]
    np.testing.assert_array_equal(src.fine_labels, [CUB_IMAGES[i][0] - 1 for i in ids])
    assert src.fine_labels.dtype == np.int32 and src.num_skipped == 0
    for i, iid in enumerate(ids):
      item = src[i]
      cid = CUB_IMAGES[iid][0]
      assert item["image"].shape == (8 + cid, 10 + iid, 3) and item["image"].dtype == np.uint8
      assert np.abs(item["image"].astype(int) - np.array(CUB_COLOURS[cid])).max() <= JPEG_TOL
      assert int(item["fine_label"]) == cid - 1 and int(item["index"]) == i
  again = pickle.loads(pickle.dumps(cub200(cub, "train")))
  assert again.paths == train.paths
  assert int(grain.MapDataset.source(train)[4]["fine_label"]) == 0  # id 7, class 1


def test_cub200_parent_dir_and_super_map(cub, tmp_path):
  parent = os.path.dirname(cub)
  path = _write_map(tmp_path / "cub_map.txt", "\t",
                    [(CUB_CLASSES[1], "Diomedeidae"), (CUB_CLASSES[2], "Diomedeidae"),
                     (CUB_CLASSES[3], "Diomedeidae"), (CUB_CLASSES[4], "Cuculidae")])
  src = cub200(parent, "train", super_map=path)
  assert src.paths == cub200(cub, "train").paths
  assert src.super_names == ["Cuculidae", "Diomedeidae"]
  # ids 3, 4, 5, 6, 7, 10 -> classes 3, 4, 2, 4, 1, 2.
  np.testing.assert_array_equal(src.super_labels, [1, 0, 1, 0, 1, 1])
  assert int(src[1]["super_label"]) == 0 and int(src[2]["super_label"]) == 1


def test_cub200_errors(cub, tmp_path):
  with pytest.raises(DataError, match="'val'"):
    cub200(cub, "val")
  with pytest.raises(DataError, match="no_cub_here"):
    cub200(str(tmp_path / "no_cub_here"), "train")
  os.rename(os.path.join(cub, "train_test_split.txt"), os.path.join(cub, "split.bak"))
  with pytest.raises(DataError, match="train_test_split.txt"):
    cub200(cub, "train")
  os.rename(os.path.join(cub, "split.bak"), os.path.join(cub, "train_test_split.txt"))
  labels = os.path.join(cub, "image_class_labels.txt")
  with open(labels, "a") as f:
    f.write("oops\n")
  with pytest.raises(DataError, match=r"image_class_labels.txt:11"):
    cub200(cub, "train")


def test_cub200_missing_and_corrupt_images(cub):
  missing = os.path.join(cub, "images", CUB_CLASSES[4], "Groove_Billed_Ani_0002.jpg")
  os.remove(missing)
  with pytest.raises(DataError, match="Groove_Billed_Ani_0002.jpg"):
    cub200(cub, "train")
  cut = os.path.join(cub, "images", CUB_CLASSES[2], "Laysan_Albatross_0001.jpg")
  _noisy_jpeg(cut)
  _truncate_half(cut)
  src = cub200(cub, "train", skip_corrupt=True)
  assert src.num_skipped == 2 and sorted(src.skipped_paths) == sorted([missing, cut])
  assert len(src) == 4 and all(src[i]["image"].dtype == np.uint8 for i in range(4))


def test_file_records_validates():
  with pytest.raises(DataError):
    FileRecords(["a.jpg"], [0, 1], ["x", "y"], description="d")
  with pytest.raises(DataError):
    FileRecords(["a.jpg"], [2], ["x", "y"], description="d")
  with pytest.raises(DataError):
    FileRecords(["a.jpg"], [0], ["x"], super_labels=[0], description="d")
  assert folder_source.IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png")
