"""Tests for fgjax.evaluate.suite: the keys of evaluate_features, wiring, errors."""

import numpy as np
import pytest

from fgjax.config import blocks as config_blocks
from fgjax.evaluate import linear_probe
from fgjax.evaluate import retrieval
from fgjax.evaluate import suite


NUM_TRAIN, NUM_TEST, DIM = 120, 60, 8
# 8 fine classes under 3 super-classes; super label = FINE_TO_SUPER[fine].
FINE_TO_SUPER = np.array([0, 0, 0, 1, 1, 1, 2, 2])


def _e(**overrides):
  e = config_blocks.eval_config()
  e.probe_epochs = 5
  e.knn_ks = (3,)
  e.chunk_size = 16  # does not divide 60 test samples: padded chunks
  for key, value in overrides.items():
    e[key] = value
  return e


def _split(rng, centers, n):
  fine = rng.permutation(np.arange(n) % len(centers))
  features = centers[fine] + rng.normal(size=(n, centers.shape[1]))
  return features.astype(np.float32), {"fine": fine, "super": FINE_TO_SUPER[fine]}


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  # Overlapping clusters: metrics strictly between 0 and 1, so a label level
  # mixed up with the other would show in the values.
  centers = 1.2 * rng.normal(size=(len(FINE_TO_SUPER), DIM))
  train_f, train_y = _split(rng, centers, NUM_TRAIN)
  test_f, test_y = _split(rng, centers, NUM_TEST)
  return train_f, train_y, test_f, test_y


@pytest.fixture(scope="module")
def full_result(data):
  train_f, train_y, test_f, test_y = data
  return suite.evaluate_features(_e(), train_f, train_y, test_f, test_y)


def _fine_only(labels):
  return {"fine": labels["fine"]}


def _retrieval_keys(level, recall_ks=(1, 2, 4, 8)):
  return {f"rank1_{level}", f"rank5_{level}", f"map_{level}", f"retrieval_skipped_{level}",
          *(f"recall@{k}_{level}" for k in recall_ks)}


# ----------------------------------------------------------------------------
# Keys
# ----------------------------------------------------------------------------


def test_keys_fine_and_super(full_result):
  expected = {"knn3_top1_fine", "knn3_top1_super", "outliers_super", "outlier_share_super", "feature_spread"}
  for p in ("100", "50", "20"):
    # 8 fine classes: top-5 too; 3 super-classes: top-1 only.
    expected |= {f"probe{p}_top1_fine", f"probe{p}_top5_fine", f"probe{p}_top1_super"}
  expected |= _retrieval_keys("fine") | _retrieval_keys("super")
  assert set(full_result) == expected
  for key, value in full_result.items():
    expected_type = int if key.startswith(("outliers_", "retrieval_skipped_")) else float
    assert type(value) is expected_type, key
    assert np.isfinite(value), key


def test_keys_fine_only(data):
  train_f, train_y, test_f, test_y = data
  got = suite.evaluate_features(_e(outlier_level="fine"), train_f, _fine_only(train_y), test_f,
                                _fine_only(test_y))
  expected = {"knn3_top1_fine", "outliers_fine", "outlier_share_fine", "feature_spread"} | _retrieval_keys("fine")
  for p in ("100", "50", "20"):
    expected |= {f"probe{p}_top1_fine", f"probe{p}_top5_fine"}
  assert set(got) == expected


# ----------------------------------------------------------------------------
# Values: each equals the underlying function called directly
# ----------------------------------------------------------------------------


def test_values_match_direct_calls(data, full_result):
  train_f, train_y, test_f, test_y = data
  e = _e()
  expected = {}
  hp = linear_probe.ProbeHParams(epochs=5, batch_size=e.probe_batch_size,
                                 learning_rate=e.probe_learning_rate,
                                 weight_decay=e.probe_weight_decay, seed=e.probe_seed)
  for level in ("fine", "super"):
    expected[f"knn3_top1_{level}"] = retrieval.knn_accuracy(
        train_f, train_y[level], test_f, test_y[level], k=3, temperature=e.knn_temperature)
    for fraction, p in ((1.0, "100"), (0.5, "50"), (0.2, "20")):
      probe = linear_probe.linear_probe(train_f, train_y[level], test_f, test_y[level],
                                        fraction=fraction, hp=hp, subset_seed=e.probe_seed)
      assert probe["num_test"] == NUM_TEST
      for key in ("top1", "top5"):
        if key in probe:
          expected[f"probe{p}_{key}_{level}"] = probe[key]
    r = retrieval.retrieval_metrics(test_f, test_y[level], ks=(1, 2, 4, 8), rank_ks=(1, 5))
    for key in ("rank1", "rank5", "recall@1", "recall@2", "recall@4", "recall@8", "map"):
      expected[f"{key}_{level}"] = r[key]
    expected[f"retrieval_skipped_{level}"] = r["num_skipped_queries"]
  o = retrieval.nearest_centroid_outliers(test_f, test_y["super"])
  expected["outliers_super"] = o["num_outliers"]
  expected["outlier_share_super"] = o["share"]
  expected["feature_spread"] = suite.feature_spread(test_f)

  assert set(expected) == set(full_result)
  for key, value in expected.items():
    # The suite's chunk size differs from the defaults used here: floats may
    # differ by rounding, counts must not.
    assert full_result[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
  # The levels differ (wrong wiring would swap or duplicate them).
  assert full_result["knn3_top1_super"] != full_result["knn3_top1_fine"]
  assert full_result["map_super"] != full_result["map_fine"]
  assert 0.0 < full_result["map_fine"] < 1.0
  assert 0 < full_result["outliers_super"] < NUM_TEST


def test_outlier_level_fine_uses_fine_labels(data):
  train_f, train_y, test_f, test_y = data
  got = suite.evaluate_features(_e(outlier_level="fine", probe_fractions=()), train_f, train_y,
                                test_f, test_y)
  o = retrieval.nearest_centroid_outliers(test_f, test_y["fine"])
  assert got["outliers_fine"] == o["num_outliers"]
  assert got["outlier_share_fine"] == pytest.approx(o["share"])
  assert "outliers_super" not in got and not any(k.startswith("probe") for k in got)


def test_outliers_off(data):
  train_f, train_y, test_f, test_y = data
  got = suite.evaluate_features(_e(outlier_level="", probe_fractions=()), train_f, train_y,
                                test_f, test_y)
  assert not any(k.startswith("outlier") for k in got)


# ----------------------------------------------------------------------------
# Recall@k choice, probe fractions, monitor mode
# ----------------------------------------------------------------------------


def test_recall_ks_for():
  e = _e()
  assert suite.recall_ks_for(e, 60) == (1, 2, 4, 8)
  assert suite.recall_ks_for(e, 9_999) == (1, 2, 4, 8)
  assert suite.recall_ks_for(e, 10_000) == (1, 10, 100, 1000)
  assert suite.recall_ks_for(_e(recall_ks=(3,)), 10_000) == (3,)


def test_recall_ks_in_results(data):
  train_f, train_y, test_f, test_y = data
  fine_train, fine_test = _fine_only(train_y), _fine_only(test_y)
  auto = suite.evaluate_features(_e(probe_fractions=(), outlier_level=""), train_f, fine_train,
                                 test_f, fine_test)
  assert {k for k in auto if k.startswith("recall@")} == {
      "recall@1_fine", "recall@2_fine", "recall@4_fine", "recall@8_fine"}
  explicit = suite.evaluate_features(_e(probe_fractions=(), outlier_level="", recall_ks=(3,)),
                                     train_f, fine_train, test_f, fine_test)
  assert {k for k in explicit if k.startswith("recall@")} == {"recall@3_fine"}
  r = retrieval.retrieval_metrics(test_f, test_y["fine"], ks=(3,), rank_ks=(1, 5))
  assert explicit["recall@3_fine"] == pytest.approx(r["recall@3"])


def test_probe_fraction_names(data):
  assert suite.fraction_name(1.0) == "100"
  assert suite.fraction_name(0.5) == "50"
  assert suite.fraction_name(0.025) == "2.5"
  train_f, train_y, test_f, test_y = data
  got = suite.evaluate_features(_e(probe_fractions=(1.0, 0.025), outlier_level=""), train_f,
                                _fine_only(train_y), test_f, _fine_only(test_y))
  assert {k for k in got if k.startswith("probe")} == {
      "probe100_top1_fine", "probe100_top5_fine", "probe2.5_top1_fine", "probe2.5_top5_fine"}


def test_monitor_only(data):
  train_f, train_y, test_f, test_y = data
  e = _e(knn_ks=(3, 5))
  got = suite.evaluate_features(e, train_f, train_y, test_f, test_y, monitor_only=True)
  assert set(got) == {"knn3_top1_fine", "knn3_top1_super"}
  for level in ("fine", "super"):
    assert got[f"knn3_top1_{level}"] == pytest.approx(retrieval.knn_accuracy(
        train_f, train_y[level], test_f, test_y[level], k=3, temperature=e.knn_temperature))


# ----------------------------------------------------------------------------
# The model's own super-class head
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("num_super_outputs, keys", [
    (3, {"head_top1_super"}), (7, {"head_top1_super", "head_top5_super"})])
def test_super_head(data, num_super_outputs, keys):
  train_f, train_y, test_f, test_y = data
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(NUM_TEST, num_super_outputs)).astype(np.float32)
  logits[np.arange(NUM_TEST), test_y["super"]] += 1.0  # better than chance
  got = suite.evaluate_features(_e(probe_fractions=()), train_f, train_y, test_f, test_y,
                                super_logits=logits)
  assert {k for k in got if k.startswith("head_")} == keys
  ks = (1, 5) if num_super_outputs > 5 else (1,)
  expected = linear_probe.topk_accuracy(logits, test_y["super"], ks)
  for k in ks:
    assert got[f"head_top{k}_super"] == expected[f"top{k}"]
  assert 0.0 < got["head_top1_super"] < 1.0


def test_super_head_without_super_labels_raises(data):
  train_f, train_y, test_f, test_y = data
  with pytest.raises(suite.EvaluationError, match="super"):
    suite.evaluate_features(_e(probe_fractions=(), outlier_level=""), train_f,
                            _fine_only(train_y), test_f, _fine_only(test_y),
                            super_logits=np.zeros((NUM_TEST, 3), np.float32))


# ----------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------


def test_empty_splits_raise(data):
  train_f, train_y, test_f, test_y = data
  empty_f = np.zeros((0, DIM), np.float32)
  empty_y = {"fine": np.zeros((0,), np.int64)}
  with pytest.raises(suite.EvaluationError, match="empty"):
    suite.evaluate_features(_e(), empty_f, empty_y, test_f, _fine_only(test_y))
  with pytest.raises(suite.EvaluationError, match="empty"):
    suite.evaluate_features(_e(), train_f, _fine_only(train_y), empty_f, empty_y)


def test_nan_features_raise(data):
  train_f, train_y, test_f, test_y = data
  bad = test_f.copy()
  bad[[2, 5], 0] = np.nan
  bad[5, 3] = np.inf
  with pytest.raises(suite.EvaluationError, match="NaN") as info:
    suite.evaluate_features(_e(), train_f, train_y, bad, test_y)
  assert "2 of 60" in str(info.value)  # counts rows, not entries


def test_wrong_label_length_raises(data):
  train_f, train_y, test_f, test_y = data
  short = dict(train_y, super=train_y["super"][:-1])
  with pytest.raises(suite.EvaluationError, match="labels"):
    suite.evaluate_features(_e(), train_f, short, test_f, test_y)
  with pytest.raises(suite.EvaluationError, match="labels"):
    suite.evaluate_features(_e(), train_f, train_y, test_f,
                            dict(test_y, fine=test_y["fine"][:, None]))


def test_knn_k_larger_than_train_raises(data):
  train_f, train_y, test_f, test_y = data
  with pytest.raises(suite.EvaluationError, match="knn_ks"):
    suite.evaluate_features(_e(knn_ks=(NUM_TRAIN + 1,)), train_f, train_y, test_f, test_y)
  with pytest.raises(suite.EvaluationError, match="knn_ks"):
    suite.evaluate_features(_e(knn_ks=(3, NUM_TRAIN + 1)), train_f, train_y, test_f, test_y)
  with pytest.raises(suite.EvaluationError, match="knn_ks"):  # the monitor checks its k too
    suite.evaluate_features(_e(knn_ks=(NUM_TRAIN + 1,)), train_f, train_y, test_f, test_y,
                            monitor_only=True)


def test_outlier_level_missing_raises(data):
  train_f, train_y, test_f, test_y = data
  with pytest.raises(suite.EvaluationError, match="outlier_level"):
    suite.evaluate_features(_e(probe_fractions=(), outlier_level="super"), train_f,
                            _fine_only(train_y), test_f, _fine_only(test_y))


def test_outlier_level_auto_is_the_coarsest_level_present(data):
  train_f, train_y, test_f, test_y = data
  both = suite.evaluate_features(_e(probe_fractions=(), outlier_level="auto"), train_f, train_y,
                                 test_f, test_y)
  assert "outliers_super" in both and "outliers_fine" not in both
  fine = suite.evaluate_features(_e(probe_fractions=(), outlier_level="auto"), train_f,
                                 _fine_only(train_y), test_f, _fine_only(test_y))
  assert "outliers_fine" in fine and "outliers_super" not in fine


def test_evaluation_error_is_value_error():
  assert issubclass(suite.EvaluationError, ValueError)


def test_feature_spread_is_one_for_isotropic_features_and_zero_when_collapsed():
  rng = np.random.default_rng(0)
  isotropic = rng.normal(size=(4000, 64))
  assert abs(suite.feature_spread(isotropic) - 1.0) < 0.02  # std of a unit vector's coordinate: 1/sqrt(d)
  collapsed = np.tile(rng.normal(size=(1, 64)), (100, 1)) * rng.uniform(1, 2, size=(100, 1))  # one direction
  assert suite.feature_spread(collapsed) < 1e-6
  assert suite.feature_spread(np.abs(isotropic)) < 0.7  # non-negative (pooled ReLU) features: below 1
