"""Tests for fgjax.evaluate.linear_probe: subsets, top-k reference, probe behaviour."""

import numpy as np
import pytest

from fgjax.evaluate import linear_probe


# Few epochs keep each probe to well under a second; one shared value lets the
# tests reuse the jitted training program wherever the shapes agree.
HP = linear_probe.ProbeHParams(epochs=10, batch_size=64)

# ----------------------------------------------------------------------------
# Independent references and data.
# ----------------------------------------------------------------------------


def _expected_per_class(labels, fraction):
  classes, counts = np.unique(np.asarray(labels), return_counts=True)
  return {c.item(): max(1, int(round(fraction * n))) for c, n in zip(classes, counts)}


def _np_topk(logits, labels, ks):
  logits = np.asarray(logits, np.float64)
  hits = {k: 0 for k in ks}
  for row, label in zip(logits, labels):
    order = np.argsort(-row, kind="stable")  # ties: lower class index first
    for k in ks:
      hits[k] += int(label in order[:k])
  return {f"top{k}": hits[k] / len(labels) for k in ks}


def _clusters(rng, n, num_classes, dim, *, spread=10.0, noise=0.3, centers=None):
  """Well separated Gaussian clusters; every class present (labels cycle)."""
  if centers is None:
    centers = spread * rng.normal(size=(num_classes, dim))
  labels = rng.permutation(np.arange(n) % num_classes)
  features = centers[labels] + noise * rng.normal(size=(n, dim))
  return features.astype(np.float32), labels, centers


@pytest.fixture(scope="module")
def separable():
  rng = np.random.default_rng(0)
  train_x, train_y, centers = _clusters(rng, 240, 6, 16)
  test_x, test_y, _ = _clusters(rng, 120, 6, 16, centers=centers)
  return train_x, train_y, test_x, test_y


# ----------------------------------------------------------------------------
# stratified_subset
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.5, 0.3, 0.2, 0.025])
def test_stratified_subset_per_class_counts(fraction):
  # Uneven classes, including a singleton ("solo") and string labels.
  labels = np.array(["c"] * 12 + ["a"] * 5 + ["solo"] + ["b"] * 50 + ["d"] * 7)
  labels = np.random.default_rng(1).permutation(labels)
  idx = linear_probe.stratified_subset(labels, fraction, seed=3)
  expected = _expected_per_class(labels, fraction)
  chosen, counts = np.unique(labels[idx], return_counts=True)
  assert dict(zip(chosen.tolist(), counts.tolist())) == expected
  assert np.all(np.diff(idx) > 0)  # ascending and unique
  assert idx.min() >= 0 and idx.max() < labels.size
  assert np.issubdtype(idx.dtype, np.integer)


def test_stratified_subset_integer_labels_uneven():
  labels = np.array([3] * 9 + [0] * 1 + [7] * 4 + [1] * 30)
  idx = linear_probe.stratified_subset(labels, 0.4, seed=0)
  assert len(np.unique(idx)) == len(idx)
  chosen, counts = np.unique(labels[idx], return_counts=True)
  assert dict(zip(chosen.tolist(), counts.tolist())) == {0: 1, 1: 12, 3: 4, 7: 2}


def test_stratified_subset_full_fraction_returns_everything():
  labels = np.array(["x", "y", "x", "z", "y"])
  np.testing.assert_array_equal(linear_probe.stratified_subset(labels, 1.0, seed=9),
                                np.arange(5))


def test_stratified_subset_seed_determinism():
  labels = np.array([0] * 50 + [1] * 20)
  a = linear_probe.stratified_subset(labels, 0.5, seed=4)
  b = linear_probe.stratified_subset(labels, 0.5, seed=4)
  np.testing.assert_array_equal(a, b)
  # 25 of 50 (and 10 of 20): ~1e14 choices, two seeds cannot collide by chance.
  c = linear_probe.stratified_subset(labels, 0.5, seed=5)
  assert len(c) == len(a) == 35
  assert not np.array_equal(a, c)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_stratified_subset_rejects_bad_fraction(fraction):
  with pytest.raises(ValueError, match="fraction"):
    linear_probe.stratified_subset(np.array([0, 1, 1]), fraction, seed=0)


def test_stratified_subset_rejects_empty_labels():
  with pytest.raises(ValueError):
    linear_probe.stratified_subset(np.array([], np.int64), 0.5, seed=0)


# ----------------------------------------------------------------------------
# topk_accuracy
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("integer_scores", [False, True])
def test_topk_matches_numpy_reference(integer_scores):
  rng = np.random.default_rng(2)
  n, k_classes = 97, 9
  if integer_scores:
    logits = rng.integers(0, 4, size=(n, k_classes)).astype(np.float32)  # many ties
  else:
    logits = rng.normal(size=(n, k_classes)).astype(np.float32)
  labels = rng.integers(0, k_classes, size=n)
  ks = (1, 2, 5, 9)
  got = linear_probe.topk_accuracy(logits, labels, ks)
  assert got == _np_topk(logits, labels, ks)
  assert got["top9"] == 1.0


def test_topk_hand_case_ties_go_to_lower_index():
  # Row 0: classes 1 and 2 tie at 3: class 1 is first, class 2 second.
  # Row 1: all tie: order 0, 1, 2, 3.
  # Row 2: class 3 is strictly best.
  logits = np.array([[1.0, 3.0, 3.0, 0.0],
                     [2.0, 2.0, 2.0, 2.0],
                     [0.0, 1.0, 2.0, 5.0]])
  labels = np.array([2, 1, 3])
  got = linear_probe.topk_accuracy(logits, labels, ks=(1, 2))
  # top1 hits: row 2 only; top2 hits: row 0 (2nd), row 1 (2nd), row 2.
  assert got == {"top1": pytest.approx(1 / 3), "top2": 1.0}
  assert linear_probe.topk_accuracy(logits, np.array([1, 0, 3]), ks=(1,)) == {"top1": 1.0}
  assert got == pytest.approx(_np_topk(logits, labels, (1, 2)))


@pytest.mark.parametrize("logits, labels, ks", [
    (np.zeros((3, 4)), np.array([0, 1, 2]), (0,)),  # k = 0
    (np.zeros((3, 4)), np.array([0, 1, 2]), (1, 5)),  # k > num classes
    (np.zeros((3, 4)), np.array([0, 1, 4]), (1,)),  # label out of range (high)
    (np.zeros((3, 4)), np.array([0, -1, 2]), (1,)),  # label out of range (low)
    (np.array([[0.0, np.nan], [1.0, 0.0]]), np.array([0, 1]), (1,)),  # NaN
    (np.zeros((3, 4)), np.array([0, 1]), (1,)),  # N mismatch
    (np.zeros((3,)), np.array([0, 1, 2]), (1,)),  # logits not 2-D
    (np.zeros((0, 4)), np.zeros((0,), np.int64), (1,)),  # empty
])
def test_topk_rejects_bad_input(logits, labels, ks):
  with pytest.raises(ValueError):
    linear_probe.topk_accuracy(logits, labels, ks)


# ----------------------------------------------------------------------------
# ProbeHParams
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("batch_size", 0), ("learning_rate", 0.0), ("weight_decay", -1.0)])
def test_probe_hparams_reject_bad_values(field, value):
  with pytest.raises(ValueError, match=field):
    linear_probe.ProbeHParams(**{field: value})


# ----------------------------------------------------------------------------
# linear_probe
# ----------------------------------------------------------------------------


def test_probe_separable_data_is_perfect(separable):
  train_x, train_y, test_x, test_y = separable
  got = linear_probe.linear_probe(train_x, train_y, test_x, test_y, hp=HP)
  assert got == {"top1": 1.0, "top5": 1.0, "num_train": 240, "num_test": 120}


def test_probe_random_labels_is_near_chance():
  rng = np.random.default_rng(5)
  train_x = rng.normal(size=(300, 16)).astype(np.float32)
  test_x = rng.normal(size=(600, 16)).astype(np.float32)
  train_y = rng.integers(0, 6, size=300)
  test_y = rng.integers(0, 6, size=600)
  got = linear_probe.linear_probe(train_x, train_y, test_x, test_y, hp=HP)
  # Chance is 1/6; the std of the test accuracy is ~0.015 at 600 samples.
  assert got["top1"] < 0.5
  assert got["num_train"] == 300 and got["num_test"] == 600


def test_probe_top5_only_with_more_than_five_classes():
  rng = np.random.default_rng(6)
  for num_classes, has_top5 in ((5, False), (6, True)):
    train_x, train_y, centers = _clusters(rng, 60, num_classes, 8)
    test_x, test_y, _ = _clusters(rng, 30, num_classes, 8, centers=centers)
    got = linear_probe.linear_probe(train_x, train_y, test_x, test_y, hp=HP)
    assert ("top5" in got) == has_top5, num_classes
    assert set(got) - {"top5"} == {"top1", "num_train", "num_test"}


def test_probe_string_labels_and_test_only_class():
  # Labels of any sortable type; a test class absent from train can't be hit.
  rng = np.random.default_rng(7)
  train_x, train_y, centers = _clusters(rng, 60, 3, 8)
  test_x, test_y, _ = _clusters(rng, 30, 3, 8, centers=centers)
  names = np.array(["ant", "bee", "cat"])
  test_y_named = names[test_y].astype(object)
  test_y_named[:3] = "zebra"
  got = linear_probe.linear_probe(train_x, names[train_y], test_x, test_y_named.astype(str), hp=HP)
  assert got["top1"] == pytest.approx(27 / 30)


def test_probe_fraction_sizes(separable):
  train_x, train_y, test_x, test_y = separable
  got = linear_probe.linear_probe(train_x, train_y, test_x, test_y, fraction=0.2, hp=HP,
                                  subset_seed=3)
  assert got["num_train"] == sum(_expected_per_class(train_y, 0.2).values()) == 48
  assert got["num_train"] == linear_probe.stratified_subset(train_y, 0.2, 3).size
  assert got["num_test"] == len(test_y)
  assert got["top1"] == 1.0  # separable with 8 samples per class too


def test_probe_is_reproducible(separable):
  rng = np.random.default_rng(8)
  # Overlapping classes, so the result depends on the training details.
  train_x, train_y, test_x, test_y = separable
  train_x = train_x + 15 * rng.normal(size=train_x.shape).astype(np.float32)
  test_x = test_x + 15 * rng.normal(size=test_x.shape).astype(np.float32)
  hp = linear_probe.ProbeHParams(epochs=10, batch_size=64, seed=11)
  a = linear_probe.linear_probe(train_x, train_y, test_x, test_y, fraction=0.5, hp=hp)
  b = linear_probe.linear_probe(train_x, train_y, test_x, test_y, fraction=0.5, hp=hp)
  assert a == b
  assert 0.0 < a["top1"] < 1.0


def test_probe_scale_invariance(separable):
  train_x, train_y, test_x, test_y = separable
  base = linear_probe.linear_probe(train_x, train_y, test_x, test_y, hp=HP)
  scaled = linear_probe.linear_probe(1000 * train_x, train_y, 1000 * test_x, test_y, hp=HP)
  assert scaled["top1"] == base["top1"] == 1.0


def test_probe_constant_columns_give_no_nan(separable):
  train_x, train_y, test_x, test_y = separable
  const_train = np.full((len(train_x), 3), 5.0, np.float32)
  const_test = np.full((len(test_x), 3), 5.0, np.float32)
  got = linear_probe.linear_probe(np.concatenate([train_x, const_train], 1), train_y,
                                  np.concatenate([test_x, const_test], 1), test_y, hp=HP)
  assert all(np.isfinite(v) for v in got.values())
  assert got["top1"] == 1.0
  # Every column constant: no information, but still finite numbers.
  flat = linear_probe.linear_probe(const_train, train_y, const_test, test_y, hp=HP)
  assert all(np.isfinite(v) for v in flat.values())
  assert 0.0 <= flat["top1"] <= 1.0


def test_probe_rejects_bad_input(separable):
  train_x, train_y, test_x, test_y = separable
  nan_train = train_x.copy()
  nan_train[3, 2] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    linear_probe.linear_probe(nan_train, train_y, test_x, test_y, hp=HP)
  with pytest.raises(ValueError, match="dim"):
    linear_probe.linear_probe(train_x, train_y, test_x[:, :8], test_y, hp=HP)
  with pytest.raises(ValueError, match="test"):
    linear_probe.linear_probe(train_x, train_y, np.zeros((0, 16), np.float32),
                              np.zeros((0,), np.int64), hp=HP)
  with pytest.raises(ValueError, match="fraction"):
    linear_probe.linear_probe(train_x, train_y, test_x, test_y, fraction=0.0, hp=HP)
  with pytest.raises(ValueError, match="labels"):
    linear_probe.linear_probe(train_x, train_y[:-1], test_x, test_y, hp=HP)
