"""The launch scripts' tables (fgjax.tools.tables): exact cells on fake runs trees, missing runs, the CLI.

Every expected mean ± std below is worked out by hand from the numbers written
into the fake results.json files (e.g. 10, 20, 30 % -> 20.00 ± 10.00).
"""

import json
import os
import subprocess
import sys

import pytest

from fgjax.evaluate import repro_table
from fgjax.tools import tables


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(runs_dir, name, seed, results, setting=""):
  path = os.path.join(runs_dir, setting, f"{name}_seed{seed}", "results.json")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(results, f)


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "fgjax.tools.tables", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=120)


# ----------------------------------------------------------------------------
# The formatter


def test_mean_std():
  assert tables.mean_std([0.1, 0.2, 0.3], scale=100) == "20.00 ± 10.00"  # sample std of 10, 20, 30
  assert tables.mean_std([0.5, 0.7], scale=100) == "60.00 ± 14.14"  # sqrt(10^2 + 10^2)
  assert tables.mean_std([10, 20], digits=1) == "15.0 ± 7.1"
  assert tables.mean_std([0.4], scale=100) == "40.00"  # one seed: no ± part
  assert tables.mean_std([]) == "-" and tables.mean_std([], empty="n/a") == "n/a"
  # statistics.stdev raises on NaN; a NaN seed shows instead.
  assert tables.mean_std([float("nan"), 50.0], digits=1) == "nan ± nan"


# ----------------------------------------------------------------------------
# fgjax.evaluate.repro_table: the shared writer


def test_spread_verdict():
  assert repro_table.spread_verdict([3, 4], [1, 2]) == "higher"
  assert repro_table.spread_verdict([0, 0.5], [1, 2]) == "lower"
  assert repro_table.spread_verdict([1.5, 3], [1, 2]) == "within the spread"
  assert repro_table.spread_verdict([2, 3], [1, 2]) == "within the spread"  # a tie is not outside
  assert repro_table.spread_verdict([5], [1, 2]) == "one seed"
  assert repro_table.spread_verdict([], [1, 2]) == "n/a"


def _toy_tree(runs_dir, skip=()):
  """Rows 'base' and 'new', 3 seeds; accuracy a = 0.1 (s + 1) (+ 0.5 for 'new'), count c = 10 s."""
  for name, shift in (("base", 0.0), ("new", 0.5)):
    for s in range(3):
      if (name, s) in skip:
        continue
      results = {"trained": {"a": 0.1 * (s + 1) + shift, "c": 10 * s}, "run": {"wall time s": 60.0 * (s + 1)}}
      if name == "base":
        results["random_init"] = {"a": 0.01 * (s + 1), "c": 100}
      _write(runs_dir, name, s, results)


_TOY_ROWS = (repro_table.Row("base", "Base", "1 / 2"), repro_table.Row("new", "New", "3 / 4"))
_TOY_COLS = (repro_table.Column("acc", "a"), repro_table.Column("count", "c", scale=1, digits=1, compare=False))


def test_render_exact(tmp_path):
  _toy_tree(str(tmp_path))
  runs = repro_table.gather(str(tmp_path), ["base", "new"], 3)
  assert runs.missing == []
  lines = repro_table.render(runs, _TOY_ROWS, _TOY_COLS, caption="Toy.", baseline=_TOY_ROWS[0],
                             paper_title="paper a / b", random_init_from=["base"], title="T")
  assert lines == [
      "### T", "", "Toy.", "",
      "| method | acc | count | paper a / b |",
      "|---|---|---|---|",
      "| random init (3 runs) | 2.00 ± 1.00 | 100.0 ± 0.0 | - |",  # 1, 2, 3 % and 100, 100, 100
      "| Base | 20.00 ± 10.00 | 10.0 ± 10.0 | 1 / 2 |",  # 10, 20, 30 % and 0, 10, 20
      "| New | 70.00 ± 10.00 | 10.0 ± 10.0 | 3 / 4 |",
      "",
      "Difference of means to Base, in points; *higher* / *lower*: every seed of the method lies above / below "
      "every seed of the baseline (outside the seed spread).",
      "",
      "| vs Base | acc |",
      "|---|---|",
      "| New | +50.00 (higher) |",
      "",
      "Per seed (random init in brackets where the run measured it):",
      "",
      "| method | seed | acc | count |",
      "|---|---|---|---|",
      "| Base | 0 | 10.00 (1.00) | 0.0 (100.0) |",
      "| Base | 1 | 20.00 (2.00) | 10.0 (100.0) |",
      "| Base | 2 | 30.00 (3.00) | 20.0 (100.0) |",
      "| New | 0 | 60.00 | 0.0 |",
      "| New | 1 | 70.00 | 10.0 |",
      "| New | 2 | 80.00 | 20.0 |",
      "",
      "Wall time of each run (training and its evaluations):",
      "",
      "- Base: seed 0 1.0 min, seed 1 2.0 min, seed 2 3.0 min",
      "- New: seed 0 1.0 min, seed 1 2.0 min, seed 2 3.0 min",
      "- sum over the table's runs: 12.0 min"]


def test_a_missing_run_is_reported_never_dropped(tmp_path):
  _toy_tree(str(tmp_path), skip={("new", 1), ("new", 2)})
  runs = repro_table.gather(str(tmp_path), ["base", "new", "absent"], 3)
  assert runs.missing == [os.path.join(str(tmp_path), d) for d in ("new_seed1", "new_seed2", "absent_seed0",
                                                                   "absent_seed1", "absent_seed2")]
  rows = _TOY_ROWS + (repro_table.Row("absent", "Absent"),)
  text = "\n".join(repro_table.render(runs, rows, _TOY_COLS, caption="Toy.", baseline=rows[0]))
  assert "| New (1 of 3 seeds) | 60.00 | 0.0 | 3 / 4 |" in text  # the seed there is, counted as such
  assert "| Absent | missing | missing | - |" in text
  assert "| New (1 of 3 seeds) | +40.00 (one seed) |" in text
  assert "| New | 1 | missing | missing |" in text and "| Absent | 2 | missing | missing |" in text
  assert text.endswith("\n".join(["**Missing runs (5)**, not in the means above (unfinished or never run):", ""]
                                 + [f"- {p}" for p in runs.missing]))


# ----------------------------------------------------------------------------
# launch/perturb_table.sh


_PERTURB_KEYS = ("probe100_top1_fine", "probe50_top1_fine", "probe20_top1_fine", "rank1_fine", "map_fine",
                 "knn20_top1_fine")


def _perturb_tree(runs_dir, seeds=3, skip=()):
  for row in tables.PERTURB_ROWS:
    for s in range(seeds):
      if (row.name, s) in skip:
        continue
      # Column c of seed s: 0.1 (s + 1) + 0.01 c, Perturb-MoCo 0.05 higher; super classes 0.5 higher.
      shift = 0.05 if row.name == "perturb_moco" else 0.0
      trained = {k: 0.1 * (s + 1) + 0.01 * c + shift for c, k in enumerate(_PERTURB_KEYS)}
      trained.update({k.replace("_fine", "_super"): v + 0.5 for k, v in trained.items()})
      results = {"trained": trained}
      if row.name == "moco" and s == 0:
        results["random_init"] = {k: 0.05 for k in trained}
      _write(runs_dir, row.name, s, results)


def test_perturb_table_layout(tmp_path):
  _perturb_tree(str(tmp_path))
  lines = tables.perturb_table(str(tmp_path), 3).splitlines()
  same = "| 20.00 ± 10.00 | 21.00 ± 10.00 | 22.00 ± 10.00 | 23.00 ± 10.00 | 24.00 ± 10.00 | 25.00 ± 10.00 |"
  fine = lines.index("### Fine classes")
  assert lines[fine + 4:fine + 14] == [
      "| method | linear 100 % | linear 50 % | linear 20 % | rank-1 | mAP | kNN | "
      "paper, CUB-200: linear 100 / 50 / 20 %, rank-1, mAP |",
      "|---|---|---|---|---|---|---|---|",
      "| random init (1 run) | 5.00 | 5.00 | 5.00 | 5.00 | 5.00 | 5.00 | - |",
      "| MoCo v2 " + same + " 63.98 / 56.35 / 42.63 / 39.72 / 15.91 |",
      "| Perturb-MoCo (full) | 25.00 ± 10.00 | 26.00 ± 10.00 | 27.00 ± 10.00 | 28.00 ± 10.00 | 29.00 ± 10.00 | "
      "30.00 ± 10.00 | 66.17 / 60.84 / 49.69 / 42.06 / 19.70 |",
      "|   Grad-CAM noise only (v + v^g) " + same + " 66.04 / - / - / 41.02 / - |",
      "|   low-variance noise only (v + v^var) " + same + " 65.91 / - / - / 41.69 / - |",
      "|   L_C + alpha L_R only (no pairs) " + same + " Fig. 5 (Cars): < 1 point over MoCo v2 |",
      "| SimSiam " + same + " 46.75 / - / - / 16.24 / - |",
      "| Perturb-SimSiam (full) " + same + " 57.80 / - / - / 24.67 / - |"]
  # Seeds 0.1 apart, Perturb-MoCo 5 points up: within the spread of MoCo's seeds.
  assert "| Perturb-MoCo (full) | +5.00 (within the spread) | +5.00 (within the spread) |" in "\n".join(lines)
  assert "| Perturb-MoCo (full) | 2 | 35.00 | 36.00 | 37.00 | 38.00 | 39.00 | 40.00 |" in lines
  sup = lines.index("### Super-classes")
  assert lines[sup + 7] == ("| MoCo v2 | 70.00 ± 10.00 | 71.00 ± 10.00 | 72.00 ± 10.00 | 73.00 ± 10.00 | "
                            "74.00 ± 10.00 | 75.00 ± 10.00 | - |")  # the paper has no super-class level


def test_perturb_table_lists_each_missing_run_once(tmp_path):
  _perturb_tree(str(tmp_path), skip={("simsiam", 1), ("no_pairs", 0)})
  text = tables.perturb_table(str(tmp_path), 3)
  assert text.count("**Missing runs (2)**") == 1 and text.endswith(
      f"- {os.path.join(str(tmp_path), 'no_pairs_seed0')}\n- {os.path.join(str(tmp_path), 'simsiam_seed1')}")
  assert text.count("| SimSiam (2 of 3 seeds) |") == 4  # summary and comparison, fine and super


def test_cli_prints_the_table_and_curves_or_one_error_line(tmp_path):
  _perturb_tree(str(tmp_path))
  ok = _cli("perturb", str(tmp_path), "--seeds", "3")
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert ok.stdout == tables.perturb_table(str(tmp_path), 3) + "\n"
  more = _cli("perturb", str(tmp_path), "--seeds", "4")  # seed 3 missing everywhere: listed, not an error
  assert more.returncode == 0 and "**Missing runs (7)**" in more.stdout
  empty = _cli("perturb", str(tmp_path / "nothing"))
  assert empty.returncode == 2 and empty.stdout == ""
  assert empty.stderr.startswith("python -m fgjax.tools.tables: error: no run of the table under ")
  assert "Traceback" not in empty.stderr
  assert _cli("nosuchtable", str(tmp_path)).returncode == 2
  # --curves: one PNG of every run's online kNN curve (metrics.jsonl of the monitor).
  for s in range(3):
    with open(os.path.join(str(tmp_path), f"moco_seed{s}", "metrics.jsonl"), "w") as f:
      for step in (0, 10):
        f.write(json.dumps({"step": step, "knn20_top1_fine": 0.1 + step / 100}) + "\n")
  drawn = _cli("perturb", str(tmp_path), "--curves", str(tmp_path / "curves.png"))
  assert drawn.returncode == 0, drawn.stderr[-2000:]
  assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curve_panels_follow_the_table_rows_per_setting(tmp_path, monkeypatch):
  # Alphabetical run names would put base_indi before base; the panels follow the table's rows instead.
  for setting in ("tinted", "blank"):
    for name in ("fine", "base_indi", "base", "extra_run"):
      _write(str(tmp_path), name, 0, {"trained": {}}, setting)
  drawn = {}
  monkeypatch.setattr(tables.learning, "draw_curves", lambda runs, path: drawn.update(runs=runs, path=path))
  tables.draw_curves(str(tmp_path), ["blank", "tinted", "absent"], "c.png", tables.CURVE_PANELS["base_indi"])
  assert list(drawn["runs"]) == [f"{s} / {t}" for s in ("blank", "tinted")
                                 for t in ("Base", "Base-Indi", "Fine", "extra_run")]
  assert drawn["runs"]["tinted / Base-Indi"] == {0: os.path.join(str(tmp_path), "tinted", "base_indi_seed0")}
  tables.draw_curves(os.path.join(str(tmp_path), "blank"), None, "c.png")  # no panels: by run name
  assert list(drawn["runs"]) == ["base", "base_indi", "extra_run", "fine"]


# ----------------------------------------------------------------------------
# launch/base_indi_table.sh


def test_base_indi_table_per_setting(tmp_path):
  recall_fine = [f"recall@{k}_fine" for k in (1, 2, 4, 8)]
  recall_super = [f"recall@{k}_super" for k in (1, 2, 4, 8)]
  for setting, value0 in (("blank", 0.5), ("tinted", 0.3)):
    for name, _ in tables.BASE_INDI_TITLES:
      for s, value in enumerate((value0, value0 + 0.2)):
        keys = recall_fine + recall_super + ([] if name in ("indi", "fine") else ["head_top1_super",
                                                                                  "head_top5_super"])
        _write(str(tmp_path), name, s, {"trained": {k: value for k in keys}}, setting=setting)
  text = tables.base_indi_table(str(tmp_path), 2)
  lines = text.splitlines()
  assert lines[0] == "## Data: blank, blank backgrounds (the paper's synthetic set)"
  assert "## Data: tinted, tinted backgrounds, the harder setting (the default data)" in lines
  head = lines.index("### blank: super-classes (Table 1)")
  assert lines[head + 4:head + 10] == [
      "| method | Top1 Acc | Top5 Acc | R@1 | R@2 | R@4 | R@8 | paper (CIFAR-100) |",
      "|---|---|---|---|---|---|---|---|",
      f"| Base | {' | '.join(['60.00 ± 14.14'] * 6)} | 85.60 / 97.53 / 81.07 / 87.02 / 90.68 / 93.24 |",
      # Indi has no super-class head: '-' in the run and in the paper.
      f"| Indi | - | - | {' | '.join(['60.00 ± 14.14'] * 4)} | - / - / 22.42 / 32.94 / 46.83 / 62.62 |",
      f"| Base-Indi | {' | '.join(['60.00 ± 14.14'] * 6)} | 86.27 / 98.15 / 82.38 / 87.97 / 91.42 / 94.10 |",
      f"| Base-Indi_eff | {' | '.join(['60.00 ± 14.14'] * 6)} | 86.08 / 97.92 / 82.28 / 87.51 / 91.43 / 94.15 |"]
  fine = lines.index("### tinted: fine classes (Table 2)")
  assert lines[fine + 4] == "| method | R@1 | R@2 | R@4 | R@8 | paper R@1 / 2 / 4 / 8 (CIFAR-100) |"
  assert lines[fine + 10] == f"| Fine | {' | '.join(['40.00 ± 14.14'] * 4)} | 71.77 / 78.80 / 84.06 / 88.34 |"
  assert "Missing runs" not in text
  # A setting without any run is listed as such (an interrupted table); no run at all is the error.
  partial = tables.base_indi_table(str(tmp_path), 2, ["blank", "hard"])
  assert "## Data: hard, hard\n\nNo run yet.\n\n**Missing runs (10)**" in partial
  with pytest.raises(FileNotFoundError, match="no run of the table under .*'hard', 'harder'"):
    tables.base_indi_table(str(tmp_path), 2, ["hard", "harder"])


# ----------------------------------------------------------------------------
# launch/hcl_table.sh


def _hcl_tree(runs_dir, ce_outliers=(10, 20), sweep=True):
  outliers = {"ce": ce_outliers, "supcon": (5, 10), "hcl": (2, 10), "hcl_soft0.25": (4, 0), "hcl_soft0.75": (1, 0)}
  for name in outliers if sweep else ("ce", "supcon", "hcl"):
    for s in range(2 if name in ("ce", "supcon", "hcl") else 1):
      trained = {"knn5_top1_super": 0.9, "knn20_top1_fine": (0.5, 0.7)[s], "probe100_top1_fine": 0.4,
                 "outliers_super": outliers[name][s], "outlier_share_super": (0.1, 0.2)[s]}
      _write(runs_dir, name, s, {"trained": trained, "run": {"data": "24 species, 6 genera"}})


def test_hcl_table_exact(tmp_path):
  _hcl_tree(str(tmp_path))
  text = tables.hcl_table(str(tmp_path), 2, sweep_seeds=1)
  lines = text.splitlines()
  assert lines[0].startswith("Embedded hierarchy data (24 species, 6 genera), test split.")
  head = lines.index("### CE, SupCon, HCL")
  assert lines[head + 4].startswith("| method | genus outliers | share % | reduction vs CE % | species kNN top-1 % |")
  # Reduction per seed: SupCon 1 - 5/10, 1 - 10/20 = 50 %, 50 %; HCL 1 - 2/10, 1 - 10/20 = 80 %, 50 %.
  assert lines[head + 6:head + 9] == [
      "| CE | 15.0 ± 7.1 | 15.00 ± 7.07 | - | 60.00 ± 14.14 | 40.00 ± 0.00 | 90.00 ± 0.00 | 725 (~20 %) |",
      "| SupCon | 7.5 ± 3.5 | 15.00 ± 7.07 | 50.00 ± 0.00 | 60.00 ± 14.14 | 40.00 ± 0.00 | 90.00 ± 0.00 | "
      "423 (-41.7 %) |",
      "| HCL (lambda 0.5) | 6.0 ± 5.7 | 15.00 ± 7.07 | 65.00 ± 21.21 | 60.00 ± 14.14 | 40.00 ± 0.00 | "
      "90.00 ± 0.00 | 201 (-72.3 %) |"]
  sweep = lines.index("### A sweep of HCL's lambda (the paper gives none)")
  assert lines[sweep + 6:sweep + 10] == [
      "| CE | 10.0 | 10.00 | - | 50.00 | 40.00 | 90.00 | 725 (~20 %) |",
      "| HCL (lambda 0.5) | 2.0 | 10.00 | 80.00 | 50.00 | 40.00 | 90.00 | 201 (-72.3 %) |",
      "| HCL (lambda 0.25) | 4.0 | 10.00 | 60.00 | 50.00 | 40.00 | 90.00 | - |",
      "| HCL (lambda 0.75) | 1.0 | 10.00 | 90.00 | 50.00 | 40.00 | 90.00 | - |"]
  assert "Missing runs" not in text
  _cli_run = _cli("hcl", str(tmp_path), "--seeds", "2", "--sweep_seeds", "2")  # the sweep's seed 1: missing
  assert _cli_run.returncode == 0 and "**Missing runs (2)**" in _cli_run.stdout
  assert "| HCL (lambda 0.25) (1 of 2 seeds) |" in _cli_run.stdout


def test_hcl_reduction_when_ce_has_no_outliers(tmp_path):
  # The old heredoc crashed here (statistics.stdev of a NaN); the cell now says nan.
  _hcl_tree(str(tmp_path), ce_outliers=(0, 20), sweep=False)
  lines = tables.hcl_table(str(tmp_path), 2).splitlines()
  supcon = [line for line in lines if line.startswith("| SupCon |")][0]
  assert supcon.split(" | ")[3] == "nan ± nan"


# ----------------------------------------------------------------------------
# launch/class_attentive.sh


def _ca_results(probe, setting, **extra):
  trained = {"probe_test_top1": probe, "probe_all_top1": probe + 0.1, "unit_probe_test_top1": probe - 0.1,
             "std_ratio": probe, "effective_rank": 10 * probe, **extra}
  return {"trained": trained, "run": {"data": f"circles {setting}"},
          "reference": {"raw_probe_test_top1": 0.25, "raw_probe_all_top1": 0.5, "oracle_test_top1": 0.99,
                        "oracle_all_top1": 1.0}}


def test_class_attentive_table_exact(tmp_path):
  runs = str(tmp_path)
  for s, probe in enumerate((0.3, 0.4, 0.5)):
    results = _ca_results(probe, "default", prototype_test_top1=probe)
    if s == 0:
      results["random_init"] = {"probe_test_top1": 0.26, "probe_all_top1": 0.27, "unit_probe_test_top1": 0.28,
                                "std_ratio": 0.3, "effective_rank": 7.25}
    _write(runs, "paper", s, results, setting="default")
  for s, probe in enumerate((0.6, 0.8)):  # seed 2 missing
    _write(runs, "siamese", s, _ca_results(probe, "default"), setting="default")
  _write(runs, "supervised", 0, _ca_results(0.9, "default", classifier_test_top1=0.95), setting="default")
  lines = tables.class_attentive_table(runs, ["default"], 3).split("\n")
  assert lines[0] == "### Data: default"
  assert lines[4:] == [
      "| class-attentive, the paper's loss (positives only) `:paper` | 25 % | 40.00 ± 10.00 | 50.00 ± 10.00 | "
      "30.00 ± 10.00 | 40.00 ± 10.00 | 0.400 | 4.0 |",
      "| Siamese + negatives (margin), no attention `:siamese` (2 seeds) | - | 70.00 ± 14.14 | 80.00 ± 14.14 | "
      "60.00 ± 14.14 | - | 0.700 | 7.0 |",
      "| supervised MLP classifier on raw inputs `:supervised` (1 seeds) | - | 90.00 | 100.00 | 80.00 | 95.00 | "
      "0.900 | 9.0 |",
      "| untrained MLP embedding (seed 0) | - | 26.00 | 27.00 | 28.00 | - | 0.300 | 7.2 |",
      "| linear classifier on the raw 200-d input | - | 25.00 | 50.00 | - | - | - | - |",
      "| oracle: nearest radius, knows the generator (a ceiling, not a method) | - | 99.00 | 100.00 | - | - | - | - |",
      "", "Data: circles default. Mean ± std over 3 seeds, in %.", ""]
  # A setting without any run is an error, not an empty table.
  with pytest.raises(FileNotFoundError, match="no class-attentive run under .*hard"):
    tables.class_attentive_table(runs, ["default", "hard"], 3)


# ----------------------------------------------------------------------------
# launch/learning_check.sh


def test_learning_table_cli(tmp_path):
  for seed, gain in ((0, 0.1), (1, 0.2)):
    base = {"knn20_top1_fine": 0.1, "knn20_top1_super": 0.3}
    _write(str(tmp_path), "moco", seed, {"random_init": base, "trained": {k: v + gain for k, v in base.items()},
                                         "run": {"wall time s": 120.0}})
  run = _cli("learning", str(tmp_path))
  assert run.returncode == 0, run.stderr[-2000:]
  assert "| moco (2) | 2.0-2.0 min | 25.0 (+15.0 ± 7.1; +10.0 .. +20.0) | 45.0 (+15.0 ± 7.1; +10.0 .. +20.0) |" \
      in run.stdout
  assert "| 1 | 30.00 (10.00) +20.00 | 50.00 (30.00) +20.00 |" in run.stdout
  assert "| mean ± std | 25.00 ± 7.07, difference 15.00 ± 7.07 | 45.00 ± 7.07, difference 15.00 ± 7.07 | | |" \
      in run.stdout
  assert run.stdout.endswith("| | |\n\n")  # what learning.md held before (the tee writes it)
  empty = _cli("learning", str(tmp_path / "nothing"))
  assert empty.returncode == 2 and "no finished runs" in empty.stderr


def test_torch_comparison_reads_both_benchmarks(tmp_path):
  import json
  (tmp_path / "fgjax.json").write_text(json.dumps({
      "config": "resnet50 width 64, global batch 128, 224 px, float32", "device": "H200",
      "ceiling_tflops_per_device": 400.0,
      "moco": {"images_per_s": 1500.0, "ms_per_step": 85.3, "achieved_tflops": 120.0, "mfu": 0.3}}))
  (tmp_path / "torch.json").write_text(json.dumps({"images_per_s": 1200.0, "ms_per_step": 106.7,
                                                  "framework": "torch 2.5", "device": "H200"}))
  text = tables.torch_comparison(str(tmp_path))
  assert "MoCo v2 step, resnet50 width 64, global batch 128, 224 px, float32 on H200:" in text
  assert "  fgjax      1500.0 img/s      85.3 ms/step  120.0 TFLOP/s  MFU 30.0 % (ceiling 400.0 TFLOP/s)" in text
  assert "  PyTorch    1200.0 img/s     106.7 ms/step  (torch 2.5, H200)" in text
  assert text.endswith("fgjax / PyTorch = 1.25x images/s")
  (tmp_path / "torch.json").unlink()
  assert tables.main(["torch_comparison", str(tmp_path)]) == 2


# ----------------------------------------------------------------------------
# launch/perturb_table.sh, paired seeds: fgjax.evaluate.stats' tests and the perturb_paired table


def test_paired_tests_against_hand_values():
  from fgjax.evaluate import stats
  # Differences 1, 2, 3: mean 2, sample std 1, t = 2 / (1 / sqrt 3) = 3.464 on 2 df -> p = 0.0742 (t table).
  assert stats.paired_t_pvalue([1.0, 2.0, 3.0]) == pytest.approx(0.0742, abs=5e-4)
  assert stats.paired_t_pvalue([1.0]) is None
  assert stats.paired_t_pvalue([0.0, 0.0]) == 1.0 and stats.paired_t_pvalue([2.0, 2.0]) == 0.0
  # Sign test: 5 of 5 above -> 2 / 32; 4 of 5 -> 2 * 6 / 32; a tie is left out.
  assert stats.sign_test_pvalue([1, 2, 3, 4, 5]) == pytest.approx(0.0625)
  assert stats.sign_test_pvalue([1, 2, 3, 4, -5]) == pytest.approx(0.375)
  assert stats.sign_test_pvalue([1, 2, 3, 4, 5, 0]) == pytest.approx(0.0625)
  assert stats.sign_test_pvalue([0.0]) is None
  low, high = stats.bootstrap_interval([1.0, 2.0, 3.0])
  assert 1.0 <= low < 2.0 < high <= 3.0 and stats.bootstrap_interval([1.0, 2.0, 3.0]) == (low, high)
  assert stats.bootstrap_interval([4.0, 4.0]) == (4.0, 4.0) and stats.bootstrap_interval([]) is None
  assert repro_table.paired_verdict(2.0, 0.01) == "higher" and repro_table.paired_verdict(-2.0, 0.01) == "lower"
  assert repro_table.paired_verdict(2.0, 0.2) == "no difference shown"
  assert repro_table.paired_verdict(2.0, None) == "too few seeds"


def _paired_tree(runs_dir, seeds=5, variant_seeds=3, skip=()):
  """Fine kNN of seed s: MoCo 0.30 + 0.02 s; Perturb-MoCo +1, +2, ... points over it; every other row equal
  to MoCo's; linear probe and the rest follow the kNN."""
  for row in tables.PAIRED_ROWS + tables.PAIRED_VARIANTS:
    for s in range(seeds if row in tables.PAIRED_ROWS else variant_seeds):
      if (row.name, s) in skip:
        continue
      value = 0.30 + 0.02 * s + (0.01 * (s + 1) if row.name == "perturb_moco" else 0.0)
      trained = {f"{k}_{level}": value for k in ("knn20_top1", "probe100_top1", "map", "rank1")
                 for level in ("fine", "super")}
      trained["feature_spread"] = 0.5
      results = {"trained": trained, "run": {"wall time s": 60.0}}
      if row.name == "moco":
        results["random_init"] = {k: 0.1 for k in trained}
      _write(runs_dir, row.name, s, results)


def test_perturb_paired_table(tmp_path):
  _paired_tree(str(tmp_path), skip={("perturb_simsiam", 4)})
  text = tables.perturb_paired_table(str(tmp_path), 5, 3)
  lines = text.splitlines()
  # Perturb-MoCo minus MoCo: +1 .. +5 points, 5 of 5 above; t = 3 / (1.581 / sqrt 5) = 4.243 on 4 df, p = 0.0132.
  head = lines.index("| Perturb-MoCo - MoCo v2 | seed 0 | seed 1 | seed 2 | seed 3 | seed 4 | above | mean ± std | "
                     "paired t p | sign p | bootstrap 95 % | verdict |")
  row = lines[head + 2]
  assert row.startswith("| linear 100 % | +1.00 | +2.00 | +3.00 | +4.00 | +5.00 | 5 of 5 | 3.00 ± 1.58 | 0.013 | "
                        "0.062 | [+"), row
  assert row.endswith("| higher |")
  # Perturb-SimSiam equals SimSiam on the 4 seeds both have: no difference shown, seed 4 not a column.
  sims = lines.index("| Perturb-SimSiam - SimSiam | seed 0 | seed 1 | seed 2 | seed 3 | above | mean ± std | "
                     "paired t p | sign p | bootstrap 95 % | verdict |")
  assert lines[sims + 2] == ("| linear 100 % | +0.00 | +0.00 | +0.00 | +0.00 | 0 of 4 | 0.00 ± 0.00 | 1.000 | - | "
                             "[+0.00, +0.00] | no difference shown |")
  # The variants: 3 seeds, against MoCo v2 and against Perturb-MoCo; the feature spread column (fine level).
  assert "| Perturb-MoCo, pairs without shuffle-BN (the leak) - Perturb-MoCo | seed 0 | seed 1 | seed 2 |" in text
  assert "| feature spread (collapse: 0) | +0.000 | +0.000 | +0.000 | 0 of 3 |" in text
  assert "|   Perturb-MoCo, pairs through aug+ (3 of 5 seeds) |" in text
  assert text.count("**Missing runs (1)**") == 1 and text.endswith(os.path.join(str(tmp_path), "perturb_simsiam_seed4"))
  ok = _cli("perturb_paired", str(tmp_path), "--seeds", "5", "--variant_seeds", "3")
  assert ok.returncode == 0 and ok.stdout == text + "\n", ok.stderr[-2000:]
