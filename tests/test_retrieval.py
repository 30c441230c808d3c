"""Tests for fgjax.evaluate.retrieval: NumPy references, hand cases, chunking."""

import chex
import jax
import numpy as np
import pytest

from fgjax.evaluate import retrieval


# ----------------------------------------------------------------------------
# Brute-force NumPy references: full N x N matrix, explicit loops, float64.
# ----------------------------------------------------------------------------


def _np_normalize(x):
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _np_retrieval(features, labels, ks, rank_ks):
  x = _np_normalize(features)
  sims = x @ x.T
  n = len(labels)
  first_ranks, aps = [], []
  for i in range(n):
    gallery = np.array([j for j in range(n) if j != i])
    order = gallery[np.argsort(-sims[i, gallery], kind="stable")]
    relevant = labels[order] == labels[i]
    if not relevant.any():
      continue
    first_ranks.append(int(np.argmax(relevant)))
    precisions = [relevant[:p + 1].sum() / (p + 1)
                  for p in range(len(order)) if relevant[p]]
    aps.append(np.mean(precisions))
  first_ranks = np.array(first_ranks)
  out = {f"rank{k}": float(np.mean(first_ranks < k)) for k in rank_ks}
  out.update({f"recall@{k}": float(np.mean(first_ranks < k)) for k in ks})
  out["map"] = float(np.mean(aps))
  out["num_queries"] = len(first_ranks)
  out["num_skipped_queries"] = n - len(first_ranks)
  return out


def _np_knn(train_x, train_y, test_x, test_y, k, temperature):
  train_x, test_x = _np_normalize(train_x), _np_normalize(test_x)
  correct = 0
  for q, label in zip(test_x, test_y):
    sims = train_x @ q
    neighbours = np.argsort(-sims, kind="stable")[:k]
    votes = np.zeros(int(max(train_y.max(), test_y.max())) + 1)
    for j in neighbours:
      # exp(sim / T), divided by the per-query constant exp(max sim / T).
      votes[train_y[j]] += np.exp((sims[j] - sims[neighbours[0]]) / temperature)
    correct += int(np.argmax(votes) == label)
  return correct / len(test_y)


def _np_centroid_outliers(features, labels, normalize):
  x = _np_normalize(features)
  classes = np.unique(labels)
  centroids = np.stack([x[labels == c].mean(axis=0) for c in classes])
  outliers = 0
  for xi, yi in zip(x, labels):
    if normalize:
      nearest = np.argmax(_np_normalize(centroids) @ xi)
    else:
      nearest = np.argmin(np.linalg.norm(centroids - xi, axis=1))
    outliers += int(classes[nearest] != yi)
  return outliers


def _clustered(rng, n, num_classes, dim, noise):
  labels = rng.integers(0, num_classes, size=n)
  centers = rng.normal(size=(num_classes, dim))
  return (centers[labels] + noise * rng.normal(size=(n, dim))).astype(
      np.float32), labels


def _angles(degrees):
  rad = np.deg2rad(np.asarray(degrees, np.float64))
  return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------
# retrieval_metrics
# ----------------------------------------------------------------------------

KS = (1, 2, 4, 8, 30)
RANK_KS = (1, 5)


@pytest.fixture(scope="module")
def random_set():
  rng = np.random.default_rng(0)
  # N = 103 is prime: no chunk size below divides it, so padding is exercised.
  # noise 1.5 keeps classes overlapping (metrics strictly between 0 and 1);
  # 17 classes over 103 samples gives repeated labels and likely singletons.
  features, labels = _clustered(rng, 103, 17, 8, noise=1.5)
  return features, labels


@pytest.mark.parametrize("chunk_size", [16, 7, 103, 500])
def test_retrieval_matches_numpy_reference(random_set, chunk_size):
  features, labels = random_set
  expected = _np_retrieval(features, labels, KS, RANK_KS)
  got = retrieval.retrieval_metrics(features, labels, ks=KS, rank_ks=RANK_KS,
                                    chunk_size=chunk_size)
  assert set(got) == set(expected)
  for key in expected:
    if key == "map":
      np.testing.assert_allclose(got[key], expected[key], rtol=1e-6)
    else:
      assert got[key] == expected[key], key
  # The data are informative but not trivially so.
  assert 0.2 < got["rank1"] < 1.0 and 0.1 < got["map"] < 1.0


def test_retrieval_identical_across_chunk_sizes(random_set):
  features, labels = random_set
  results = [
      retrieval.retrieval_metrics(features, labels, ks=KS, chunk_size=c)
      for c in (16, 10, 64, 1024)
  ]
  for result in results[1:]:
    # Every metric comes from integer ranks, averaged in float64 on the host:
    # identical, not merely close.
    assert result == results[0]


def test_retrieval_types_and_compute_map_false(random_set):
  features, labels = random_set
  with_map = retrieval.retrieval_metrics(features, labels, chunk_size=16)
  without = retrieval.retrieval_metrics(features, labels, chunk_size=16,
                                        compute_map=False)
  assert "map" not in without
  assert set(with_map) == {"rank1", "rank5", "recall@1", "recall@2",
                           "recall@4", "recall@8", "map", "num_queries",
                           "num_skipped_queries"}
  for key, value in without.items():
    assert value == with_map[key]
  for key, value in with_map.items():
    expected_type = int if key.startswith("num_") else float
    assert type(value) is expected_type, key


def test_retrieval_hand_case_circle():
  # Four unit vectors at angles 0, 40 (class A) and 110, 210 (class B). The
  # angular distances (smaller = more similar) give, leaving each query out:
  #   q=0   (A): 40(A) d40, 110(B) d110, 210(B) d150  -> relevant at 1: AP 1
  #   q=40  (A): 0(A) d40,  110(B) d70,  210(B) d170  -> relevant at 1: AP 1
  #   q=110 (B): 40(A) d70, 210(B) d100, 0(A) d110    -> relevant at 2: AP 1/2
  #   q=210 (B): 110(B) d100, 0(A) d150, 40(A) d170   -> relevant at 1: AP 1
  # mAP = (1 + 1 + 1/2 + 1) / 4 = 0.875; rank-1 = 3/4; rank-2 = 1.
  features = _angles([0, 40, 110, 210])
  labels = np.array(["A", "A", "B", "B"])
  got = retrieval.retrieval_metrics(features, labels, ks=(1, 2, 3),
                                    rank_ks=(1, 2), chunk_size=3)
  assert got == {
      "rank1": 0.75, "rank2": 1.0, "recall@1": 0.75, "recall@2": 1.0,
      "recall@3": 1.0, "map": 0.875, "num_queries": 4,
      "num_skipped_queries": 0}


def test_retrieval_map_with_several_relevant_items():
  # One query (0 deg) with relevant items ranked 1st and 5th of 5:
  # order 20(A) d20, 290(B) d70, 90(B) d90, 110(B) d110, 200(A) d160,
  # AP = (1/1 + 2/5) / 2 = 0.7. Scale invariance: features are not unit norm.
  features = _angles([0, 20, 90, 110, 200, 290]) * np.array(
      [[3.0], [0.5], [1.0], [2.0], [7.0], [1.0]], np.float32)
  labels = np.array([0, 0, 1, 1, 0, 1])
  expected = _np_retrieval(features, labels, (1,), (1,))
  got = retrieval.retrieval_metrics(features, labels, ks=(1,), rank_ks=(1,),
                                    chunk_size=4)
  assert got["map"] == pytest.approx(expected["map"], abs=1e-7)
  normed = retrieval._l2_normalize(features)
  first = retrieval._retrieval_chunk(normed, jax.numpy.asarray(labels),
                                     jax.numpy.asarray([0]))
  assert int(first[0][0]) == 0 and int(first[1][0]) == 2
  # Members of query 0's class: rows 0 (itself), 1 and 4; padded with -1.
  ahead_all, ahead_rel = retrieval._average_precision_chunk(
      normed, jax.numpy.asarray([0]), jax.numpy.asarray([[0, 1, 4, -1]]))
  # Row 1 is first (0 ahead, 0 relevant ahead); row 4 is 5th (4 ahead, 1
  # relevant ahead): AP = (1/1 + 2/5) / 2.
  assert (int(ahead_all[0, 1]), int(ahead_rel[0, 1])) == (0, 0)
  assert (int(ahead_all[0, 2]), int(ahead_rel[0, 2])) == (4, 1)


def test_singleton_query_is_skipped_and_counted():
  # Class 7 has one member (index 2): it has nothing to retrieve. Every other
  # query finds its class-mate first, so rank-1 is 4/4 = 1.0; counting the
  # singleton as a miss would give 0.8.
  features = _angles([0, 5, 90, 180, 185])
  labels = np.array([1, 1, 7, 3, 3])
  got = retrieval.retrieval_metrics(features, labels, chunk_size=2)
  assert got["num_queries"] == 4
  assert got["num_skipped_queries"] == 1
  assert got["rank1"] == 1.0 and got["map"] == 1.0


def test_all_queries_skipped_gives_nan():
  got = retrieval.retrieval_metrics(np.eye(3, dtype=np.float32), [0, 1, 2])
  assert got["num_queries"] == 0 and got["num_skipped_queries"] == 3
  assert np.isnan(got["rank1"]) and np.isnan(got["map"])


@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_ties_broken_by_lower_index(chunk_size):
  # Rows 1 and 2 are the same vector, both at similarity exactly 0 to row 0
  # (one-hot vectors: exact products). The lower index (1) must rank first.
  features = np.array([[1, 0], [0, 1], [0, 1]], np.float32)
  # Row 1 is of another class: query 0 ranks 1 (B) before 2 (A) -> miss, AP
  # 1/2; query 2 ranks 1 (B, sim 1) before 0 (A) -> miss, AP 1/2; query 1 is
  # the only B: skipped.
  got = retrieval.retrieval_metrics(features, ["A", "B", "A"],
                                    chunk_size=chunk_size)
  assert (got["rank1"], got["map"], got["num_queries"]) == (0.0, 0.5, 2)
  # Swap the labels of the duplicates: now query 0 finds A at index 1 first
  # (hit, AP 1); query 1 (A) ranks 2 (B, sim 1) before 0 (A): AP 1/2.
  got = retrieval.retrieval_metrics(features, ["A", "A", "B"],
                                    chunk_size=chunk_size)
  assert (got["rank1"], got["map"], got["num_queries"]) == (0.5, 0.75, 2)


def test_ties_on_axes_hand_case():
  # Four points on the axes: 0 and 90 deg (A), 180 and 270 deg (B); neighbours
  # on the circle are at similarity exactly 0, opposite points at -1.
  #   q=0   (A): 90 (A, idx1) ties 270 (B, idx3) -> idx1 first: AP 1
  #   q=90  (A): 0 (A, idx0) ties 180 (B, idx2) -> idx0 first: AP 1
  #   q=180 (B): 90 (A, idx1) ties 270 (B, idx3) -> idx1 first: AP 1/2
  #   q=270 (B): 0 (A, idx0) ties 180 (B, idx2) -> idx0 first: AP 1/2
  # mAP = 3/4; rank-1 = 1/2. Reversed tie-breaking would give 1/2 and 1/2...
  # with the roles of A and B swapped, so permuting the rows changes the result.
  features = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)
  got = retrieval.retrieval_metrics(features, [0, 0, 1, 1], ks=(1, 2))
  assert (got["rank1"], got["recall@2"], got["map"]) == (0.5, 1.0, 0.75)
  expected = _np_retrieval(features, np.array([0, 0, 1, 1]), (1, 2), (1, 5))
  assert got["map"] == expected["map"] and got["rank1"] == expected["rank1"]


def _max_intermediate_size(jaxpr):
  """Largest number of elements of any value in a jaxpr, sub-jaxprs included."""
  largest = 0
  for var in (*jaxpr.invars, *jaxpr.constvars):
    largest = max(largest, int(np.prod(var.aval.shape)))
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      largest = max(largest, int(np.prod(getattr(var.aval, "shape", ()))))
    for param in eqn.params.values():
      params = param if isinstance(param, (tuple, list)) else (param,)
      for sub in params:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          largest = max(largest, _max_intermediate_size(inner))
  return largest


def test_chunk_functions_never_build_n_by_n():
  n, d, chunk, width = 103, 8, 16, 8
  zeros = jax.numpy.zeros
  rank_jaxpr = jax.make_jaxpr(retrieval._retrieval_chunk)(
      zeros((n, d)), zeros((n,), "int32"), zeros((chunk,), "int32")).jaxpr
  ap_jaxpr = jax.make_jaxpr(retrieval._average_precision_chunk)(
      zeros((n, d)), zeros((chunk,), "int32"), zeros((chunk, width), "int32")).jaxpr
  # Every intermediate is at most [chunk, N] (N x N would be 103 x 103; the
  # members are visited one column at a time, never [chunk, width, N]).
  assert _max_intermediate_size(rank_jaxpr) <= chunk * n
  assert _max_intermediate_size(ap_jaxpr) <= chunk * n


def test_chunk_functions_trace_once(random_set, monkeypatch):
  features, labels = random_set  # 103 samples, chunk 16: 7 chunks, 1 padded.
  chex.clear_trace_counter()
  monkeypatch.setattr(
      retrieval, "_retrieval_chunk_jit",
      jax.jit(chex.assert_max_traces(retrieval._retrieval_chunk, n=1)))
  # The AP chunk compiles once per member width (powers of two up to the
  # largest class): here classes of 1..16 members -> widths 1, 2, 4, 8, 16.
  largest = int(np.bincount(np.unique(labels, return_inverse=True)[1]).max())
  monkeypatch.setattr(
      retrieval, "_average_precision_chunk_jit",
      jax.jit(chex.assert_max_traces(retrieval._average_precision_chunk,
                                     n=largest.bit_length() + 1)))
  monkeypatch.setattr(
      retrieval, "_knn_chunk_jit",
      jax.jit(chex.assert_max_traces(retrieval._knn_chunk, n=1),
              static_argnames=("k", "temperature")))
  monkeypatch.setattr(
      retrieval, "_nearest_centroid_chunk_jit",
      jax.jit(chex.assert_max_traces(retrieval._nearest_centroid_chunk, n=1),
              static_argnames="normalize"))
  retrieval.retrieval_metrics(features, labels, chunk_size=16)
  retrieval.knn_accuracy(features[:50], labels[:50], features[50:],
                         labels[50:], k=5, chunk_size=16)
  retrieval.nearest_centroid_outliers(features, labels, chunk_size=16)


def test_average_precision_per_query_matches_sklearn():
  # scikit-learn's AP takes the relevance mask and the scores of the N-1 other
  # items. With continuous random features there are no ties, where sklearn's
  # threshold-based AP and the ranked-list AP are the same number.
  from sklearn.metrics import average_precision_score
  rng = np.random.default_rng(3)
  features, labels = _clustered(rng, 150, 9, 6, noise=1.0)
  normed = _np_normalize(features)
  expected = []
  for i in range(len(labels)):
    others = np.arange(len(labels)) != i
    relevant = labels[others] == labels[i]
    if relevant.any():
      expected.append(average_precision_score(relevant, normed[others] @ normed[i]))
  _, ids = np.unique(labels, return_inverse=True)
  per_query, _, _ = retrieval._average_precisions(
      retrieval._l2_normalize(features), ids.astype(np.int32), chunk_size=32)
  answered = np.bincount(ids)[ids] > 1
  np.testing.assert_allclose(per_query[answered], expected, rtol=1e-6)
  got = retrieval.retrieval_metrics(features, labels, chunk_size=32)
  assert got["map"] == pytest.approx(np.mean(expected), rel=1e-6)


@pytest.mark.parametrize("chunk_size", [5, 64, 1000])
def test_long_tailed_classes_match_reference(chunk_size):
  # Class sizes 1, 2, 3, 9 and 40: queries are grouped by class size into
  # member widths 1, 2, 4, 16 and 64 (capped at 40); the order of visits must
  # not change any query's result.
  rng = np.random.default_rng(5)
  sizes = {0: 40, 1: 9, 2: 3, 3: 2, 4: 1}
  labels = rng.permutation(np.concatenate([[c] * n for c, n in sizes.items()]))
  features = rng.normal(size=(len(labels), 5)).astype(np.float32)
  features += 0.8 * np.eye(5, dtype=np.float32)[labels]
  expected = _np_retrieval(features, labels, KS, RANK_KS)
  got = retrieval.retrieval_metrics(features, labels, ks=KS, rank_ks=RANK_KS,
                                    chunk_size=chunk_size)
  assert got.pop("map") == pytest.approx(expected.pop("map"), rel=1e-9)
  assert got == expected
  assert got["num_skipped_queries"] == 1


def test_k_larger_than_the_gallery():
  # 12 samples: a gallery of 11 per query. Recall@k for k >= 11 counts every
  # answered query (its class-mate is somewhere in the list): 1.0, like the
  # reference; k = 1000 is not an error.
  rng = np.random.default_rng(7)
  features = rng.normal(size=(12, 4)).astype(np.float32)
  labels = np.repeat(np.arange(6), 2)
  ks = (1, 11, 12, 1000)
  expected = _np_retrieval(features, labels, ks, (1, 50))
  got = retrieval.retrieval_metrics(features, labels, ks=ks, rank_ks=(1, 50),
                                    chunk_size=5)
  assert got.pop("map") == pytest.approx(expected.pop("map"), rel=1e-9)
  assert got == expected
  assert got["recall@11"] == got["recall@1000"] == got["rank50"] == 1.0


def test_ties_match_reference_on_quantised_features():
  # Features along the +-axes, scaled by powers of two: normalising is exact
  # in float32 and float64 and every similarity is exactly -1, 0 or 1, so
  # nearly every ranking decision is a tie, settled by the lower-index rule
  # (the reference uses a stable argsort).
  rng = np.random.default_rng(11)
  axes = np.concatenate([np.eye(3), -np.eye(3)]).astype(np.float32)
  features = axes[rng.integers(0, 6, size=60)] * 2.0**rng.integers(-3, 4, size=(60, 1))
  labels = rng.integers(0, 4, size=60)
  expected = _np_retrieval(features, labels, KS, RANK_KS)
  for chunk_size in (7, 60):
    got = retrieval.retrieval_metrics(features, labels, ks=KS,
                                      rank_ks=RANK_KS, chunk_size=chunk_size)
    assert got.pop("map") == pytest.approx(expected["map"], rel=1e-9)
    assert got == {k: v for k, v in expected.items() if k != "map"}


def test_retrieval_input_errors():
  with pytest.raises(ValueError, match="labels"):
    retrieval.retrieval_metrics(np.zeros((4, 2)), [0, 1, 0])
  with pytest.raises(ValueError, match="NaN"):
    retrieval.retrieval_metrics(np.array([[np.nan, 1.0], [1.0, 0.0]]), [0, 0])
  with pytest.raises(ValueError, match="chunk_size"):
    retrieval.retrieval_metrics(np.eye(2), [0, 0], chunk_size=0)


# ----------------------------------------------------------------------------
# knn_accuracy
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("k,temperature,chunk_size", [(20, 0.07, 16),
                                                      (5, 0.5, 9),
                                                      (1, 0.07, 64)])
def test_knn_matches_numpy_reference(k, temperature, chunk_size):
  rng = np.random.default_rng(1)
  features, labels = _clustered(rng, 160, 6, 12, noise=1.6)
  train_x, train_y, test_x, test_y = (features[:123], labels[:123],
                                      features[123:], labels[123:])
  expected = _np_knn(train_x, train_y, test_x, test_y, k, temperature)
  got = retrieval.knn_accuracy(train_x, train_y, test_x, test_y, k=k,
                               temperature=temperature, chunk_size=chunk_size)
  assert type(got) is float
  assert got == expected
  assert 0.3 < got < 1.0  # informative, not trivial


def test_knn_separated_clusters_is_perfect():
  rng = np.random.default_rng(2)
  features, labels = _clustered(rng, 200, 5, 16, noise=0.05)
  assert retrieval.knn_accuracy(features[:150], labels[:150], features[150:],
                                labels[150:], chunk_size=16,
                                num_classes=5) == 1.0
  # Against shuffled train labels the same features are near chance.
  shuffled = rng.permutation(labels[:150])
  assert retrieval.knn_accuracy(features[:150], shuffled, features[150:],
                                labels[150:]) < 0.6


def test_knn_small_temperature_does_not_overflow():
  # exp(1 / 0.001) overflows float32 (and float64); the reference divides all
  # weights of a query by exp(max_sim / T), which leaves the argmax unchanged.
  rng = np.random.default_rng(3)
  features, labels = _clustered(rng, 80, 4, 8, noise=1.0)
  split = (features[:60], labels[:60], features[60:], labels[60:])
  got = retrieval.knn_accuracy(*split, k=5, temperature=0.001)
  assert got == _np_knn(*split, 5, 0.001)
  assert 0.3 < got < 1.0


def test_knn_ties_lower_train_index_and_lowest_class():
  train = np.array([[0, 1], [0, 1], [1, 0]], np.float32)
  query = np.array([[0, 1]], np.float32)
  # k=1: rows 0 and 1 tie at similarity 1; lax.top_k takes the lower index.
  assert retrieval.knn_accuracy(train, [4, 2, 9], query, [4], k=1) == 1.0
  assert retrieval.knn_accuracy(train, [2, 4, 9], query, [4], k=1) == 0.0
  # k=2: classes 2 and 4 get equal votes; the lower class (2) wins.
  assert retrieval.knn_accuracy(train, [4, 2, 9], query, [2], k=2) == 1.0
  assert retrieval.knn_accuracy(train, [2, 4, 9], query, [2], k=2) == 1.0


def test_knn_input_errors():
  x = np.eye(3, dtype=np.float32)
  with pytest.raises(ValueError, match="k must be"):
    retrieval.knn_accuracy(x, [0, 1, 2], x, [0, 1, 2], k=4)
  with pytest.raises(ValueError, match="num_classes|\\[0, 2\\)"):
    retrieval.knn_accuracy(x, [0, 1, 2], x, [0, 1, 2], k=1, num_classes=2)
  with pytest.raises(ValueError, match="dims"):
    retrieval.knn_accuracy(x, [0, 1, 2], x[:, :2], [0, 1, 2], k=1)


# ----------------------------------------------------------------------------
# nearest_centroid_outliers
# ----------------------------------------------------------------------------


def test_nearest_centroid_hand_case():
  # Class "a" at 0, 10, -10 deg plus one stray "a" at 70 deg; class "b" at 80,
  # 90, 100 deg. Centroid a: mean of unit vectors at 0, 10, -10, 70 -> about
  # 15.8 deg; centroid b: 90 deg. The stray point is 54 deg from its own
  # centroid and 20 deg from b's: exactly one outlier, of class "a".
  features = _angles([0, 10, -10, 70, 80, 90, 100])
  labels = np.array(["a", "a", "a", "a", "b", "b", "b"])
  for normalize in (True, False):
    got = retrieval.nearest_centroid_outliers(features, labels,
                                              normalize=normalize,
                                              chunk_size=3)
    assert got == {"num_outliers": 1, "share": 1 / 7,
                   "per_class": {"a": 1, "b": 0}}
  # Move the stray point back to 5 deg: no outliers.
  features[3] = _angles([5])[0]
  got = retrieval.nearest_centroid_outliers(features, labels)
  assert got["num_outliers"] == 0 and got["share"] == 0.0


@pytest.mark.parametrize("normalize", [True, False])
def test_nearest_centroid_matches_numpy_reference(normalize):
  rng = np.random.default_rng(4)
  features, labels = _clustered(rng, 101, 7, 6, noise=1.2)
  got = retrieval.nearest_centroid_outliers(features, labels,
                                            normalize=normalize, chunk_size=16)
  expected = _np_centroid_outliers(features, labels, normalize)
  assert got["num_outliers"] == expected
  assert 0 < expected < 101
  assert sum(got["per_class"].values()) == expected
  assert set(got["per_class"]) == set(np.unique(labels).tolist())
  assert all(type(key) is int for key in got["per_class"])


def test_nearest_centroid_normalize_changes_rule():
  # Class 0 at -70, 0, 70 deg: its mean points at 0 deg but is short
  # (r = (1 + 2 cos 70) / 3 = 0.561). Class 1 at 130, 132 deg: mean at 131 deg,
  # r ~ 1. The class-0 point at 70 deg is 70 deg from its centroid and 61 deg
  # from class 1's: an outlier by cosine (normalize=True). By Euclidean
  # distance to the raw means (normalize=False), score x.c - |c|^2 / 2 is
  # 0.561 cos 70 - 0.157 = 0.035 for its own class against
  # cos 61 - 0.5 = -0.015 for class 1: not an outlier.
  features = _angles([-70, 70, 0, 130, 132])
  labels = np.array([0, 0, 0, 1, 1])
  for normalize, num_outliers in ((True, 1), (False, 0)):
    assert _np_centroid_outliers(features, labels, normalize) == num_outliers
    got = retrieval.nearest_centroid_outliers(features, labels,
                                              normalize=normalize)
    assert got["num_outliers"] == num_outliers
    assert got["per_class"] == {0: num_outliers, 1: 0}
