"""Every evaluation protocol of the four papers, on frozen features.

``evaluate_features`` takes the pooled features of the train and test splits
(extracted once) and the labels at each level, and returns one flat dict of
metric -> value for results.json / results.md:

===========================  ================================================
key                          protocol
===========================  ================================================
``probe{P}_top1_{level}``    linear probe trained on P % of the train labels
``probe{P}_top5_{level}``    (stratified, ``eval.probe_seed``), top-1/top-5 on
                             test (top-5 only with more than 5 classes)
``knn{k}_top1_{level}``      weighted kNN (cosine, exp(s/T) votes), train -> test
``rank{k}_{level}``          leave-one-out retrieval on test: CMC rank-k,
``recall@{k}_{level}``       Recall@k, mAP; ``retrieval_skipped_{level}`` counts
``map_{level}``              queries whose class has no other test member
``outliers_{level}``         nearest-centroid outliers on test (count, share)
``outlier_share_{level}``
``head_top{1,5}_super``      the model's own super-class head (B methods)
===========================  ================================================

``level`` is ``fine`` and, where the data has them, ``super``.
"""

from __future__ import annotations

from typing import Any
from typing import Mapping

import ml_collections
import numpy as np

from fgjax.errors import EvaluationError  # (re-exported: raised here)
from fgjax.evaluate import linear_probe
from fgjax.evaluate import retrieval


LARGE_TEST_SET = 10_000
SMALL_SET_RECALL_KS = (1, 2, 4, 8)  # CUB-200, Cars196 (Song et al. 2016)
LARGE_SET_RECALL_KS = (1, 10, 100, 1000)  # Stanford Online Products


def recall_ks_for(e: ml_collections.ConfigDict, num_test: int) -> tuple[int, ...]:
  """``eval.recall_ks``, or by test-set size when it is empty (the usual choice)."""
  if e.recall_ks:
    return tuple(int(k) for k in e.recall_ks)
  return LARGE_SET_RECALL_KS if num_test >= LARGE_TEST_SET else SMALL_SET_RECALL_KS


def probe_hparams(e: ml_collections.ConfigDict) -> linear_probe.ProbeHParams:
  return linear_probe.ProbeHParams(epochs=e.probe_epochs, batch_size=e.probe_batch_size,
                                   learning_rate=e.probe_learning_rate,
                                   weight_decay=e.probe_weight_decay, seed=e.probe_seed)


def fraction_name(fraction: float) -> str:
  """0.5 -> '50', 0.025 -> '2.5': the P of ``probe{P}_...``."""
  return f"{100 * float(fraction):g}"


def resolve_outlier_level(level: str, labels: Mapping[str, Any]) -> str:
  """``eval.outlier_level``: 'auto' -> 'super' where the data has it, else 'fine'."""
  if level == "auto":
    return "super" if "super" in labels else "fine"
  return level


def _check_split(name: str, features: np.ndarray, labels: Mapping[str, np.ndarray]) -> None:
  if features.ndim != 2 or features.shape[0] == 0:
    raise EvaluationError(f"the {name} split is empty (features of shape {features.shape})")
  if not np.all(np.isfinite(features)):
    bad = int((~np.isfinite(features)).any(axis=1).sum())
    raise EvaluationError(f"{bad} of {features.shape[0]} {name} features are NaN or inf: the encoder diverged")
  for level, y in labels.items():
    if np.shape(y) != (features.shape[0],):
      raise EvaluationError(f"{name} {level} labels have shape {np.shape(y)}, features {features.shape}")


def feature_spread(features) -> float:
  """SimSiam's collapse check on frozen features: the std over examples of the l2-normalised features,
  averaged over the ``d`` dimensions, times ``sqrt(d)``.

  Features spread like a zero-mean isotropic Gaussian give about 1; features collapsed to one direction
  give 0. Pooled ReLU features are non-negative (their mean is not 0), so a healthy encoder's value
  lies well below 1: compare runs and their random init with each other, not with 1.

  Args:
    features: ``[N, d]``, N >= 2.
  """
  f = np.asarray(features, np.float64)
  z = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  return float(np.mean(np.std(z, axis=0)) * np.sqrt(f.shape[1]))


def evaluate_features(e: ml_collections.ConfigDict, train_features, train_labels: Mapping[str, Any],
                      test_features, test_labels: Mapping[str, Any], *,
                      super_logits=None, monitor_only: bool = False) -> dict[str, float | int]:
  """All protocols of ``e`` (the ``eval`` config) on frozen features.

  Args:
    e: the ``eval`` ConfigDict (``fgjax.config.blocks.eval_config``).
    train_features: [N, d] pooled features of the train split.
    train_labels: level ('fine', 'super') -> [N] labels.
    test_features: [M, d].
    test_labels: level -> [M] labels (the same levels as train).
    super_logits: optional [M, K_super] scores of the model's own super-class
      head on the test split (seed B methods).
    monitor_only: only kNN at the first ``eval.knn_ks`` (the online monitor).

  Returns:
    Flat dict of metric -> float (fractions in [0, 1]) or int (counts).

  Raises:
    EvaluationError: an empty split, NaN features, mismatched labels.
  """
  train_features = np.asarray(train_features, np.float32)
  test_features = np.asarray(test_features, np.float32)
  _check_split("train", train_features, train_labels)
  _check_split("test", test_features, test_labels)
  levels = [level for level in ("fine", "super") if level in test_labels]
  outlier_level = resolve_outlier_level(e.outlier_level, test_labels)
  # Impossible requests fail before any work, not after the probes.
  if not monitor_only and outlier_level and outlier_level not in test_labels:
    raise EvaluationError(f"eval.outlier_level={e.outlier_level!r} but the data has only the "
                          f"label levels {sorted(test_labels)}")
  if not monitor_only and super_logits is not None and "super" not in test_labels:
    raise EvaluationError("the model has a super-class head but the data has no super-class labels")
  out: dict[str, float | int] = {}
  knn_ks = tuple(e.knn_ks)[:1] if monitor_only else tuple(e.knn_ks)
  for level in levels:
    for k in knn_ks:
      if not 1 <= int(k) <= train_features.shape[0]:
        raise EvaluationError(f"eval.knn_ks: k={k} needs 1 <= k <= {train_features.shape[0]} "
                              "(the number of train samples)")
      out[f"knn{k}_top1_{level}"] = retrieval.knn_accuracy(
          train_features, train_labels[level], test_features, test_labels[level], k=int(k),
          temperature=e.knn_temperature, chunk_size=e.chunk_size)
  if monitor_only:
    return out

  hp = probe_hparams(e)
  for level in levels:
    for fraction in e.probe_fractions:
      probe = linear_probe.linear_probe(train_features, train_labels[level], test_features,
                                        test_labels[level], fraction=fraction, hp=hp,
                                        subset_seed=e.probe_seed)
      name = fraction_name(fraction)
      for key in ("top1", "top5"):
        if key in probe:
          out[f"probe{name}_{key}_{level}"] = probe[key]

  ks = recall_ks_for(e, test_features.shape[0])
  for level in levels:
    r = retrieval.retrieval_metrics(test_features, test_labels[level], ks=ks, rank_ks=tuple(e.rank_ks),
                                    chunk_size=e.chunk_size)
    for k in e.rank_ks:
      out[f"rank{k}_{level}"] = r[f"rank{k}"]
    for k in ks:
      out[f"recall@{k}_{level}"] = r[f"recall@{k}"]
    out[f"map_{level}"] = r["map"]
    out[f"retrieval_skipped_{level}"] = r["num_skipped_queries"]

  if outlier_level:
    o = retrieval.nearest_centroid_outliers(test_features, test_labels[outlier_level],
                                            chunk_size=e.chunk_size)
    out[f"outliers_{outlier_level}"] = o["num_outliers"]
    out[f"outlier_share_{outlier_level}"] = o["share"]

  out["feature_spread"] = feature_spread(test_features)

  if super_logits is not None:
    num_classes = np.shape(super_logits)[1]
    ks_head = (1, 5) if num_classes > 5 else (1,)
    head = linear_probe.topk_accuracy(super_logits, test_labels["super"], ks_head)
    for key, value in head.items():
      out[f"head_{key}_super"] = value
  return out
