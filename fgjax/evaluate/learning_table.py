"""Did it learn? Trained minus random init, per seed, over a set of runs, and their curves.

A run directory written by ``fgjax.main`` holds ``results.json`` with a
``trained`` and a ``random_init`` section (the same encoder before training, same
protocol), ``metrics.jsonl`` with the online kNN monitor, and the run's wall time
in ``results.json['run']['wall time s']`` (written by ``fgjax.train``). This
module gathers runs named ``<name>_seed<k>`` under one directory into

* a summary table: per name, the trained value (mean over seeds) and its
  difference to random init (mean +- std; smallest .. largest), and the wall time;
* a Markdown table: per name, per seed, the trained value, the random-init value
  and their difference for kNN, the 100 % linear probe and mAP (fine and super),
  with mean +- std over seeds, and the rise of the kNN curve over the last quarter
  of training (is the budget converged?);
* one PNG of every run's kNN curve, one panel per name.

``launch/learning_check.sh`` runs the CPU defaults and calls
``python -m fgjax.tools.tables learning RUNS_DIR``, which uses this module.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from typing import Any

from fgjax.evaluate import curves
from fgjax.evaluate import report
from fgjax.evaluate.stats import mean_std


_RUN = re.compile(r"^(?P<name>.+)_seed(?P<seed>\d+)$")


def find_runs(runs_dir: str) -> dict[str, dict[int, str]]:
  """``{name: {seed: workdir}}`` for the finished runs (with results.json) under ``runs_dir``."""
  out: dict[str, dict[int, str]] = {}
  for entry in sorted(os.listdir(runs_dir)):
    match = _RUN.match(entry)
    path = os.path.join(runs_dir, entry)
    if match and os.path.isfile(os.path.join(path, "results.json")):
      out.setdefault(match["name"], {})[int(match["seed"])] = path
  return out


def _metric_keys(trained: dict[str, Any]) -> list[tuple[str, str]]:
  """(label, key) of the headline metrics present in a run."""
  keys = []
  for level in ("fine", "super"):
    for metric, label in (("knn", "kNN"), ("probe100_top1", "probe 100 %"), ("map", "mAP")):
      key = report._headline_key(metric, level, trained)  # pylint: disable=protected-access
      if key is not None:
        keys.append((f"{label} {level}", key))
  return keys


def _load(seeds: dict[int, str]) -> dict[int, dict[str, Any]]:
  return {s: json.load(open(os.path.join(p, "results.json"))) for s, p in sorted(seeds.items())}


def summary(runs: dict[str, dict[int, str]]) -> str:
  """One row per name: trained mean (difference to random init: mean +- std; min .. max)."""
  rows, header = [], None
  for name, seeds in runs.items():
    results = _load(seeds)
    first = next(iter(results.values()))
    if "random_init" not in first:
      continue
    keys = _metric_keys(first["trained"])
    if header is None:
      header = ["name (seeds)", "wall time per run"] + [label for label, _ in keys]
    walls = [float(r["run"]["wall time s"]) / 60 for r in results.values()
             if "wall time s" in r.get("run", {})]
    wall = "-" if not walls else (f"{walls[0]:.1f} min" if len(walls) == 1 else
                                   f"{min(walls):.1f}-{max(walls):.1f} min")
    cells = [f"{name} ({len(results)})", wall]
    for _, key in keys:
      trained = [100 * r["trained"][key] for r in results.values()]
      diffs = [100 * (r["trained"][key] - r["random_init"][key]) for r in results.values()]
      if len(diffs) == 1:
        cells.append(f"{trained[0]:.1f} ({diffs[0]:+.1f})")
        continue
      cells.append(f"{statistics.mean(trained):.1f} ({statistics.mean(diffs):+.1f} ± "
                   f"{statistics.stdev(diffs):.1f}; {min(diffs):+.1f} .. {max(diffs):+.1f})")
    rows.append("| " + " | ".join(cells) + " |")
  if header is None:
    return ""
  return "\n".join(["Each cell: trained value, mean over seeds (difference to random init, in points: "
                    "mean ± std; smallest .. largest; one seed: the difference).", "",
                    "| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + rows) + "\n"


def table(runs: dict[str, dict[int, str]]) -> str:
  """The Markdown report of :func:`find_runs`' runs (see the module docstring)."""
  lines = []
  for name, seeds in runs.items():
    results = _load(seeds)
    first = next(iter(results.values()))
    if "random_init" not in first:
      lines += [f"### {name}", "", "(no random-init evaluation in these runs)", ""]
      continue
    keys = _metric_keys(first["trained"])
    header = ["seed"] + [label for label, _ in keys] + ["kNN tail gain fine / super", "wall time"]
    lines += [f"### {name}", "", "Each cell: trained (random init) difference, in %; "
              "tail gain: rise of the online kNN over the last quarter of training, in points.", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    diffs: dict[str, list[float]] = {label: [] for label, _ in keys}
    trained_values: dict[str, list[float]] = {label: [] for label, _ in keys}
    for seed, r in results.items():
      cells = [str(seed)]
      for label, key in keys:
        t, b = 100 * r["trained"][key], 100 * r["random_init"][key]
        diffs[label].append(t - b)
        trained_values[label].append(t)
        cells.append(f"{t:.2f} ({b:.2f}) {t - b:+.2f}")
      curve = r.get("curve") or {}
      gains = [curve.get(f"knn_tail_gain_{level}") for level in ("fine", "super")]
      cells.append(" / ".join("-" if g is None else f"{100 * g:+.2f}" for g in gains))
      wall = r.get("run", {}).get("wall time s")
      cells.append("-" if wall is None else f"{float(wall) / 60:.1f} min")
      lines.append("| " + " | ".join(cells) + " |")
    lines.append("| mean ± std | " + " | ".join(
        f"{mean_std(trained_values[label])}, difference {mean_std(diffs[label])}" for label, _ in keys)
        + " | | |")
    lines.append("")
  return "\n".join(lines) + "\n"


def draw_curves(runs: dict[str, dict[int, str]], path: str) -> None:
  """Every run's online kNN curve (fine solid, super dashed), one panel per name."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = list(runs)
  cols = min(3, len(names))
  rows = (len(names) + cols - 1) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), dpi=100, squeeze=False)
  for ax, name in zip(axes.flat, names):
    for seed, workdir in sorted(runs[name].items()):
      curve = curves.read_monitor(workdir)
      if len(curve["steps"]) == 0:
        continue
      colour = f"C{seed % 10}"
      for level, style in (("fine", "-"), ("super", "--")):
        if level in curve:
          ax.plot(curve["steps"], 100 * curve[level], style, color=colour, marker="o", markersize=2,
                  label=f"seed {seed}, {level}")
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("training step (0 = the start: random init or init_from)")
    ax.set_ylabel("online kNN top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
