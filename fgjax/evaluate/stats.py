"""Numbers over seeds as the tables print them: ``mean ± std``.

One formatter for every table of fgjax (``fgjax.tools.tables``, the learning
table of ``fgjax.evaluate.learning_table``), so that they agree on the sample
standard deviation, the digits and what a NaN looks like.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats


def mean_std(values: Sequence[float], digits: int = 2, scale: float = 1, empty: str = "-") -> str:
  """``'m.mm ± s.ss'`` of ``scale * values`` (sample std); one value: ``'m.mm'``; none: ``empty``."""
  values = [scale * v for v in values]
  if not values:
    return empty
  nan = any(math.isnan(v) for v in values)  # statistics.stdev raises on NaN (Python 3.11): show it instead
  text = f"{math.nan if nan else statistics.mean(values):.{digits}f}"
  if len(values) > 1:
    text += f" ± {math.nan if nan else statistics.stdev(values):.{digits}f}"
  return text


# ----------------------------------------------------------------------------
# Paired seeds: a method and its base trained from the same initialisation on the same data order.


def paired_t_pvalue(differences: Sequence[float]) -> float | None:
  """Two-sided p-value of the paired t-test (a one-sample t-test of the per-seed differences against 0).

  None with fewer than 2 differences; 1.0 when every difference is 0; 0.0 when they are all equal and
  not 0 (no spread: the t statistic is infinite).
  """
  if len(differences) < 2:
    return None
  if all(d == differences[0] for d in differences):
    return 1.0 if differences[0] == 0 else 0.0
  return float(scipy_stats.ttest_1samp(list(differences), 0.0).pvalue)


def sign_test_pvalue(differences: Sequence[float]) -> float | None:
  """Two-sided exact sign test: how likely this many seeds on one side are if either side were a coin flip.

  Ties (a difference of exactly 0) are left out. None when nothing is left. With n seeds the smallest
  p-value is 2 / 2**n: 5 seeds cannot go below 0.0625, 6 reach 0.031.
  """
  above = sum(d > 0 for d in differences)
  n = above + sum(d < 0 for d in differences)
  return float(scipy_stats.binomtest(above, n, 0.5).pvalue) if n else None


def bootstrap_interval(differences: Sequence[float], *, confidence: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float] | None:
  """Percentile bootstrap interval of the mean difference (seeded: the same numbers give the same interval).

  With few seeds it is narrower than it should be (the resamples cannot leave the observed values);
  read it beside the tests. None without differences.
  """
  if not differences:
    return None
  values = np.asarray(differences, np.float64)
  draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
  means = values[draws].mean(axis=1)
  tail = 100 * (1 - confidence) / 2
  low, high = np.percentile(means, [tail, 100 - tail])
  return float(low), float(high)
