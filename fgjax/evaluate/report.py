"""results.json and results.md in the workdir."""

from __future__ import annotations

import json
import os
from typing import Any


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f"{100 * value:.2f}" if 0.0 <= value <= 1.0 else f"{value:.4g}"
  return str(value)


def write_results(workdir: str, results: dict[str, Any], *, title: str) -> None:
  """Writes ``results.json`` (machine-readable) and ``results.md`` (a table per section).

  ``results`` maps a section name (e.g. ``'trained'``, ``'random_init'``) to a
  flat dict of metric -> value, plus an optional ``'run'`` section of run facts.
  Fractions in [0, 1] are shown in percent in the Markdown table.
  """
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  sections = [k for k in results if k != "run" and isinstance(results[k], dict)]
  metrics = sorted({m for s in sections for m in results[s]})
  lines = [f"# {title}", ""]
  if "run" in results:
    for key, value in results["run"].items():
      lines.append(f"- **{key}**: {value}")
    lines.append("")
  lines.append("Fractions in %. Retrieval: leave-one-out on the test split, cosine similarity.")
  lines.append("")
  lines.append("| metric | " + " | ".join(sections) + " |")
  lines.append("|---|" + "---|" * len(sections))
  for m in metrics:
    lines.append(f"| {m} | " + " | ".join(_fmt(results[s].get(m, "")) for s in sections) + " |")
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
