"""Timing helpers of the benchmarks (``fgjax.tools.bench``, ``fgjax.tools.bench_parts``)."""

from __future__ import annotations

import time
from typing import Any


def best_seconds(fn, *, repeats: int, min_seconds: float = 0.2) -> float:
  """Seconds of one ``fn()`` call, the best of ``repeats``; fast calls are timed back to back.

  The best, not the median: other load on the machine only ever slows a call
  down, so the fastest repeat is the closest to what the device can do.

  ``fn`` must return something to wait for. A call that takes less than
  ``min_seconds`` is repeated back to back before waiting, so launch latency
  (tens of microseconds on a GPU) does not count.
  """
  import jax

  jax.block_until_ready(fn())
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  single = time.perf_counter() - t0
  inner = max(1, min(1000, int(min_seconds / max(single, 1e-9))))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = None
    for _ in range(inner):
      out = fn()
    jax.block_until_ready(out)
    times.append((time.perf_counter() - t0) / inner)
  return min(times)


def synthetic_batch(cfg) -> dict[str, Any]:
  """A fixed random ``{'image': uint8 [B, S, S, 3]}`` batch of the training stream's shape."""
  import numpy as np

  side = cfg.data.base_size or cfg.data.image_size
  rng = np.random.default_rng(0)
  return {"image": rng.integers(0, 256, (cfg.data.global_batch_size, side, side, 3), dtype=np.uint8)}
