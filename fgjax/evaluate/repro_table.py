"""A reproduction table: methods over seeds, beside the paper's figures, from the runs' results.json.

A table's runs live under one directory, ``RUNS_DIR/<name>_seed<s>/results.json``
for seeds ``0 .. N-1`` (written by ``fgjax.main``). :func:`gather` reads the ones
that exist and names the ones that do not; :func:`render` writes, in Markdown:

1. the summary: one row per method, each cell ``mean ± std`` over its seeds, the
   paper's figures in the last column, and a *random init* row (the same encoder
   before training, from the runs that measured it);
2. the comparison with the baseline row: per method and headline column, the
   difference of means and whether it lies *outside the seed spread* (every seed
   of the method above, or below, every seed of the baseline) or *within* it;
3. every seed's value of every cell;
4. each run's wall time, and the missing runs.

A row with fewer seeds than asked says so (``(2 of 3 seeds)``); a row without any
run shows ``missing`` in every cell; a missing run is listed by path. Nothing is
dropped silently. ``fgjax.tools.tables`` holds the papers' tables built on this.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from typing import Any
from typing import Callable
from typing import Optional
from typing import Sequence

from fgjax.evaluate import stats
from fgjax.evaluate.stats import mean_std

Results = dict[str, Any]  # one run's results.json


@dataclasses.dataclass
class Runs:
  """The finished runs of a table and the missing ones.

  Attributes:
    runs_dir: the table's directory.
    seeds: the number of seeds asked for (0 .. seeds - 1).
    results: ``{name: {seed: results.json}}`` of the finished runs.
    missing: the run directories without results.json, in row then seed order.
  """
  runs_dir: str
  seeds: int
  results: dict[str, dict[int, Results]]
  missing: list[str]


@dataclasses.dataclass(frozen=True)
class Column:
  """One measured quantity of a run.

  Attributes:
    title: the column header.
    key: a key of the run's ``trained`` (or ``random_init``) section; or
    value: ``value(section, seed, runs)`` for a derived quantity (``None`` when it
      does not apply), where ``section`` is the run's ``trained`` or ``random_init``.
    scale: multiplies the stored value (100: fractions shown in %).
    digits: decimals shown.
    random_init: whether the column has a meaning at random init.
    compare: whether the comparison with the baseline reports it.
  """
  title: str
  key: Optional[str] = None
  value: Optional[Callable[[dict[str, Any], int, Runs], Optional[float]]] = None
  scale: float = 100.0
  digits: int = 2
  random_init: bool = True
  compare: bool = True

  def of(self, section: Optional[dict[str, Any]], seed: int, runs: Runs) -> Optional[float]:
    """The scaled value of this column in one run's section, or ``None`` when it has none."""
    if section is None:
      return None
    raw = self.value(section, seed, runs) if self.value else section.get(self.key)
    return None if raw is None else self.scale * float(raw)


@dataclasses.dataclass(frozen=True)
class Row:
  """One method of a table: its runs ``<name>_seed<s>``, its title and the paper's figures."""
  name: str
  title: str
  paper: str = "-"


def _read(path: str) -> Results:
  with open(path) as f:
    return json.load(f)


def gather(runs_dir: str, names: Sequence[str], seeds: int) -> Runs:
  """The results.json of ``RUNS_DIR/<name>_seed<s>`` for every name and seed that has one."""
  results: dict[str, dict[int, Results]] = {}
  missing = []
  for name in names:
    for seed in range(seeds):
      workdir = os.path.join(runs_dir, f"{name}_seed{seed}")
      path = os.path.join(workdir, "results.json")
      if os.path.isfile(path):
        results.setdefault(name, {})[seed] = _read(path)
      else:
        missing.append(workdir)
  return Runs(runs_dir, seeds, results, missing)


def values(runs: Runs, name: str, column: Column, section: str = "trained") -> dict[int, float]:
  """``{seed: value}`` of one row and column (seeds without the value left out)."""
  out = {}
  for seed, result in sorted(runs.results.get(name, {}).items()):
    value = column.of(result.get(section), seed, runs)
    if value is not None:
      out[seed] = value
  return out


def _cell(vals: dict[int, float], column: Column) -> str:
  return mean_std(list(vals.values()), digits=column.digits)


def _row_title(row: Row, runs: Runs) -> str:
  have = len(runs.results.get(row.name, {}))
  return row.title if have in (0, runs.seeds) else f"{row.title} ({have} of {runs.seeds} seeds)"


def summary(runs: Runs, rows: Sequence[Row], columns: Sequence[Column], *, paper_title: str = "paper",
            random_init_from: Sequence[str] = ()) -> list[str]:
  """Mean ± std per row and column, the paper's figures last; the untrained encoders' rows first.

  The random-init row pools the ``random_init`` sections of the runs of
  ``random_init_from`` (the baseline's names: the same encoder before training);
  where those runs started from ``model.init_from`` (the source encoder), a
  second row pools their ``initial`` sections (that encoder untouched).
  """
  lines = ["| method | " + " | ".join(c.title for c in columns) + f" | {paper_title} |",
           "|---|" + "---|" * (len(columns) + 1)]
  for section, title in (("random_init", "random init"), ("initial", "source encoder, untouched")):
    init = [r for name in random_init_from for r in runs.results.get(name, {}).items() if section in r[1]]
    if not init:
      continue
    cells = []
    for c in columns:
      vals = [c.of(result[section], seed, runs) for seed, result in init] if c.random_init else []
      cells.append(mean_std([v for v in vals if v is not None], digits=c.digits))
    lines.append(f"| {title} ({len(init)} run{'s' * (len(init) > 1)}) | " + " | ".join(cells) + " | - |")
  for row in rows:
    if row.name not in runs.results:
      cells = ["missing"] * len(columns)
    else:
      cells = [_cell(values(runs, row.name, c), c) for c in columns]
    lines.append(f"| {_row_title(row, runs)} | " + " | ".join(cells) + f" | {row.paper} |")
  return lines


def spread_verdict(method: Sequence[float], baseline: Sequence[float]) -> str:
  """``'higher'`` / ``'lower'`` when every method seed lies above / below every baseline seed
  (and both have at least two seeds), ``'within the spread'`` otherwise; ``'one seed'`` when
  either side has only one (no spread to judge by)."""
  if len(method) < 2 or len(baseline) < 2:
    return "one seed" if method and baseline else "n/a"
  if min(method) > max(baseline):
    return "higher"
  if max(method) < min(baseline):
    return "lower"
  return "within the spread"


def comparison(runs: Runs, rows: Sequence[Row], columns: Sequence[Column], baseline: Row) -> list[str]:
  """Per row and compared column: difference of means to ``baseline`` and its :func:`spread_verdict`."""
  cols = [c for c in columns if c.compare]
  lines = [f"| vs {baseline.title} | " + " | ".join(c.title for c in cols) + " |", "|---|" + "---|" * len(cols)]
  base = {c.title: values(runs, baseline.name, c) for c in cols}
  for row in rows:
    if row.name == baseline.name:
      continue
    cells = []
    for c in cols:
      mine, theirs = list(values(runs, row.name, c).values()), list(base[c.title].values())
      if not mine or not theirs:
        cells.append("missing")
        continue
      diff = statistics.mean(mine) - statistics.mean(theirs)
      cells.append(f"{diff:+.{c.digits}f} ({spread_verdict(mine, theirs)})")
    lines.append(f"| {_row_title(row, runs)} | " + " | ".join(cells) + " |")
  return lines


def paired_verdict(mean_difference: float, p_value: Optional[float], alpha: float = 0.05) -> str:
  """``'higher'`` / ``'lower'`` when the paired t-test rejects no difference at ``alpha``, else
  ``'no difference shown'``; ``'too few seeds'`` without a test."""
  if p_value is None:
    return "too few seeds"
  if p_value < alpha:
    return "higher" if mean_difference > 0 else "lower"
  return "no difference shown"


def paired(runs: Runs, method: Row, base: Row, columns: Sequence[Column]) -> list[str]:
  """``method`` minus ``base`` on the seeds both have (the same initialisation and data order per seed).

  One line per compared column: the per-seed differences, the seeds on which the method is above its
  base, their mean ± std, the paired t-test's two-sided p, the exact sign test's p, a 95 % percentile
  bootstrap interval of the mean difference, and :func:`paired_verdict` (the t-test at 0.05).
  """
  cols = [c for c in columns if c.compare]
  seeds = sorted(set(runs.results.get(method.name, {})) & set(runs.results.get(base.name, {})))
  name = f"{method.title.strip()} - {base.title.strip()}"
  if not seeds:
    return [f"{name}: no seed with both runs yet."]
  lines = [f"| {name} | " + " | ".join(f"seed {s}" for s in seeds) +
           " | above | mean ± std | paired t p | sign p | bootstrap 95 % | verdict |",
           "|---|" + "---|" * (len(seeds) + 6)]
  p_text = lambda p: "-" if p is None else f"{p:.3f}"  # noqa: E731
  for c in cols:
    mine, theirs = values(runs, method.name, c), values(runs, base.name, c)
    by_seed = {s: mine[s] - theirs[s] for s in seeds if s in mine and s in theirs}
    if not by_seed:
      continue
    diffs = list(by_seed.values())
    t_p = stats.paired_t_pvalue(diffs)
    interval = stats.bootstrap_interval(diffs) if len(diffs) > 1 else None
    ci = "-" if interval is None else f"[{interval[0]:+.{c.digits}f}, {interval[1]:+.{c.digits}f}]"
    cells = [f"{by_seed[s]:+.{c.digits}f}" if s in by_seed else "-" for s in seeds]
    lines.append(f"| {c.title} | " + " | ".join(cells) +
                 f" | {sum(d > 0 for d in diffs)} of {len(diffs)} | {mean_std(diffs, digits=c.digits)} | "
                 f"{p_text(t_p)} | {p_text(stats.sign_test_pvalue(diffs))} | {ci} | "
                 f"{paired_verdict(statistics.mean(diffs), t_p)} |")
  return lines


def per_seed(runs: Runs, rows: Sequence[Row], columns: Sequence[Column]) -> list[str]:
  """Every seed's value of every column; random init in brackets where the run measured it."""
  lines = ["| method | seed | " + " | ".join(c.title for c in columns) + " |", "|---|---|" + "---|" * len(columns)]
  for row in rows:
    for seed in range(runs.seeds):
      result = runs.results.get(row.name, {}).get(seed)
      if result is None:
        lines.append(f"| {row.title} | {seed} | " + " | ".join(["missing"] * len(columns)) + " |")
        continue
      cells = []
      for c in columns:
        value = c.of(result.get("trained"), seed, runs)
        init = c.of(result.get("random_init"), seed, runs) if c.random_init else None
        text = "-" if value is None else f"{value:.{c.digits}f}"
        cells.append(text if init is None else f"{text} ({init:.{c.digits}f})")
      lines.append(f"| {row.title} | {seed} | " + " | ".join(cells) + " |")
  return lines


def wall_times(runs: Runs, rows: Sequence[Row]) -> list[str]:
  """Per row: the wall time of each run in minutes; then the sum over the table's runs."""
  lines, total = [], 0.0
  for row in rows:
    minutes = {s: float(r["run"]["wall time s"]) / 60 for s, r in sorted(runs.results.get(row.name, {}).items())
               if "wall time s" in r.get("run", {})}
    total += sum(minutes.values())
    if minutes:
      lines.append(f"- {row.title}: " + ", ".join(f"seed {s} {m:.1f} min" for s, m in minutes.items()))
  return lines + [f"- sum over the table's runs: {total:.1f} min"]


def missing_runs(runs: Runs) -> list[str]:
  """One line per run without results.json (none: an empty list)."""
  if not runs.missing:
    return []
  return [f"**Missing runs ({len(runs.missing)})**, not in the means above (unfinished or never run):", ""] + [
      f"- {path}" for path in runs.missing]


def render(runs: Runs, rows: Sequence[Row], columns: Sequence[Column], *, caption: str, baseline: Row,
           paper_title: str = "paper", random_init_from: Sequence[str] = (), title: str = "",
           list_missing: bool = True) -> list[str]:
  """The whole Markdown section of one table (see the module docstring); ``list_missing=False`` leaves the
  missing runs' list to the caller (several sections of the same runs list them once)."""
  lines = ([f"### {title}", ""] if title else []) + [caption, ""]
  lines += summary(runs, rows, columns, paper_title=paper_title, random_init_from=random_init_from)
  lines += ["", f"Difference of means to {baseline.title}, in points; *higher* / *lower*: every seed of the "
            "method lies above / below every seed of the baseline (outside the seed spread).", ""]
  lines += comparison(runs, rows, columns, baseline)
  lines += ["", "Per seed (random init in brackets where the run measured it):", ""]
  lines += per_seed(runs, rows, columns)
  lines += ["", "Wall time of each run (training and its evaluations):", ""] + wall_times(runs, rows)
  missing = missing_runs(runs) if list_missing else []
  return lines + ([""] + missing if missing else [])
