"""results.json and results.md in the workdir."""

from __future__ import annotations

import json
import math
import os
from typing import Any
from typing import Sequence


_LEGEND = ("Fractions in %. probe{P}: linear probe on P % of the train labels; knn{k}: weighted "
           "kNN; retrieval (rank, recall, map): leave-one-out on the test split, cosine "
           "similarity, ties to the lower index; outliers: nearest-centroid, test split.")


# Metrics in [0, 1] that are not fractions (shown as they are, not in %).
NOT_PERCENT = ("feature_spread",)


def _fmt(value: Any, metric: str = "") -> str:
  if isinstance(value, float):
    if math.isnan(value):
      return "n/a"
    return f"{100 * value:.2f}" if 0.0 <= value <= 1.0 and metric not in NOT_PERCENT else f"{value:.4g}"
  return str(value)


def _table(sections: dict[str, dict[str, Any]]) -> list[str]:
  """A Markdown table: one row per metric, one column per section."""
  names = list(sections)
  metrics = sorted({m for s in names for m in sections[s]})
  lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  for m in metrics:
    lines.append(f"| {m} | " + " | ".join(_fmt(sections[s].get(m, ""), m) for s in names) + " |")
  return lines


# The bar of "learned" (fractions): trained minus random init on kNN and the linear probe.
LEARNED_BAR = {"fine": 0.05, "super": 0.10}
_HEADLINE = (("knn", "kNN top-1"), ("probe100_top1", "linear probe, 100 % labels"), ("map", "mAP"))


def _headline_key(metric: str, level: str, trained: dict[str, Any]) -> str | None:
  if metric == "knn":
    ks = sorted(int(k[3:].split("_")[0]) for k in trained if k.startswith("knn") and k.endswith(f"_top1_{level}"))
    return f"knn{ks[0]}_top1_{level}" if ks else None
  key = f"{metric}_{level}"
  return key if key in trained else None


def initial_name(init_from: str) -> str:
  """What results.md calls the encoder a run started from (``model.init_from``)."""
  if init_from in ("", "none"):
    return "random init"
  return "source encoder" if init_from == "source" else "initial (init_from)"


def headline(trained: dict[str, Any], random_init: dict[str, Any], initial: str = "random init",
             start: dict[str, Any] | None = None) -> list[str]:
  """The short table that opens results.md and a verdict.

  Columns: the encoder at random init, the encoder the run started from when it
  is not the random init (``start``, named ``initial``: the source encoder, the
  paper's "ImageNet ResNet-50" row), trained, and the difference of trained
  from the start ("did training on top of it help?") -- and from random init
  where there is a start.

  The verdict compares trained with the start (the random init when there is
  none): "learned" when it is above by at least ``LEARNED_BAR`` on both kNN and
  the linear probe at every label level the data has, "not learned" when above
  on none of them, "partly learned" otherwise. A measure the start already has
  within the bar of 100 % (the source encoder's super-classes) has no room to
  rise by it: there it counts as met when it did not fall by more than the bar.
  """
  reference = start if start is not None else random_init
  rows, gains = [], []
  for level in ("fine", "super"):
    for metric, name in _HEADLINE:
      key = _headline_key(metric, level, trained)
      if key is None or key not in reference or (start is not None and key not in random_init):
        continue
      t, r = float(trained[key]), float(reference[key])
      if start is None:
        rows.append(f"| {name}, {level} | {100 * r:.2f} | {100 * t:.2f} | {100 * (t - r):+.2f} |")
      else:
        z = float(random_init[key])
        rows.append(f"| {name}, {level} | {100 * z:.2f} | {100 * r:.2f} | {100 * t:.2f} | {100 * (t - r):+.2f} | "
                    f"{100 * (t - z):+.2f} |")
      if metric != "map":
        gains.append((level, name, t - r, r))
  if not rows:
    return []
  met = [g >= LEARNED_BAR[level] or (r > 1 - LEARNED_BAR[level] and g > -LEARNED_BAR[level])
         for level, _, g, r in gains]
  verdict = "learned" if all(met) else ("not learned" if not any(g > 0 for _, _, g, _ in gains)
                                         else "partly learned")
  bar = ", ".join(f"{100 * v:g} points on {k}" for k, v in LEARNED_BAR.items())
  detail = "; ".join(f"{level} {name.split(',')[0]} {100 * g:+.2f}" for level, name, g, _ in gains)
  if start is None:
    header = [f"| protocol | {initial} | trained | difference |", "|---|---|---|---|"]
    against = ""
  else:
    header = [f"| protocol | random init | {initial} | trained | trained - {initial} | trained - random init |",
              "|---|---|---|---|---|---|"]
    against = f" against the {initial}"
  return [*header, *rows, "",
          f"**Verdict{against}: {verdict}** ({detail}; the bar: kNN and probe up by at least {bar} classes"
          + ("; a start within the bar of 100 % must not fall by more" if start is not None else "") + ").", ""]


def write_results(workdir: str, results: dict[str, Any], *, title: str,
                  curve: dict[str, float] | None = None, initial: str = "random init") -> None:
  """Writes ``results.json`` (machine-readable) and ``results.md`` (a table per section).

  ``results`` maps a section name (e.g. ``'trained'``, ``'random_init'``) to a
  flat dict of metric -> value, plus an optional ``'run'`` section of run facts.
  Fractions in [0, 1] are shown in percent in the Markdown table. With both a
  ``'trained'`` and a ``'random_init'`` section, results.md opens with
  :func:`headline`; ``curve`` (``curves.write_curve``'s summary) adds the
  learning curve's line.
  """
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  sections = {k: v for k, v in results.items() if k not in ("run", "curve") and isinstance(v, dict)}
  lines = [f"# {title}", ""]
  if "trained" in sections and "random_init" in sections:
    lines += headline(sections["trained"], sections["random_init"], initial, start=sections.get("initial"))
  if curve:
    gains = ", ".join(f"{k.rsplit('_', 1)[-1]} {100 * v:+.2f}" for k, v in curve.items())
    lines += [f"Learning curve: `knn_curve.png` (online kNN monitor, step 0 = the {initial}). "
              f"Rise over the last quarter of the logged steps, in points: {gains}.", ""]
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


PICTURES_SECTION = "## Pictures"


def replace_section(workdir: str, section: str, body: Sequence[str]) -> None:
  """Replaces the ``section`` ("## Title") of ``results.md`` with ``body`` lines (appended if missing)."""
  md = os.path.join(workdir, "results.md")
  text = open(md).read() if os.path.exists(md) else ""
  if section in text:
    head, _, tail = text.partition(section)
    nxt = tail.find("\n## ")
    text = head.rstrip("\n") + ("\n" + tail[nxt:] if nxt >= 0 else "")
  with open(md, "w") as f:
    f.write(text.rstrip("\n") + "\n" + "\n".join(["", section, "", *body]))


def link_pictures(workdir: str, paths: dict[str, str]) -> None:
  """Replaces the "Pictures" section of ``results.md`` with links to ``paths`` (created if missing)."""
  lines = []
  for name, path in paths.items():
    rel = os.path.relpath(path, workdir)
    lines += [f"### {name}", "", f"![{name}]({rel})", ""]
  replace_section(workdir, PICTURES_SECTION, lines)
