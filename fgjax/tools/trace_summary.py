r"""Where the time of a ``jax.profiler`` trace went, by XLA op kind: a first look without TensorBoard.

  python -m fgjax.tools.trace_summary runs/moco/profile 3    # 3 traced steps

reads the latest ``plugins/profile/*/*.trace.json.gz`` under the directory (what
``fgjax.infra.profiling`` writes with ``train.profile_steps``, or
``fgjax.tools.bench --profile_dir``) and prints the 30 op kinds with the most
time per step (``convolution``/``ynn_fusion``, ``transpose_copy_fusion``, ...),
their share of the op time, and their count per step.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys


# Trace events that are not XLA ops: the executor, Python frames, thread pools.
_NOT_OPS = ("ThunkExecutor", "SlinkyThreadPool", "$", "PjitFunction", "end: ", "train")


def op_breakdown(directory: str, num_steps: int = 1) -> list[tuple[str, float, int]]:
  """``(op kind, ms per step, count per step)`` of the latest trace in ``directory``, largest first.

  An op kind is the HLO instruction name without its ``.N`` suffix, e.g. every
  ``transpose_copy_fusion.12`` counts as ``transpose_copy_fusion``. Device (or,
  on a CPU, thunk) events only; divide by ``num_steps`` traced steps.

  Raises:
    FileNotFoundError: no trace under ``directory``.
  """
  files = sorted(glob.glob(os.path.join(directory, "plugins", "profile", "*", "*.trace.json.gz")))
  if not files:
    raise FileNotFoundError(f"no *.trace.json.gz under {directory}/plugins/profile")
  with gzip.open(files[-1]) as f:
    events = json.load(f)["traceEvents"]
  total: collections.Counter = collections.Counter()
  count: collections.Counter = collections.Counter()
  for e in events:
    name = e.get("name", "")
    if e.get("ph") != "X" or not name or name.startswith(_NOT_OPS):
      continue
    kind = re.sub(r"\.\d+$", "", name)
    total[kind] += float(e.get("dur", 0.0))
    count[kind] += 1
  return [(kind, us / 1e3 / num_steps, count[kind] // max(1, num_steps)) for kind, us in total.most_common()]


def main(argv: list[str]) -> int:
  """``python -m fgjax.tools.trace_summary DIR [STEPS]``: the op breakdown of DIR's latest trace."""
  if len(argv) not in (2, 3):
    print("usage: python -m fgjax.tools.trace_summary PROFILE_DIR [TRACED_STEPS]", file=sys.stderr)
    return 2
  try:
    rows = op_breakdown(argv[1], int(argv[2]) if len(argv) == 3 else 1)
  except FileNotFoundError as e:
    print(f"trace_summary: error: {e}", file=sys.stderr)
    return 2
  total = sum(ms for _, ms, _ in rows) or 1.0
  print(f"{'ms/step':>10} {'share':>6} {'count':>6}  op kind")
  for kind, ms, n in rows[:30]:
    print(f"{ms:10.1f} {100 * ms / total:5.1f}% {n:6d}  {kind}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
