r"""The Markdown tables of the reproduction scripts in ``launch/``, from their runs' results.json.

  python -m fgjax.tools.tables perturb_paired RUNS_DIR --seeds 5 --variant_seeds 3   # launch/perturb_table.sh
  python -m fgjax.tools.tables perturb RUNS_DIR --seeds 2          # the earlier unpaired table (ablations)
  python -m fgjax.tools.tables base_indi RUNS_DIR --seeds 3 [--settings blank,tinted]
  python -m fgjax.tools.tables hcl RUNS_DIR --seeds 3              # launch/hcl_table.sh
  python -m fgjax.tools.tables class_attentive RUNS_DIR --seeds 3 [--settings default,hard]
  python -m fgjax.tools.tables learning RUNS_DIR [--curves PNG]    # launch/learning_check.sh

prints the table on stdout (the scripts ``tee`` it into ``RUNS_DIR/table.md`` or
``learning.md``); ``--curves PNG`` also draws the online kNN curve of every run
found under RUNS_DIR, one panel per method (and setting). Runs are
``RUNS_DIR/<row>_seed<s>/results.json`` for seeds ``0 .. N-1`` (the Base-Indi and
class-attentive runs one level deeper: ``RUNS_DIR/<setting>/<row>_seed<s>``).

The papers' tables (perturb, base_indi, hcl) are
:mod:`fgjax.evaluate.repro_table` sections: mean ± std per method beside the
paper's figures, a random-init row, the difference to the baseline with its
seed-spread verdict, every seed's values and wall times; a missing run is listed
as missing and its row says how many seeds it has. The class-attentive table
shows the runs there are and the seed count of a partial row (a setting without
any run is the error, exit 2); the learning table takes whatever
``<name>_seed<k>`` runs exist.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
from typing import Any
from typing import Callable
from typing import Sequence

from fgjax.evaluate import learning_table as learning
from fgjax.evaluate import repro_table
from fgjax.evaluate.repro_table import Column
from fgjax.evaluate.repro_table import Row
from fgjax.evaluate.stats import mean_std


def _read(path: str) -> dict[str, Any]:
  with open(path) as f:
    return json.load(f)


# ----------------------------------------------------------------------------
# The columns the tables share


def _knn_key(section: dict[str, Any], level: str) -> str | None:
  """The run's kNN top-1 key of ``level`` (``knn<k>_top1_<level>``: k is the run's ``eval.knn_k``)."""
  keys = sorted(k for k in section if k.startswith("knn") and k.endswith(f"_top1_{level}"))
  return keys[0] if keys else None


def _knn(level: str, title: str) -> Column:
  return Column(title, value=lambda s, _seed, _runs: s.get(_knn_key(s, level) or "", None))


def _tables(runs: repro_table.Runs, sections: Sequence[tuple[str, Sequence[Row], Sequence[Column], str]], *,
            caption: str, baseline: Row, random_init_from: Sequence[str], list_missing: bool = True) -> str:
  """Several :func:`repro_table.render` sections of the same runs (e.g. fine and super classes), then the
  missing runs (``list_missing=False``: the caller lists them)."""
  if not runs.results:
    raise FileNotFoundError(f"no run of the table under {runs.runs_dir} (<row>_seed<s>/results.json, rows "
                            f"{sorted({row.name for _, rows, _, _ in sections for row in rows})})")
  lines = [caption, ""]
  for title, rows, columns, paper_title in sections:
    lines += repro_table.render(runs, rows, columns, caption=f"Mean ± std over {runs.seeds} seed(s), in %.",
                                baseline=baseline, paper_title=paper_title, random_init_from=random_init_from,
                                title=title, list_missing=False)
    lines.append("")
  lines += repro_table.missing_runs(runs) if list_missing else []
  return "\n".join(lines).rstrip("\n")


# ----------------------------------------------------------------------------
# launch/perturb_table.sh: the paper's Tables 3-4 (Perturb-SSL and its ablations)

# The paper's CUB-200 figures (Tables 1, 3, 4): linear top-1 at 100 / 50 / 20 % of the labels, rank-1, mAP;
# '-' where the paper gives none. The L_C + alpha L_R ablation is only in its Fig. 5 (Stanford Cars).
PERTURB_ROWS = (
    Row("moco", "MoCo v2", "63.98 / 56.35 / 42.63 / 39.72 / 15.91"),
    Row("perturb_moco", "Perturb-MoCo (full)", "66.17 / 60.84 / 49.69 / 42.06 / 19.70"),
    Row("gradcam_only", "  Grad-CAM noise only (v + v^g)", "66.04 / - / - / 41.02 / -"),
    Row("lowvar_only", "  low-variance noise only (v + v^var)", "65.91 / - / - / 41.69 / -"),
    Row("no_pairs", "  L_C + alpha L_R only (no pairs)", "Fig. 5 (Cars): < 1 point over MoCo v2"),
    Row("simsiam", "SimSiam", "46.75 / - / - / 16.24 / -"),
    Row("perturb_simsiam", "Perturb-SimSiam (full)", "57.80 / - / - / 24.67 / -"))


def _perturb_columns(level: str) -> list[Column]:
  return [Column("linear 100 %", f"probe100_top1_{level}"), Column("linear 50 %", f"probe50_top1_{level}"),
          Column("linear 20 %", f"probe20_top1_{level}"), Column("rank-1", f"rank1_{level}"),
          Column("mAP", f"map_{level}"), _knn(level, "kNN")]


def perturb_table(runs_dir: str, seeds: int) -> str:
  """Fine and super classes: linear probes, retrieval and kNN per method (Tables 3-4), vs MoCo v2."""
  runs = repro_table.gather(runs_dir, [row.name for row in PERTURB_ROWS], seeds)
  super_rows = [dataclasses.replace(row, paper="-") for row in PERTURB_ROWS]  # the paper has no super level
  return _tables(runs, [
      ("Fine classes", PERTURB_ROWS, _perturb_columns("fine"), "paper, CUB-200: linear 100 / 50 / 20 %, rank-1, mAP"),
      ("Super-classes", super_rows, _perturb_columns("super"), "paper")],
      caption="Embedded patches data (8 super-classes x 4 fine classes), test split. Linear: probe on frozen "
              "features with 100 / 50 / 20 % of the train labels; rank-1, mAP: leave-one-out retrieval; kNN: "
              "weighted, train -> test. Paper: ResNet-50 from ImageNet weights, 100 epochs on CUB-200.",
      baseline=PERTURB_ROWS[0], random_init_from=["moco"])


# ----------------------------------------------------------------------------
# launch/perturb_table.sh: does Perturb-SSL help? Each method beside its base on paired seeds

PAIRED_ROWS = (
    Row("moco", "MoCo v2"), Row("perturb_moco", "Perturb-MoCo"),
    Row("simsiam", "SimSiam"), Row("perturb_simsiam", "Perturb-SimSiam"),
    Row("simclr", "SimCLR"), Row("perturb_simclr", "Perturb-SimCLR"),  # the wrapper on the other bases
    Row("byol", "BYOL"), Row("perturb_byol", "Perturb-BYOL"))
PAIRED_VARIANTS = (
    Row("pm_unshuffled", "  Perturb-MoCo, pairs without shuffle-BN (the leak)"),
    Row("pm_sign_loss", "  Perturb-MoCo, Grad-CAM of +L_C (Eq. 3 as printed)"),
    Row("pm_noise_variance", "  Perturb-MoCo, N(0, x) with x a variance"),
    Row("pm_pair_aug", "  Perturb-MoCo, pairs through aug+"),
    Row("no_pairs", "  L_C + alpha L_R only (no pairs)"),
    Row("pm_gradcam_only", "  Perturb-MoCo, Grad-CAM noise only"),
    Row("pm_lowvar_only", "  Perturb-MoCo, low-variance noise only"))
# (method, base): the question first, then what each variant changes against MoCo v2 and against Perturb-MoCo.
PAIRED_COMPARISONS = tuple((PAIRED_ROWS[i + 1], PAIRED_ROWS[i]) for i in range(0, len(PAIRED_ROWS), 2)) + tuple(
    (variant, base) for base in (PAIRED_ROWS[0], PAIRED_ROWS[1]) for variant in PAIRED_VARIANTS)


def _paired_columns(level: str) -> list[Column]:
  return [Column("linear 100 %", f"probe100_top1_{level}"), _knn(level, "kNN"), Column("mAP", f"map_{level}"),
          Column("rank-1", f"rank1_{level}")]


FEATURE_SPREAD = Column("feature spread (collapse: 0)", "feature_spread", scale=1.0, digits=3)


# The variants each protocol of launch/perturb_table.sh runs: from scratch, the readings of the paper's
# ambiguous text; from the source encoder, the paper's own ablations (Table 1's three rows).
PAIRED_PROTOCOL_VARIANTS = {
    "scratch": ("pm_unshuffled", "pm_sign_loss", "pm_noise_variance", "pm_pair_aug", "no_pairs"),
    "source": ("pm_gradcam_only", "pm_lowvar_only", "no_pairs"),
}


def perturb_paired_table(runs_dir: str, seeds: int, variant_seeds: int, protocol: str = "scratch") -> str:
  """Fine and super classes per method (mean ± std), then each method minus its base per seed with the
  paired tests (``repro_table.paired``); the ``protocol``'s variants on ``variant_seeds`` seeds."""
  names = PAIRED_PROTOCOL_VARIANTS[protocol]
  runs = repro_table.gather(runs_dir, [row.name for row in PAIRED_ROWS], seeds)
  variants = repro_table.gather(runs_dir, list(names), variant_seeds)
  runs.results.update(variants.results)
  runs.missing += variants.missing
  rows = PAIRED_ROWS + tuple(row for row in PAIRED_VARIANTS if row.name in names)
  from_source = any("initial" in r for r in runs.results.get("moco", {}).values())
  start = ("the source encoder (model.init_from=source, the paper's protocol; the encoder untouched: the "
           "source-encoder row; at random init: the random-init row)" if from_source else
           "the same random init per seed (MoCo v2's encoder, the random-init row)")
  fine, coarse = _paired_columns("fine") + [FEATURE_SPREAD], _paired_columns("super")
  text = _tables(runs, [("Fine classes", rows, fine, "-"), ("Super-classes", rows, coarse, "-")],
                 caption="Embedded patches data (8 super-classes x 4 fine classes), test split, each run from "
                         f"{start}. Linear: probe on "
                         "frozen features, all train labels; kNN: weighted, train -> test; mAP, rank-1: "
                         "leave-one-out retrieval. Feature spread: std of the l2-normalised test features x "
                         "sqrt(d), SimSiam's collapse check (0: collapsed).",
                 baseline=PAIRED_ROWS[0], random_init_from=["moco"], list_missing=False)
  lines = ["", "## Paired differences", "",
           "Method minus base on each seed both have (same initialisation, data order and augmentations), in "
           "points. *above*: seeds on which the method is higher. *paired t p*: two-sided paired t-test; "
           "*sign p*: exact two-sided sign test (5 seeds cannot reach p < 0.0625); *bootstrap 95 %*: percentile "
           "interval of the mean difference. Verdict: the t-test at 0.05.", ""]
  for level, columns in (("fine", fine), ("super", coarse)):
    lines += [f"### {level} classes", ""]
    for method, base in PAIRED_COMPARISONS:
      if method in rows:
        lines += repro_table.paired(runs, method, base, columns) + [""]
  return text + "\n" + "\n".join(lines + repro_table.missing_runs(runs)).rstrip("\n")


# ----------------------------------------------------------------------------
# launch/base_indi_table.sh: the paper's Tables 1-2 (Base-Indi), per data setting

# The paper's CIFAR-100 numbers: Table 1 (super: top-1, top-5, R@1/2/4/8), Table 2 (fine: R@1/2/4/8).
PAPER_BASE_INDI_SUPER = {"base": [85.60, 97.53, 81.07, 87.02, 90.68, 93.24],
                         "indi": [None, None, 22.42, 32.94, 46.83, 62.62],
                         "base_indi": [86.27, 98.15, 82.38, 87.97, 91.42, 94.10],
                         "eff": [86.08, 97.92, 82.28, 87.51, 91.43, 94.15]}
PAPER_BASE_INDI_FINE = {"base": [37.06, 51.63, 67.04, 79.91], "indi": [13.57, 19.22, 27.08, 37.29],
                        "base_indi": [56.95, 67.97, 77.50, 85.50], "eff": [56.62, 68.04, 77.46, 85.11],
                        "fine": [71.77, 78.80, 84.06, 88.34]}
BASE_INDI_TITLES = (("base", "Base"), ("indi", "Indi"), ("base_indi", "Base-Indi"), ("eff", "Base-Indi_eff"),
                    ("fine", "Fine"))
# The data settings of launch/base_indi_table.sh (subdirectories of its RUNS_DIR): data.background.
BASE_INDI_SETTINGS = {"blank": "blank backgrounds (the paper's synthetic set)",
                      "tinted": "tinted backgrounds, the harder setting (the default data)"}


def _paper(values: Sequence[float | None]) -> str:
  return " / ".join("-" if v is None else f"{v:.2f}" for v in values)


def base_indi_table(runs_dir: str, seeds: int, settings: Sequence[str] = tuple(BASE_INDI_SETTINGS)) -> str:
  """Per data setting: super-class accuracy and Recall@k (Table 1, no Fine row), fine Recall@k (Table 2)."""
  super_rows = [Row(name, title, _paper(PAPER_BASE_INDI_SUPER[name])) for name, title in BASE_INDI_TITLES[:4]]
  fine_rows = [Row(name, title, _paper(PAPER_BASE_INDI_FINE[name])) for name, title in BASE_INDI_TITLES]
  super_cols = [Column("Top1 Acc", "head_top1_super"), Column("Top5 Acc", "head_top5_super")] + [
      Column(f"R@{k}", f"recall@{k}_super") for k in (1, 2, 4, 8)]
  fine_cols = [Column(f"R@{k}", f"recall@{k}_fine") for k in (1, 2, 4, 8)]
  parts, any_run = [], False
  for setting in settings:
    runs = repro_table.gather(os.path.join(runs_dir, setting), [name for name, _ in BASE_INDI_TITLES], seeds)
    any_run = any_run or bool(runs.results)
    if not runs.results:  # listed, so that an interrupted table still shows the settings it has
      parts.append(f"## Data: {setting}, {BASE_INDI_SETTINGS.get(setting, setting)}\n\nNo run yet.\n\n"
                   + "\n".join(repro_table.missing_runs(runs)))
      continue
    parts.append(_tables(runs, [
        (f"{setting}: super-classes (Table 1)", super_rows, super_cols, "paper (CIFAR-100)"),
        (f"{setting}: fine classes (Table 2)", fine_rows, fine_cols, "paper R@1 / 2 / 4 / 8 (CIFAR-100)")],
        caption=f"## Data: {setting}, {BASE_INDI_SETTINGS.get(setting, setting)}\n\nEmbedded patches data (32 "
                "super-classes x 4 fine classes, 1,024 test images), test split. Retrieval: leave-one-out, cosine "
                "similarity on f(x). Paper: CIFAR-100 (ResNet-18, 200 epochs), Tables 1-2.",
        baseline=super_rows[0], random_init_from=["base"]))
  if not any_run:
    raise FileNotFoundError(f"no run of the table under {runs_dir} (settings {list(settings)}: "
                            "<setting>/<row>_seed<s>/results.json)")
  return "\n\n".join(parts)


# ----------------------------------------------------------------------------
# launch/hcl_table.sh: CE vs SupCon vs HCL, genus-level outliers; a small sweep of HCL's lambda

# The paper (DF20-Mini, 182 species in 6 genera, ViT/Swin fine-tuned from ImageNet, one run): genus outliers
# (share) and reduction vs CE. It gives no lambda; ours (supcon.soft_weight) is 0.5 unless the row says.
HCL_ROWS = (Row("ce", "CE", "725 (~20 %)"), Row("supcon", "SupCon", "423 (-41.7 %)"),
            Row("hcl", "HCL (lambda 0.5)", "201 (-72.3 %)"))
HCL_SWEEP = {0.25: "hcl_soft0.25", 0.75: "hcl_soft0.75"}  # lambda -> run name (launch/hcl_table.sh)
HCL_SWEEP_ROWS = tuple(Row(name, f"HCL (lambda {lam})", "-") for lam, name in HCL_SWEEP.items())


def _reduction_vs_ce(section: dict[str, Any], seed: int, runs: repro_table.Runs) -> float | None:
  """1 - outliers / CE's outliers of the same seed (None without that CE run and on CE's row; NaN when CE has no
  outliers)."""
  ce = runs.results.get("ce", {}).get(seed)
  if ce is None or section is ce["trained"]:  # no CE run of this seed; or CE's own row
    return None
  ce_outliers = ce["trained"]["outliers_super"]
  return 1 - section["outliers_super"] / ce_outliers if ce_outliers else float("nan")


HCL_COLUMNS = (Column("genus outliers", "outliers_super", scale=1, digits=1),
               Column("share %", "outlier_share_super"),
               Column("reduction vs CE %", value=_reduction_vs_ce, random_init=False, compare=False),
               _knn("fine", "species kNN top-1 %"), Column("species linear top-1 %", "probe100_top1_fine"),
               _knn("super", "genus kNN top-1 %"))


def hcl_table(runs_dir: str, seeds: int, sweep_seeds: int = 1) -> str:
  """Genus outliers (count, share, per-seed reduction vs CE), species and genus kNN, species probe;
  then the lambda sweep on seeds ``0 .. sweep_seeds - 1`` beside CE and HCL at lambda 0.5."""
  runs = repro_table.gather(runs_dir, [row.name for row in HCL_ROWS], seeds)
  first = next((r for by_seed in runs.results.values() for r in by_seed.values()), None)
  data = first["run"].get("data", "") if first else ""
  text = _tables(runs, [("CE, SupCon, HCL", HCL_ROWS, HCL_COLUMNS, "paper (DF20-Mini)")],
                 caption=f"Embedded hierarchy data ({data}), test split. Outliers: test images whose nearest genus "
                         "centroid (cosine, on f(x)) is not their genus. Reduction vs CE: per seed, 1 - outliers / "
                         "CE's outliers of the same seed. Paper: DF20-Mini (182 species, 6 genera), ViT/Swin "
                         "fine-tuned from ImageNet weights, one run; we train from scratch.",
                 baseline=HCL_ROWS[0], random_init_from=["ce"])
  sweep_rows = (HCL_ROWS[0], HCL_ROWS[2]) + HCL_SWEEP_ROWS
  sweep = repro_table.gather(runs_dir, [row.name for row in sweep_rows], sweep_seeds)
  return text + "\n\n" + _tables(
      sweep, [("A sweep of HCL's lambda (the paper gives none)", sweep_rows, HCL_COLUMNS, "paper")],
      caption=f"lambda = supcon.soft_weight, the weight of a same-genus, other-species pair; seeds 0 .. "
              f"{sweep_seeds - 1}. A sweep reported as such: the main table's lambda (0.5) was not chosen from it.",
      baseline=HCL_ROWS[0], random_init_from=[])


# ----------------------------------------------------------------------------
# launch/class_attentive.sh: method A on the circles, per data setting

CLASS_ATTENTIVE_ROWS = (  # (run name in launch/class_attentive.sh, title, the seed's reported accuracy)
    ("paper", "class-attentive, the paper's loss (positives only) `:paper`", "25 %"),
    ("siamese_paper", "Siamese, positives only (the paper's baseline) `:siamese,positives_only`", "25 %"),
    ("contrastive", "**class-attentive + negatives (margin)** `:contrastive`", "-"),
    ("contrastive_infonce", "class-attentive + negatives (InfoNCE) `:contrastive,infonce`", "-"),
    ("contrastive_own", "class-attentive + negatives, own-class weights `:contrastive,own_weights`", "-"),
    ("contrastive_zero_bias", "class-attentive + negatives, zero initial biases "
     "`:contrastive --config.model.bias_init_std=0`", "-"),
    ("siamese", "Siamese + negatives (margin), no attention `:siamese`", "-"),
    ("supervised", "supervised MLP classifier on raw inputs `:supervised`", "-"),
)


def _available(runs_dir: str, setting: str, name: str, seeds: int) -> list[dict[str, Any]]:
  """The results.json of the seeds of ``RUNS_DIR/<setting>/<name>_seed<s>`` that exist."""
  paths = [os.path.join(runs_dir, setting, f"{name}_seed{s}", "results.json") for s in range(seeds)]
  return [_read(p) for p in paths if os.path.isfile(p)]


def _first_random_init(runs_dir: str, setting: str) -> dict[str, Any] | None:
  """The untrained embedding's metrics of the first seed-0 run that has them.

  launch/class_attentive.sh measures them once per setting (``paper``, seed 0).
  """
  for name, _, _ in CLASS_ATTENTIVE_ROWS:
    res = _available(runs_dir, setting, name, seeds=1)
    if res and "random_init" in res[0]:
      return res[0]["random_init"]
  return None


def class_attentive_table(runs_dir: str, settings: Sequence[str], seeds: int) -> str:
  """One table per data setting; rows without any run are left out, partial rows say their seed count.

  Raises:
    FileNotFoundError: a setting without any run.
  """
  pct = functools.partial(mean_std, scale=100, empty="n/a")
  lines = []
  for setting in settings:
    lines += [f"### Data: {setting}", "",
              "| method | seed's reported | probe on z, held-out | probe on z, all samples (seed's protocol) | "
              "probe on z/\\|z\\|, held-out | classifier or best-match prototype, held-out | "
              "std ratio (0 = collapsed) | eff. rank |",
              "|---|---|---|---|---|---|---|---|"]
    first = None
    for name, title, reported in CLASS_ATTENTIVE_ROWS:
      res = _available(runs_dir, setting, name, seeds)
      if not res:
        continue
      first = first or res[0]
      trained = [r["trained"] for r in res]
      extra_key = ("classifier_test_top1" if "classifier_test_top1" in trained[0]
                   else "prototype_test_top1" if "prototype_test_top1" in trained[0] else None)
      extra = pct([t[extra_key] for t in trained]) if extra_key else "-"
      count = "" if len(res) == seeds else f" ({len(res)} seeds)"
      lines.append(f"| {title}{count} | {reported} | {pct([t['probe_test_top1'] for t in trained])} | "
                   f"{pct([t['probe_all_top1'] for t in trained])} | "
                   f"{pct([t['unit_probe_test_top1'] for t in trained])} | {extra} | "
                   f"{statistics.mean(t['std_ratio'] for t in trained):.3f} | "
                   f"{statistics.mean(t['effective_rank'] for t in trained):.1f} |")
    if first is None:
      raise FileNotFoundError(f"no class-attentive run under {os.path.join(runs_dir, setting)} "
                              f"(<row>_seed<s>/results.json, rows {[n for n, _, _ in CLASS_ATTENTIVE_ROWS]})")
    ref, ri = first["reference"], _first_random_init(runs_dir, setting)
    if ri:
      lines.append(f"| untrained MLP embedding (seed 0) | - | {pct([ri['probe_test_top1']])} | "
                   f"{pct([ri['probe_all_top1']])} | {pct([ri['unit_probe_test_top1']])} | - | "
                   f"{ri['std_ratio']:.3f} | {ri['effective_rank']:.1f} |")
    lines.append(f"| linear classifier on the raw 200-d input | - | {pct([ref['raw_probe_test_top1']])} | "
                 f"{pct([ref['raw_probe_all_top1']])} | - | - | - | - |")
    lines.append(f"| oracle: nearest radius, knows the generator (a ceiling, not a method) | - | "
                 f"{pct([ref['oracle_test_top1']])} | {pct([ref['oracle_all_top1']])} | - | - | - | - |")
    lines += ["", f"Data: {first['run']['data']}. Mean ± std over {seeds} seeds, in %.", ""]
  return "\n".join(lines)


# ----------------------------------------------------------------------------
# launch/learning_check.sh: trained minus random init (fgjax.evaluate.learning_table)


def learning_table(runs_dir: str, curves: str | None = None) -> str:
  """Summary + per-seed table of every ``<name>_seed<k>`` run; draws the kNN curves to ``curves``.

  Raises:
    FileNotFoundError: no finished run under ``runs_dir``.
  """

  runs = learning.find_runs(runs_dir) if os.path.isdir(runs_dir) else {}
  if not runs:
    raise FileNotFoundError(f"no finished runs (<name>_seed<k>/results.json) under {runs_dir}")
  if curves:
    learning.draw_curves(runs, curves)
  text = learning.summary(runs) + "\n" + learning.table(runs)
  return text[:-1] if text.endswith("\n") else text  # the CLI's print adds it back


# launch/gpu_bench.sh: fgjax's MoCo v2 step against PyTorch's, from the two benchmarks' JSON files


def torch_comparison(out_dir: str) -> str:
  """``OUT_DIR/fgjax.json`` (``python -m fgjax.tools.bench``) beside ``OUT_DIR/torch.json``
  (``launch/torch_moco_v2.py``): images/s, ms/step, TFLOP/s, MFU and the ratio."""
  f, t = _read(os.path.join(out_dir, "fgjax.json")), _read(os.path.join(out_dir, "torch.json"))
  m = f["moco"]
  parts = []
  if "breakdown" in f:
    from fgjax.tools import bench_parts  # pylint: disable=import-outside-toplevel
    parts = ["", bench_parts.format_breakdown(f["breakdown"], t.get("breakdown"))]
  return "\n".join([
      f"\nMoCo v2 step, {f['config']} on {f['device']}:",
      f"  fgjax   {m['images_per_s']:9.1f} img/s  {m['ms_per_step']:8.1f} ms/step  "
      f"{m['achieved_tflops']:.1f} TFLOP/s  MFU {100 * m['mfu']:.1f} % "
      f"(ceiling {f['ceiling_tflops_per_device']:.1f} TFLOP/s)",
      f"  PyTorch {t['images_per_s']:9.1f} img/s  {t['ms_per_step']:8.1f} ms/step  ({t['framework']}, {t['device']})",
      f"  fgjax / PyTorch = {m['images_per_s'] / t['images_per_s']:.2f}x images/s"] + parts)


def _settings(args: argparse.Namespace, default: Sequence[str]) -> list[str]:
  return [s for s in args.settings.split(",") if s] if args.settings else list(default)


# name -> (the table of parsed arguments, its data settings: subdirectories of RUNS_DIR, or None)
TABLES: dict[str, tuple[Callable[[argparse.Namespace], str], Sequence[str] | None]] = {
    "torch_comparison": (lambda a: torch_comparison(a.runs_dir), None),
    "perturb": (lambda a: perturb_table(a.runs_dir, a.seeds), None),
    "perturb_paired": (lambda a: perturb_paired_table(a.runs_dir, a.seeds, a.variant_seeds, a.protocol), None),
    "base_indi": (lambda a: base_indi_table(a.runs_dir, a.seeds, _settings(a, BASE_INDI_SETTINGS)),
                  tuple(BASE_INDI_SETTINGS)),
    "hcl": (lambda a: hcl_table(a.runs_dir, a.seeds, a.sweep_seeds), None),
    "class_attentive": (lambda a: class_attentive_table(a.runs_dir, _settings(a, ("default", "hard")), a.seeds),
                        ("default", "hard")),
    "learning": (lambda a: learning_table(a.runs_dir, a.curves), None),
}


# The panels of each table's curves PNG: (run name, title), in the table's row order.
CURVE_PANELS: dict[str, Sequence[tuple[str, str]]] = {
    "perturb": [(row.name, row.title.strip()) for row in PERTURB_ROWS],
    "perturb_paired": [(row.name, row.title.strip()) for row in PAIRED_ROWS + PAIRED_VARIANTS],
    "base_indi": BASE_INDI_TITLES,
    "hcl": [(row.name, row.title) for row in HCL_ROWS + HCL_SWEEP_ROWS],
    "class_attentive": [(name, title.split(" `")[0].strip("*")) for name, title, _ in CLASS_ATTENTIVE_ROWS],
}


def draw_curves(runs_dir: str, settings: Sequence[str] | None, path: str,
                panels: Sequence[tuple[str, str]] = ()) -> None:
  """Every finished run's online kNN curve under ``runs_dir`` (or its ``settings`` subdirectories), one PNG.

  ``panels`` ((run name, title), e.g. ``CURVE_PANELS['hcl']``) orders the panels as the table's rows
  (per setting) and titles them; a run it does not name comes after them, under its run name.
  """
  order = {name: i for i, (name, _) in enumerate(panels)}
  titles = dict(panels)
  found = []  # (sort key, panel title, {seed: workdir})
  for i, setting in enumerate(settings if settings is not None else [None]):
    directory = os.path.join(runs_dir, setting) if setting else runs_dir
    if not os.path.isdir(directory):
      continue
    for name, seeds in learning.find_runs(directory).items():
      title = titles.get(name, name)
      found.append(((i, order.get(name, len(order)), name), f"{setting} / {title}" if setting else title, seeds))
  if not found:
    raise FileNotFoundError(f"no finished runs (<name>_seed<k>/results.json) under {runs_dir} to draw")
  learning.draw_curves({title: seeds for _, title, seeds in sorted(found, key=lambda f: f[0])}, path)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m fgjax.tools.tables", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("table", choices=sorted(TABLES))
  parser.add_argument("runs_dir", metavar="RUNS_DIR")
  parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 of every row (not 'learning')")
  parser.add_argument("--settings", default=None,
                      help="base_indi, class_attentive: data settings (subdirectories of RUNS_DIR), comma-separated; "
                           "default blank,tinted and default,hard")
  parser.add_argument("--curves", default=None, metavar="PNG", help="also draw every run's online kNN curve")
  parser.add_argument("--sweep_seeds", type=int, default=1, help="hcl: seeds 0 .. N-1 of the lambda sweep")
  parser.add_argument("--variant_seeds", type=int, default=3,
                      help="perturb_paired: seeds 0 .. N-1 of the Perturb-MoCo variants")
  parser.add_argument("--protocol", default="scratch", choices=sorted(PAIRED_PROTOCOL_VARIANTS),
                      help="perturb_paired: the runs' start (random init, or the source encoder) and its variants")
  args = parser.parse_args(argv)
  if min(args.seeds, args.sweep_seeds, args.variant_seeds) < 1:
    parser.error(f"--seeds, --sweep_seeds and --variant_seeds must be >= 1, got {args.seeds}, {args.sweep_seeds} "
                 f"and {args.variant_seeds}")
  table, settings = TABLES[args.table]
  try:
    text = table(args)
    if args.curves and args.table != "learning":  # the learning table draws its own
      draw_curves(args.runs_dir, _settings(args, settings) if settings else None, args.curves,
                  CURVE_PANELS.get(args.table, ()))
  except FileNotFoundError as e:
    print(f"{parser.prog}: error: {e}", file=sys.stderr)
    return 2
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
