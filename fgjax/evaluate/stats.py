"""Numbers over seeds as the tables print them: ``mean ± std``.

One formatter for every table of fgjax (``fgjax.tools.tables``, the learning
table of ``fgjax.evaluate.learning_table``), so that they agree on the sample
standard deviation, the digits and what a NaN looks like.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence


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
