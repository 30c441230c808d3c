"""The launch scripts' tables (fgjax.tools.tables): exact cells on fake runs trees, missing runs, the CLI.

Every expected mean ± std below is worked out by hand from the numbers written
into the fake results.json files (e.g. 10, 20, 30 % -> 20.00 ± 10.00).
"""

import json
import os
import subprocess
import sys

import pytest

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
# launch/perturb_table.sh


_PERTURB_KEYS = ("probe100_top1_fine", "probe50_top1_fine", "probe20_top1_fine", "rank1_fine", "map_fine",
                 "knn20_top1_fine")


def _perturb_tree(runs_dir, seeds=3, skip=()):
  for _, name in tables.PERTURB_ROWS:
    for s in range(seeds):
      if (name, s) in skip:
        continue
      # Column c of seed s: 0.1 (s + 1) + 0.01 c, Perturb-MoCo 0.05 higher.
      shift = 0.05 if name == "perturb_moco" else 0.0
      results = {"trained": {k: 0.1 * (s + 1) + 0.01 * c + shift for c, k in enumerate(_PERTURB_KEYS)}}
      if name == "moco" and s == 0:
        results["random_init"] = {k: 0.05 for k in _PERTURB_KEYS}
      _write(runs_dir, name, s, results)


def test_perturb_table_exact(tmp_path):
  _perturb_tree(str(tmp_path))
  same = "| 20.00 ± 10.00 | 21.00 ± 10.00 | 22.00 ± 10.00 | 23.00 ± 10.00 | 24.00 ± 10.00 | 25.00 ± 10.00 |"
  assert tables.perturb_table(str(tmp_path), 3) == "\n".join([
      "Embedded patches data, fine classes (32), test split; mean ± std over 3 seed(s), in %.",
      "",
      "| method | linear 100 % | linear 50 % | linear 20 % | rank-1 | mAP | kNN |",
      "|---|---|---|---|---|---|---|",
      "| random init (seed 0) | 5.00 | 5.00 | 5.00 | 5.00 | 5.00 | 5.00 |",
      "| MoCo v2 " + same,
      "| Perturb-MoCo (full) | 25.00 ± 10.00 | 26.00 ± 10.00 | 27.00 ± 10.00 | 28.00 ± 10.00 | 29.00 ± 10.00 | "
      "30.00 ± 10.00 |",
      "|   Grad-CAM noise only (v + v^g) " + same,
      "|   low-variance noise only (v + v^var) " + same,
      "|   L_C + alpha L_R only (no pairs) " + same,
      "| SimSiam " + same,
      "| Perturb-SimSiam (full) " + same])


def test_missing_seed_and_missing_run_are_named(tmp_path):
  _perturb_tree(str(tmp_path), skip={("simsiam", 1), ("no_pairs", 0)})
  with pytest.raises(FileNotFoundError) as e:
    tables.perturb_table(str(tmp_path), 3)
  message = str(e.value)
  assert message.startswith("2 run(s) of the table have no results.json")
  assert os.path.join(str(tmp_path), "simsiam_seed1", "results.json") in message
  assert os.path.join(str(tmp_path), "no_pairs_seed0", "results.json") in message
  # Asking for more seeds than were run names the missing seed of every row.
  _perturb_tree(str(tmp_path / "complete"))
  with pytest.raises(FileNotFoundError, match="7 run\\(s\\).*moco_seed3"):
    tables.perturb_table(str(tmp_path / "complete"), 4)


def test_cli_prints_the_table_or_one_error_line(tmp_path):
  _perturb_tree(str(tmp_path))
  ok = _cli("perturb", str(tmp_path), "--seeds", "3")
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert ok.stdout == tables.perturb_table(str(tmp_path), 3) + "\n"
  bad = _cli("perturb", str(tmp_path), "--seeds", "4")
  assert bad.returncode == 2 and bad.stdout == ""
  assert bad.stderr.startswith("python -m fgjax.tools.tables: error: 7 run(s) of the table have no results.json")
  assert "Traceback" not in bad.stderr
  assert _cli("nosuchtable", str(tmp_path)).returncode == 2


# ----------------------------------------------------------------------------
# launch/base_indi_table.sh


def test_base_indi_table_exact(tmp_path):
  recall_fine = [f"recall@{k}_fine" for k in (1, 2, 4, 8)]
  recall_super = [f"recall@{k}_super" for k in (1, 2, 4, 8)]
  for _, name in tables.BASE_INDI_ROWS:
    for s, value in enumerate((0.5, 0.7)):
      keys = recall_fine + recall_super + ([] if name in ("indi", "fine") else ["head_top1_super", "head_top5_super"])
      _write(str(tmp_path), name, s, {"trained": {k: value for k in keys}})
  lines = tables.base_indi_table(str(tmp_path), 2).splitlines()
  cell = "60.00 ± 14.14"
  assert lines[2:6] == ["Super-classes (Table 1):", "",
                        "| method | Top1 Acc | Top5 Acc | R@1 | R@2 | R@4 | R@8 | paper (CIFAR-100) |",
                        "|---|---|---|---|---|---|---|---|"]
  assert lines[6] == f"| Base | {' | '.join([cell] * 6)} | 85.60 / 97.53 / 81.07 / 87.02 / 90.68 / 93.24 |"
  # Indi has no super-class head: '-' in the run and in the paper.
  assert lines[7] == f"| Indi | - | - | {' | '.join([cell] * 4)} | - / - / 22.42 / 32.94 / 46.83 / 62.62 |"
  assert [line.split(" | ")[0] for line in lines[6:10]] == ["| Base", "| Indi", "| Base-Indi", "| Base-Indi_eff"]
  assert lines[10:14] == ["", "Fine classes (Table 2):", "",
                          "| method | R@1 | R@2 | R@4 | R@8 | paper R@1 / 2 / 4 / 8 (CIFAR-100) |"]
  assert lines[15] == f"| Base | {' | '.join([cell] * 4)} | 37.06 / 51.63 / 67.04 / 79.91 |"
  assert lines[19] == f"| Fine | {' | '.join([cell] * 4)} | 71.77 / 78.80 / 84.06 / 88.34 |"
  assert len(lines) == 20


# ----------------------------------------------------------------------------
# launch/hcl_table.sh


def _hcl_tree(runs_dir, ce_outliers=(10, 20)):
  outliers = {"ce": ce_outliers, "supcon": (5, 10), "hcl": (2, 10)}
  for _, name in tables.HCL_ROWS:
    for s in range(2):
      trained = {"knn5_top1_super": 0.9, "knn20_top1_fine": (0.5, 0.7)[s], "probe100_top1_fine": 0.4,
                 "outliers_super": outliers[name][s], "outlier_share_super": (0.1, 0.2)[s]}
      _write(runs_dir, name, s, {"trained": trained, "run": {"data": "24 species, 6 genera"}})


def test_hcl_table_exact(tmp_path):
  _hcl_tree(str(tmp_path))
  lines = tables.hcl_table(str(tmp_path), 2).splitlines()
  assert lines[0].startswith("Embedded hierarchy data (24 species, 6 genera); test split; mean ± std over 2 seed(s).")
  assert lines[2].startswith("| method | genus outliers | share % | reduction vs CE % |")
  # Reduction per seed: SupCon 1 - 5/10, 1 - 10/20 = 50 %, 50 %; HCL 1 - 2/10, 1 - 10/20 = 80 %, 50 %.
  assert lines[4:] == [
      "| CE | 15.0 ± 7.1 | 15.00 ± 7.07 | - | 60.00 ± 14.14 | 40.00 ± 0.00 | 725 (~20 %) |",
      "| SupCon | 7.5 ± 3.5 | 15.00 ± 7.07 | 50.0 ± 0.0 | 60.00 ± 14.14 | 40.00 ± 0.00 | 423 (-41.7 %) |",
      "| HCL | 6.0 ± 5.7 | 15.00 ± 7.07 | 65.0 ± 21.2 | 60.00 ± 14.14 | 40.00 ± 0.00 | 201 (-72.3 %) |"]


def test_hcl_reduction_when_ce_has_no_outliers(tmp_path):
  # The old heredoc crashed here (statistics.stdev of a NaN); the cell now says nan.
  _hcl_tree(str(tmp_path), ce_outliers=(0, 20))
  lines = tables.hcl_table(str(tmp_path), 2).splitlines()
  assert lines[5].split(" | ")[3] == "nan ± nan"


# ----------------------------------------------------------------------------
# launch/moco_vs_perturb.sh


def test_moco_vs_perturb_table_exact(tmp_path):
  keys = ("knn20_top1_fine", "probe100_top1_fine", "probe20_top1_fine", "rank1_fine", "rank5_fine", "map_fine",
          "knn20_top1_super", "map_super")
  _write(str(tmp_path), "moco", 0, {"trained": {k: 0.5 for k in keys}, "random_init": {k: 0.1 for k in keys}})
  _write(str(tmp_path), "perturb_moco", 0, {"trained": {k: 0.625 for k in keys}})
  assert tables.moco_vs_perturb_table(str(tmp_path), 1).splitlines() == [
      "| encoder | " + " | ".join(keys) + " |",
      "|---|" + "---|" * 8,
      "| moco |" + " 50.00 |" * 8,
      "| random init |" + " 10.00 |" * 8,  # from the MoCo runs, listed after MoCo (the script's order)
      "| perturb_moco |" + " 62.50 |" * 8]


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
