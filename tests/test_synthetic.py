"""Tests for fgjax.data.synthetic (the embedded *patches* data set), both versions."""

import hashlib

import numpy as np
import pytest

from fgjax.data import scene
from fgjax.data import synthetic


SMALL = dict(num_super=4, fine_per_super=3, train_per_class=6, test_per_class=3)
V1 = dict(version=1, background="gradient")
V2 = dict(version=2, background="tinted")
VERSIONS = pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])


@pytest.fixture(scope="module", params=[V1, V2], ids=["v1", "v2"])
def data(request):
  """The default class layout (8 x 4), enough images for the nearest-mean check."""
  return synthetic.make_patches(train_per_class=40, test_per_class=15, seed=0, **request.param)


@pytest.fixture(scope="module")
def data_v1():
  return synthetic.make_patches(train_per_class=40, test_per_class=15, seed=0, **V1)


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


@VERSIONS
@pytest.mark.parametrize("image_size", [16, 48])
def test_other_image_sizes(image_size, version):
  d = synthetic.make_patches(**SMALL, image_size=image_size, **version)
  assert d["train"]["image"].shape == (4 * 3 * 6, image_size, image_size, 3)


@VERSIONS
def test_same_seed_same_data_other_seed_other_data(version):
  a = synthetic.make_patches(**SMALL, seed=3, **version)
  b = synthetic.make_patches(**SMALL, seed=3, **version)
  c = synthetic.make_patches(**SMALL, seed=4, **version)
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
  d = synthetic.make_patches(**{**SMALL, "test_per_class": 6}, seed=0, **V1)  # Equal sizes.
  train = d["train"]["image"].reshape(len(d["train"]["image"]), -1)
  test = d["test"]["image"].reshape(len(d["test"]["image"]), -1)
  # No test image equals any train image; images differ in most pixels.
  diff = (train[:, None, :] != test[None, :, :]).mean(-1)
  assert diff.min() > 0.5
  assert not np.array_equal(d["train"]["fine_label"], d["test"]["fine_label"])
  # The pixel noise is independent too (identical noise fields correlate at ~0.15).
  a, b = _noise_residual(d["train"]["image"]), _noise_residual(d["test"]["image"])
  other_seed = _noise_residual(synthetic.make_patches(**{**SMALL, "test_per_class": 6},
                                                      seed=1, **V1)["train"]["image"])
  for other in (b, other_seed):
    corr = np.mean([np.corrcoef(a[i], other[i])[0, 1] for i in range(len(a))])
    assert abs(corr) < 0.05, corr
  for version in (V1, V2):
    d = synthetic.make_patches(**SMALL, seed=0, **version)
    # The test draw does not depend on the size of the train split, and vice versa.
    bigger_train = synthetic.make_patches(**{**SMALL, "train_per_class": 9}, seed=0, **version)
    np.testing.assert_array_equal(bigger_train["test"]["image"], d["test"]["image"])
    bigger_test = synthetic.make_patches(**{**SMALL, "test_per_class": 5}, seed=0, **version)
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
    (dict(version=3), "version"),
    (dict(version=True), "version"),
    (dict(background="noise"), "background"),
    (dict(version=1, background="tinted"), "background"),
    (dict(num_super=33), "num_super"),
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
                             test_per_class=1, seed=0, **V1)["train"]
  x = d["image"].astype(np.float64) / 255
  mean = {f: x[d["fine_label"] == f].mean(0) for f in range(4)}
  fine_gap = np.abs(mean[0] - mean[1]).mean()  # Same super-class 0.
  super_gap = np.abs(mean[0] - mean[2]).mean()  # Super-classes 0 vs 1.
  assert fine_gap < 0.5 * super_gap, (fine_gap, super_gap)


def test_nearest_class_mean_on_raw_pixels(data_v1):
  """The super-class is visible in raw pixels; fine classes are much harder."""
  data = data_v1
  super_acc = _nearest_class_mean_accuracy(data["train"], data["test"], "super_label")
  fine_acc = _nearest_class_mean_accuracy(data["train"], data["test"], "fine_label")
  # Seen at seed 0 (40 / 15 per class): super 0.45 (chance 0.125), fine 0.11 (chance 0.031);
  # with 128 / 32 per class: super 0.57, fine 0.17.
  assert super_acc > 0.3, super_acc
  assert fine_acc > 2 / 32, fine_acc
  assert fine_acc < super_acc


# ---- version 2: objects that differ per instance (fgjax.data.scene)


def _digest(d):
  h = hashlib.sha256()
  for split in ("train", "test"):
    for key in sorted(d[split]):
      h.update(np.ascontiguousarray(d[split][key]).tobytes())
  return h.hexdigest()


def test_version_1_is_unchanged():
  """Runs made with the first generator stay reproducible: its arrays, bit for bit.

  The digest was computed with the generator as it was before version 2 existed.
  """
  d = synthetic.make_patches(num_super=4, fine_per_super=3, train_per_class=6, test_per_class=3,
                             seed=5, **V1)
  assert _digest(d) == "9c4c73691670c9c79125aec4058444bf3490dce2502ebf64ec8ea1b2b1061f31"


def test_version_2_is_pinned():
  """Version 2 runs stay reproducible too: a change to the drawing must be a new version."""
  d = synthetic.make_patches(num_super=4, fine_per_super=3, train_per_class=6, test_per_class=3,
                             seed=5, **V2)
  assert _digest(d) == "3eede2002bc970d9d5423d3e1fcdb16588a92494061f5a63481f7f94ac6334db"


def test_default_is_version_2_on_the_tinted_background():
  a = synthetic.make_patches(**SMALL, seed=1)
  b = synthetic.make_patches(**SMALL, seed=1, **V2)
  assert _digest(a) == _digest(b)
  assert _digest(a) != _digest(synthetic.make_patches(**SMALL, seed=1, **V1))


def _object_masks(images):
  """Pixels that are not the blank background (exactly grey 128 on 'blank')."""
  return np.any(images != 128, axis=-1)


def _aligned_mask_difference(a, b):
  """Share of object pixels that differ between two object masks after the best
  integer translation of b (within +-4 px): what is left is the object itself."""
  best = 1.0
  for dy in range(-4, 5):
    for dx in range(-4, 5):
      shifted = np.roll(np.roll(b, dy, axis=0), dx, axis=1)
      best = min(best, np.sum(a ^ shifted) / max(1, np.sum(a | shifted)))
  return best


def test_instances_of_one_class_differ_in_the_object_itself():
  """Design rule 1: two images of one fine class differ in the object, not only by a shift.

  On the blank background every non-grey pixel belongs to the object, so the
  object masks can be compared directly; even after the best translation, the
  objects of one class differ in pose and shape (rotation, shear, aspect, size),
  while their silhouette is the same. The rendering of one scene with only the
  marking's stroke changed differs inside the marking.
  """
  d = synthetic.make_patches(num_super=2, fine_per_super=2, train_per_class=8, test_per_class=1,
                             seed=0, version=2, background="blank")["train"]
  masks = _object_masks(d["image"])
  diffs = []
  for f in range(4):
    idx = np.nonzero(d["fine_label"] == f)[0]
    diffs += [_aligned_mask_difference(masks[i], masks[j]) for i, j in zip(idx[:4], idx[4:8])]
  assert min(diffs) > 0.05, diffs  # seen: 0.07-0.25
  # The background is exactly blank: the object covers a bounded, central area.
  assert 0.15 < masks.mean() < 0.45, masks.mean()


def test_markings_are_flip_symmetric_and_distinct():
  s, t = np.meshgrid(np.linspace(-1, 1, 41), np.linspace(-1, 1, 41))
  inks = []
  for k in range(len(scene.MARKING_NAMES)):
    for w in (0.35, 0.6):
      ink = scene._marking_ink(np.array(k), s, t, np.array(w))
      flipped = scene._marking_ink(np.array(k), -s, t, np.array(w))
      np.testing.assert_array_equal(ink, flipped)  # a horizontal flip keeps the class
    inks.append(scene._marking_ink(np.array(k), s, t, np.array(0.45)))
  flat = np.stack(inks).reshape(len(inks), -1)
  differ = (flat[:, None] != flat[None]).mean(-1)
  assert differ[~np.eye(len(inks), dtype=bool)].min() > 0.05


@pytest.mark.parametrize("background", scene.BACKGROUNDS)
def test_background_option(background):
  d = synthetic.make_patches(**SMALL, seed=0, version=2, background=background)["train"]["image"]
  corners = np.concatenate([d[:, :3, :3], d[:, -3:, -3:]], axis=1).reshape(len(d), -1, 3) / 255
  per_image = corners.mean(1)  # [n, 3] background colour of each image
  if background == "blank":
    np.testing.assert_array_equal(d[:, :3, :3], 128)  # the Base-Indi paper's blank image
  elif background == "tinted":
    # A flat blue-grey under a mild whole-image colour cast: small spread, blue > red.
    assert 0.01 < per_image.std(0).max() < 0.08, per_image.std(0)
    assert np.all(per_image[:, 2] > per_image[:, 0] - 0.02)
  else:
    # Version 1's nuisance: random colours, a spread no colour jitter removes.
    assert per_image.std(0).min() > 0.12, per_image.std(0)


def test_tinted_cast_acts_on_the_whole_image():
  """The 'tinted' nuisance is global: the object and the background brighten together,
  so a whole-image colour jitter removes it (design rule 2)."""
  d = synthetic.make_patches(num_super=2, fine_per_super=2, train_per_class=64, test_per_class=1,
                             seed=0, **V2)["train"]["image"].astype(np.float64) / 255
  background = d[:, :3, :3].mean(axis=(1, 2, 3))
  centre = d[:, 12:20, 12:20].mean(axis=(1, 2, 3))
  assert np.corrcoef(background, centre)[0, 1] > 0.5


def test_super_prototypes_are_distinct_up_to_32():
  p = synthetic.super_prototypes(32)
  pairs = set(zip(p["silhouette"].tolist(), p["texture"].tolist()))
  assert len(pairs) == 32
  np.testing.assert_array_equal(p["texture"][:8], [0, 1, 2, 3, 0, 1, 2, 3])
  np.testing.assert_array_equal(p["silhouette"][:8], [0, 0, 0, 0, 1, 1, 1, 1])


def test_version_2_nearest_class_mean_on_raw_pixels():
  """Documented sanity numbers: raw pixels see the super-class a little, the fine class less."""
  d = synthetic.make_patches(train_per_class=40, test_per_class=15, seed=0, **V2)
  super_acc = _nearest_class_mean_accuracy(d["train"], d["test"], "super_label")
  fine_acc = _nearest_class_mean_accuracy(d["train"], d["test"], "fine_label")
  # Seen at seed 0 (64 / 32 per class): super 0.35 (chance 0.125), fine 0.20 (chance 0.031).
  assert 0.2 < super_acc < 0.6, super_acc
  assert 2 / 32 < fine_acc < super_acc, fine_acc
