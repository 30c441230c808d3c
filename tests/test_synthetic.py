"""Tests for fgjax.data.synthetic (the embedded *patches* data set)."""

import numpy as np
import pytest

from fgjax.data import synthetic

SMALL = dict(num_super=4, fine_per_super=3, train_per_class=6, test_per_class=3)


@pytest.fixture(scope="module")
def data():
  """The default class layout (8 x 4), enough images for the nearest-mean check."""
  return synthetic.make_patches(train_per_class=40, test_per_class=15, seed=0)


def _nearest_class_mean_accuracy(train, test, key):
  """Accuracy of a nearest-class-mean classifier on raw pixels in [0, 1]."""
  x = train["image"].reshape(len(train["image"]), -1).astype(np.float64) / 255
  xt = test["image"].reshape(len(test["image"]), -1).astype(np.float64) / 255
  labels = train[key]
  means = np.stack([x[labels == c].mean(0) for c in range(labels.max() + 1)])
  dist = (xt**2).sum(1)[:, None] - 2 * xt @ means.T + (means**2).sum(1)[None]
  return float((dist.argmin(1) == test[key]).mean())


def test_shapes_dtypes_and_keys(data):
  assert data["num_fine_classes"] == 32 and data["num_super_classes"] == 8
  for split, per_class in (("train", 40), ("test", 15)):
    d = data[split]
    n = 32 * per_class
    assert set(d) == {"image", "fine_label", "super_label", "index"}
    assert d["image"].shape == (n, 32, 32, 3) and d["image"].dtype == np.uint8
    for key in ("fine_label", "super_label", "index"):
      assert d[key].shape == (n,) and d[key].dtype == np.int32, key
    np.testing.assert_array_equal(d["index"], np.arange(n))
  np.testing.assert_array_equal(data["fine_to_super"], np.repeat(np.arange(8), 4))
  # Images use the dynamic range (not all one colour).
  assert data["train"]["image"].std() > 30


@pytest.mark.parametrize("image_size", [16, 48])
def test_other_image_sizes(image_size):
  d = synthetic.make_patches(**SMALL, image_size=image_size)
  assert d["train"]["image"].shape == (4 * 3 * 6, image_size, image_size, 3)


def test_same_seed_same_data_other_seed_other_data():
  a = synthetic.make_patches(**SMALL, seed=3)
  b = synthetic.make_patches(**SMALL, seed=3)
  c = synthetic.make_patches(**SMALL, seed=4)
  for split in ("train", "test"):
    for key in a[split]:
      np.testing.assert_array_equal(a[split][key], b[split][key])
    assert not np.array_equal(a[split]["image"], c[split]["image"])
    assert not np.array_equal(a[split]["fine_label"], c[split]["fine_label"])


def test_labels_nested(data):
  for split in ("train", "test"):
    d = data[split]
    np.testing.assert_array_equal(d["super_label"], d["fine_label"] // 4)
    np.testing.assert_array_equal(d["super_label"], data["fine_to_super"][d["fine_label"]])
    # Every fine class appears with exactly one super-class.
    for f in range(32):
      assert np.unique(d["super_label"][d["fine_label"] == f]).tolist() == [f // 4]


def test_classes_balanced_and_shuffled(data):
  for split, per_class in (("train", 40), ("test", 15)):
    d = data[split]
    np.testing.assert_array_equal(np.bincount(d["fine_label"], minlength=32), per_class)
    np.testing.assert_array_equal(np.bincount(d["super_label"], minlength=8), 4 * per_class)
    assert not np.all(np.diff(d["fine_label"]) >= 0), "split is not shuffled"


def _noise_residual(images):
  """Image minus its 3x3 local mean (interior pixels): mostly the pixel noise."""
  x = images.astype(np.float64)
  h, w = x.shape[1:3]
  box = sum(x[:, 1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx]
            for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
  return (x[:, 1:-1, 1:-1] - box).reshape(len(x), -1)


def test_train_and_test_are_independent_draws():
  d = synthetic.make_patches(**{**SMALL, "test_per_class": 6}, seed=0)  # Equal sizes.
  train = d["train"]["image"].reshape(len(d["train"]["image"]), -1)
  test = d["test"]["image"].reshape(len(d["test"]["image"]), -1)
  # No test image equals any train image; images differ in most pixels.
  diff = (train[:, None, :] != test[None, :, :]).mean(-1)
  assert diff.min() > 0.5
  assert not np.array_equal(d["train"]["fine_label"], d["test"]["fine_label"])
  # The pixel noise is independent too (identical noise fields correlate at ~0.15).
  a, b = _noise_residual(d["train"]["image"]), _noise_residual(d["test"]["image"])
  other_seed = _noise_residual(synthetic.make_patches(**{**SMALL, "test_per_class": 6},
                                                      seed=1)["train"]["image"])
  for other in (b, other_seed):
    corr = np.mean([np.corrcoef(a[i], other[i])[0, 1] for i in range(len(a))])
    assert abs(corr) < 0.05, corr
  d = synthetic.make_patches(**SMALL, seed=0)
  # The test draw does not depend on the size of the train split, and vice versa.
  bigger_train = synthetic.make_patches(**{**SMALL, "train_per_class": 9}, seed=0)
  np.testing.assert_array_equal(bigger_train["test"]["image"], d["test"]["image"])
  bigger_test = synthetic.make_patches(**{**SMALL, "test_per_class": 5}, seed=0)
  np.testing.assert_array_equal(bigger_test["train"]["image"], d["train"]["image"])


def test_hierarchy_names_alias_super_and_fine():
  d = synthetic.make_patches(**SMALL, hierarchy_names=True)
  assert d["num_genus_classes"] == 4 and d["num_species_classes"] == 12
  for split in ("train", "test"):
    np.testing.assert_array_equal(d[split]["genus_label"], d[split]["super_label"])
    np.testing.assert_array_equal(d[split]["species_label"], d[split]["fine_label"])


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_super=1), "num_super"),
    (dict(num_super=2.0), "num_super"),
    (dict(fine_per_super=1), "fine_per_super"),
    (dict(fine_per_super=9), "fine_per_super"),
    (dict(train_per_class=0), "train_per_class"),
    (dict(test_per_class=-1), "test_per_class"),
    (dict(image_size=15), "image_size"),
    (dict(image_size=True), "image_size"),
    (dict(seed=-1), "seed"),
    (dict(seed="0"), "seed"),
    (dict(hierarchy_names=1), "hierarchy_names"),
])
def test_argument_validation(kwargs, name):
  with pytest.raises(ValueError, match=name):
    synthetic.make_patches(**{**SMALL, **kwargs})


def test_fine_templates_distinct_and_flip_invariant():
  t = synthetic.FINE_TEMPLATES
  assert t.shape == (8, 8, 8) and len(synthetic.FINE_TEMPLATE_NAMES) == 8
  np.testing.assert_array_equal(synthetic.fine_templates(8), t)
  for small in (4, 5, 6, 8, 12, 16):  # Marking sizes at S = 16, 20, 24, 32, 48, 64.
    resized = synthetic.fine_templates(small)
    assert resized.shape == (8, small, small)
    # A horizontal flip (MoCo's augmentation) must not turn one class into another.
    np.testing.assert_array_equal(resized, resized[:, :, ::-1])
    flat = resized.reshape(8, -1)
    hamming = (flat[:, None] != flat[None]).sum(-1)
    assert hamming[~np.eye(8, dtype=bool)].min() >= 2, small


def test_fine_classes_differ_only_in_the_small_patch():
  """Per-pixel class means: same-super fine classes differ far less than super-classes."""
  d = synthetic.make_patches(num_super=2, fine_per_super=2, train_per_class=300,
                             test_per_class=1, seed=0)["train"]
  x = d["image"].astype(np.float64) / 255
  mean = {f: x[d["fine_label"] == f].mean(0) for f in range(4)}
  fine_gap = np.abs(mean[0] - mean[1]).mean()  # Same super-class 0.
  super_gap = np.abs(mean[0] - mean[2]).mean()  # Super-classes 0 vs 1.
  assert fine_gap < 0.5 * super_gap, (fine_gap, super_gap)


def test_nearest_class_mean_on_raw_pixels(data):
  """The super-class is visible in raw pixels; fine classes are much harder."""
  super_acc = _nearest_class_mean_accuracy(data["train"], data["test"], "super_label")
  fine_acc = _nearest_class_mean_accuracy(data["train"], data["test"], "fine_label")
  # Seen at seed 0 (40 / 15 per class): super 0.45 (chance 0.125), fine 0.11 (chance 0.031);
  # with 128 / 32 per class: super 0.57, fine 0.17.
  assert super_acc > 0.3, super_acc
  assert fine_acc > 2 / 32, fine_acc
  assert fine_acc < super_acc
