"""results.json and results.md in the workdir."""

from __future__ import annotations

import json
import math
import os
from typing import Any

_LEGEND = ("Fractions in %. probe{P}: linear probe on P % of the train labels; knn{k}: weighted "
           "kNN; retrieval (rank, recall, map): leave-one-out on the test split, cosine "
           "similarity, ties to the lower index; outliers: nearest-centroid, test split.")


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    if math.isnan(value):
      return "n/a"
    return f"{100 * value:.2f}" if 0.0 <= value <= 1.0 else f"{value:.4g}"
  return str(value)


def _table(sections: dict[str, dict[str, Any]]) -> list[str]:
  """A Markdown table: one row per metric, one column per section."""
  names = list(sections)
  metrics = sorted({m for s in names for m in sections[s]})
  lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  for m in metrics:
    lines.append(f"| {m} | " + " | ".join(_fmt(sections[s].get(m, "")) for s in names) + " |")
  return lines


def write_results(workdir: str, results: dict[str, Any], *, title: str) -> None:
  """Writes ``results.json`` (machine-readable) and ``results.md`` (a table per section).

  ``results`` maps a section name (e.g. ``'trained'``, ``'random_init'``) to a
  flat dict of metric -> value, plus an optional ``'run'`` section of run facts.
  Fractions in [0, 1] are shown in percent in the Markdown table.
  """
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  sections = {k: v for k, v in results.items() if k != "run" and isinstance(v, dict)}
  lines = [f"# {title}", ""]
  if "run" in results:
    for key, value in results["run"].items():
      lines.append(f"- **{key}**: {value}")
    lines.append("")
  lines += [_LEGEND, ""] + _table(sections)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def append_evaluation(workdir: str, key: str, sections: dict[str, dict[str, Any]], *,
                      run: dict[str, Any]) -> None:
  """Adds an evaluation to the run's results without losing earlier ones.

  ``results.json`` gains ``evaluations[key] = {'run': run, **sections}`` (an
  earlier evaluation under the same key is replaced); ``results.md`` gains a
  section with the table at its end.
  """
  path = os.path.join(workdir, "results.json")
  results: dict[str, Any] = {}
  if os.path.exists(path):
    with open(path) as f:
      results = json.load(f)
  results.setdefault("evaluations", {})[key] = {"run": run, **sections}
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  os.replace(tmp, path)  # a crash mid-write never truncates earlier results
  lines = ["", f"## Evaluation: {key}", ""]
  lines += [f"- **{k}**: {v}" for k, v in run.items()] + ["", _LEGEND, ""]
  lines += _table(sections)
  with open(os.path.join(workdir, "results.md"), "a") as f:
    f.write("\n".join(lines) + "\n")
