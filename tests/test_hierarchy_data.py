"""Tests for fgjax.data.hierarchy (the embedded genus -> species data set)."""

import numpy as np
import pytest

from fgjax.data import hierarchy
from fgjax.data import synthetic


SMALL = dict(num_super=3, fine_per_super=4, train_per_class=5, test_per_class=3)
V1 = dict(version=1, background="gradient")
V2 = dict(version=2, background="tinted")


@pytest.fixture(scope="module", params=[V1, V2], ids=["v1", "v2"])
def data(request):
  """The default layout (6 genera x 6 species), fewer images per species."""
  out = hierarchy.make_hierarchy(train_per_class=40, test_per_class=15, seed=0, **request.param)
  out["version_kwargs"] = request.param
  return out


@pytest.fixture(scope="module")
def data_v1():
  return hierarchy.make_hierarchy(train_per_class=40, test_per_class=15, seed=0, **V1)


def _nearest_class_mean(train, test, key):
  """Predictions of a nearest-class-mean classifier on raw pixels in [0, 1]."""
  x = train["image"].reshape(len(train["image"]), -1).astype(np.float64) / 255
  xt = test["image"].reshape(len(test["image"]), -1).astype(np.float64) / 255
  labels = train[key]
  means = np.stack([x[labels == c].mean(0) for c in range(labels.max() + 1)])
  dist = (xt**2).sum(1)[:, None] - 2 * xt @ means.T + (means**2).sum(1)[None]
  return dist.argmin(1)


def test_shapes_dtypes_keys_and_names(data):
  assert data["num_fine_classes"] == 36 and data["num_super_classes"] == 6
  for split, per_class in (("train", 40), ("test", 15)):
    d = data[split]
    n = 36 * per_class
    assert set(d) == {"image", "fine_label", "super_label", "index"}
    assert d["image"].shape == (n, 32, 32, 3) and d["image"].dtype == np.uint8
    for key in ("fine_label", "super_label", "index"):
      assert d[key].shape == (n,) and d[key].dtype == np.int32, key
    np.testing.assert_array_equal(d["index"], np.arange(n))
  assert data["super_names"] == [f"genus{g}" for g in range(6)]
  assert len(data["fine_names"]) == len(set(data["fine_names"])) == 36
  assert data["fine_names"][7] == "genus1_species1"
  assert data["train"]["image"].std() > 30  # uses the dynamic range


def test_same_layout_as_patches():
  # Interchangeable with synthetic.make_patches in a pipeline: same keys and dtypes.
  mine = hierarchy.make_hierarchy(**SMALL, hierarchy_names=True)
  theirs = synthetic.make_patches(**SMALL, hierarchy_names=True)
  assert set(theirs) <= set(mine)
  for split in ("train", "test"):
    assert set(mine[split]) == set(theirs[split])
    for key in theirs[split]:
      assert mine[split][key].dtype == theirs[split][key].dtype, key
      assert mine[split][key].shape == theirs[split][key].shape, key
  np.testing.assert_array_equal(mine["fine_to_super"], theirs["fine_to_super"])
  np.testing.assert_array_equal(mine["train"]["genus_label"], mine["train"]["super_label"])
  np.testing.assert_array_equal(mine["train"]["species_label"], mine["train"]["fine_label"])
  assert mine["num_genus_classes"] == 3 and mine["num_species_classes"] == 12


@pytest.mark.parametrize("image_size", [16, 48])
def test_other_image_sizes(image_size):
  d = hierarchy.make_hierarchy(**SMALL, image_size=image_size)
  assert d["train"]["image"].shape == (3 * 4 * 5, image_size, image_size, 3)


def test_seeded_determinism():
  a = hierarchy.make_hierarchy(**SMALL, seed=3)
  b = hierarchy.make_hierarchy(**SMALL, seed=3)
  c = hierarchy.make_hierarchy(**SMALL, seed=4)
  for split in ("train", "test"):
    for key in a[split]:
      np.testing.assert_array_equal(a[split][key], b[split][key])
    assert not np.array_equal(a[split]["image"], c[split]["image"])
    assert not np.array_equal(a[split]["fine_label"], c[split]["fine_label"])


def test_train_and_test_are_independent_draws(data):
  train, test = data["train"]["image"], data["test"]["image"]
  # No test image is a copy of a training image.
  train_keys = {img.tobytes() for img in train}
  assert not any(img.tobytes() in train_keys for img in test)
  # Not the same stream either: the test split is not a prefix of a bigger train draw.
  more = hierarchy.make_hierarchy(train_per_class=40, test_per_class=40, seed=0, **data["version_kwargs"])
  np.testing.assert_array_equal(more["train"]["image"], train)
  assert not np.array_equal(more["test"]["image"][:len(test)], test)


def test_labels_nested(data):
  for split in ("train", "test"):
    d = data[split]
    np.testing.assert_array_equal(d["super_label"], data["fine_to_super"][d["fine_label"]])
    np.testing.assert_array_equal(d["super_label"], d["fine_label"] // 6)
    # Every species appears with exactly one genus.
    for s in range(36):
      assert np.unique(d["super_label"][d["fine_label"] == s]).tolist() == [s // 6]
  np.testing.assert_array_equal(np.bincount(data["fine_to_super"]), [6] * 6)


def test_classes_balanced_and_shuffled(data):
  for split, per_class in (("train", 40), ("test", 15)):
    d = data[split]
    np.testing.assert_array_equal(np.bincount(d["fine_label"], minlength=36), per_class)
    np.testing.assert_array_equal(np.bincount(d["super_label"], minlength=6), 6 * per_class)
    assert not np.all(np.diff(d["fine_label"]) >= 0), "split is not shuffled"


def test_prototypes_encode_the_documented_hierarchy():
  g_count, k = 6, 6
  protos = hierarchy.species_prototypes(g_count, k)
  genus, hue, template = protos["genus"], protos["hue"], protos["template"]
  np.testing.assert_array_equal(protos["texture"], genus)  # one texture per genus
  for g in range(g_count):
    # Within a genus every species has its own marking.
    assert sorted(template[genus == g]) == list(range(k))
  circ = lambda a, b: np.abs((a - b + 0.5) % 1.0 - 0.5)  # hue distance on the wheel
  for g in range(g_count):
    last, first_next = g * k + k - 1, ((g + 1) % g_count) * k
    # Look-alikes: same marking, hue closer than neighbouring species of one genus.
    assert template[last] == template[first_next]
    assert circ(hue[last], hue[first_next]) < circ(hue[g * k], hue[g * k + 1])
    # The last species is nearer the next genus's hue centre than its own.
    assert circ(hue[last], (g + 1) / g_count) < circ(hue[last], g / g_count)
  # Only those pairs share hue and marking: every other cross-genus pair differs.
  same_template = template[:, None] == template[None, :]
  near_hue = circ(hue[:, None], hue[None, :]) < 0.03
  cross = genus[:, None] != genus[None, :]
  assert np.sum(same_template & near_hue & cross) == 2 * g_count


@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
def test_images_show_the_genus_texture(version):
  # Genus 1 has horizontal stripes, genus 2 vertical ones: their images have more
  # vertical (row-to-row) than horizontal change, resp. the opposite. Background
  # directions are random and each genus uses every marking template once, so the
  # other genera show no preferred direction on average (in version 2 the objects
  # turn by up to +-15 degrees, which leaves the stripes' main direction).
  data = hierarchy.make_hierarchy(train_per_class=40, test_per_class=15, seed=0, **version)
  x = data["train"]["image"].astype(np.float64).mean(-1)
  row_change = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2))
  col_change = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))
  anisotropy = np.array([np.mean((row_change - col_change)[data["train"]["super_label"] == g])
                         for g in range(6)])
  assert hierarchy.GENUS_TEXTURE_NAMES[1:3] == ("hstripes", "vstripes")
  assert anisotropy[1] > 1.0 and anisotropy[2] < -1.0, anisotropy
  others = np.abs(anisotropy[[0, 3, 4, 5]])
  assert np.all(others < 0.3 * min(anisotropy[1], -anisotropy[2])), anisotropy


def test_the_genus_is_not_trivial_in_pixel_space(data_v1):
  # Documented sanity numbers, measured at a smaller size: raw-pixel class means see
  # the hue family (genus well above chance) but put many images, and the
  # look-alike species above all, in the wrong genus.
  data = data_v1
  genus = _nearest_class_mean(data["train"], data["test"], "super_label")
  species = _nearest_class_mean(data["train"], data["test"], "fine_label")
  test = data["test"]
  genus_acc = np.mean(genus == test["super_label"])
  species_acc = np.mean(species == test["fine_label"])
  assert 0.35 < genus_acc < 0.8, genus_acc  # chance 1/6
  assert 0.06 < species_acc < 0.3, species_acc  # chance 1/36
  j = test["fine_label"] % 6
  lookalike = (j == 0) | (j == 5)
  wrong = genus != test["super_label"]
  assert wrong[lookalike].mean() > wrong[~lookalike].mean() + 0.1


def test_hue_spread_below_half_separates_genera_by_hue():
  # The knob does what it says: without overlap the pixel-space genus gets easier.
  kw = dict(train_per_class=30, test_per_class=10, seed=1)
  overlap = hierarchy.make_hierarchy(**kw)
  apart = hierarchy.make_hierarchy(**kw, hue_spread=0.2)
  acc = lambda d: np.mean(_nearest_class_mean(d["train"], d["test"], "super_label")
                          == d["test"]["super_label"])
  assert acc(apart) > acc(overlap) + 0.1


@pytest.mark.parametrize("kwargs,name", [
    (dict(num_super=1), "num_super"),
    (dict(num_super=9), "num_super"),
    (dict(fine_per_super=1), "fine_per_super"),
    (dict(fine_per_super=9), "fine_per_super"),
    (dict(train_per_class=0), "train_per_class"),
    (dict(test_per_class=0), "test_per_class"),
    (dict(image_size=8), "image_size"),
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(hue_spread=0.0), "hue_spread"),
    (dict(hue_spread=1.0), "hue_spread"),
    (dict(texture_value=1.0), "texture_value"),
    (dict(texture_value="0.5"), "texture_value"),
    (dict(hierarchy_names=1), "hierarchy_names"),
    (dict(version=0), "version"),
    (dict(background="clutter"), "background"),
    (dict(version=1, background="blank"), "background"),
])
def test_bad_arguments_raise_naming_them(kwargs, name):
  with pytest.raises(ValueError, match=name):
    hierarchy.make_hierarchy(**{**SMALL, **kwargs})


def _digest(version):
  import hashlib
  d = hierarchy.make_hierarchy(num_super=3, fine_per_super=4, train_per_class=5, test_per_class=3,
                               seed=5, **version)
  h = hashlib.sha256()
  for split in ("train", "test"):
    for key in sorted(d[split]):
      h.update(np.ascontiguousarray(d[split][key]).tobytes())
  return h.hexdigest()


def test_version_1_is_unchanged():
  """Runs made with the first generator stay reproducible (digest from before version 2)."""
  assert _digest(V1) == "be5acc82c6635d96a4743dd824838cff057d825e4fe775e705500b7860f95e6b"


def test_version_2_blank_background_and_lookalikes_in_pixel_space():
  """Version 2 keeps the hierarchy's traits; on 'blank' only the object is drawn."""
  d = hierarchy.make_hierarchy(train_per_class=40, test_per_class=15, seed=0, version=2,
                               background="blank")
  np.testing.assert_array_equal(d["train"]["image"][:, :2, :2], 128)
  genus = _nearest_class_mean(d["train"], d["test"], "super_label")
  test = d["test"]
  j = test["fine_label"] % 6
  lookalike = (j == 0) | (j == 5)
  wrong = genus != test["super_label"]
  # The hue family still carries the genus in pixel space, and the look-alike
  # species still sit in the wrong genus far more often.
  assert np.mean(~wrong) > 0.4
  assert wrong[lookalike].mean() > wrong[~lookalike].mean() + 0.2


def test_version_2_is_pinned():
  """Version 2 runs stay reproducible too: a change to the drawing must be a new version."""
  assert _digest(V2) == "16ca35b18b994d1deafce656a7c6aeb4ae42babf492103cf9ce50a6d25cbb60f"
