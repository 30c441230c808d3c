"""The learning curve of a run: the online kNN monitor against the step, and where it flattens.

The training loop logs the kNN top-1 accuracy of the current encoder every
``eval.knn_every`` steps (``metrics.jsonl``: ``knn{k}_top1_fine``,
``knn{k}_top1_super``). This module reads those points back, prepends the
values of the encoder the run started from as step 0 (``initial_eval.json``
where it started from ``model.init_from``, else ``random_init_eval.json``), draws them
(``knn_curve.png`` in the workdir) and measures how flat the end of the curve is:
``tail_gain`` is the rise over the last quarter of the logged steps. A run whose
tail still gains several points stopped while it was learning; its numbers
measure the budget, not the method.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np


CURVE_FILE = "knn_curve.png"
LEVELS = ("fine", "super")


def read_monitor(workdir: str) -> dict[str, Any]:
  """The kNN monitor points of a run.

  Returns:
    ``{'metric': 'knn{k}_top1', 'steps': int [P], 'fine': float [P], 'super':
    float [P] (absent without super-classes)}``, fractions in [0, 1], sorted by
    step, step 0 being the encoder the run started from when it was evaluated:
    ``model.init_from``'s (``initial_eval.json``, e.g. the source encoder), else
    the random init (``random_init_eval.json``). A step logged twice (a resumed
    run) keeps its last value. Empty ``steps`` when the run has no monitor points.
  """
  points: dict[int, dict[str, float]] = {}
  for name in ("initial_eval.json", "random_init_eval.json"):  # the start of training, where evaluated
    baseline_path = os.path.join(workdir, name)
    if os.path.exists(baseline_path):
      with open(baseline_path) as f:
        points[0] = {k: float(v) for k, v in json.load(f).items() if isinstance(v, (int, float))}
      start = "start (init_from)" if name == "initial_eval.json" else "random init"
      break
  else:
    start = "random init"
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        record = json.loads(line)
        if any(k.startswith("knn") for k in record):
          points[int(record["step"])] = record
  metric = None
  for values in points.values():
    names = sorted(k[:-len("_fine")] for k in values if k.startswith("knn") and k.endswith("_top1_fine"))
    if names:
      metric = names[0]
      break
  out: dict[str, Any] = {"metric": metric or "knn", "steps": np.zeros(0, np.int64), "start": start}
  if metric is None:
    return out
  steps = sorted(s for s, v in points.items() if f"{metric}_fine" in v)
  out["steps"] = np.asarray(steps, np.int64)
  for level in LEVELS:
    key = f"{metric}_{level}"
    if all(key in points[s] for s in steps):
      out[level] = np.asarray([points[s][key] for s in steps], np.float64)
  return out


def tail_gain(steps: np.ndarray, values: np.ndarray, fraction: float = 0.25) -> float:
  """The rise of ``values`` over the last ``fraction`` of the logged steps (same units).

  ``values[-1]`` minus the value at the last point at or before
  ``steps[-1] - fraction * (steps[-1] - steps[0])``; NaN with fewer than 3 points.
  """
  if len(steps) < 3:
    return float("nan")
  start = steps[-1] - fraction * (steps[-1] - steps[0])
  before = np.nonzero(steps <= start)[0]
  return float(values[-1] - values[before[-1]])


def summary(curve: dict[str, Any]) -> dict[str, float]:
  """``{'knn_tail_gain_fine': ..., 'knn_tail_gain_super': ...}`` (fractions) of :func:`read_monitor`."""
  return {f"knn_tail_gain_{level}": tail_gain(curve["steps"], curve[level])
          for level in LEVELS if level in curve}


def draw(curve: dict[str, Any], path: str, *, title: str) -> None:
  """Draws the kNN curve(s) to a PNG (matplotlib, Agg backend)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
  for level, colour in zip(LEVELS, ("tab:blue", "tab:orange")):
    if level not in curve:
      continue
    ax.plot(curve["steps"], 100 * curve[level], "o-", color=colour, markersize=3, label=f"{level} classes")
    if curve["steps"][0] == 0:
      ax.axhline(100 * curve[level][0], color=colour, linestyle=":", linewidth=1,
                 label=f"{level}, {curve.get('start', 'random init')}")
  ax.set_xlabel("training step")
  ax.set_ylabel(f"{curve['metric']} accuracy (%)")
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def write_curve(workdir: str, *, title: str) -> dict[str, float]:
  """Reads the monitor, draws ``knn_curve.png`` (with >= 2 points) and returns :func:`summary`."""
  curve = read_monitor(workdir)
  if len(curve["steps"]) < 2:
    return {}
  draw(curve, os.path.join(workdir, CURVE_FILE), title=title)
  return summary(curve)
