r"""The Markdown tables of the reproduction scripts in ``launch/``, from their runs' results.json.

  python -m fgjax.tools.tables perturb RUNS_DIR --seeds 3          # launch/perturb_table.sh
  python -m fgjax.tools.tables base_indi RUNS_DIR --seeds 3        # launch/base_indi_table.sh
  python -m fgjax.tools.tables hcl RUNS_DIR --seeds 3              # launch/hcl_table.sh
  python -m fgjax.tools.tables moco_vs_perturb RUNS_DIR --seeds 1  # launch/moco_vs_perturb.sh
  python -m fgjax.tools.tables class_attentive RUNS_DIR --seeds 3 [--settings default,hard]
  python -m fgjax.tools.tables learning RUNS_DIR [--curves PNG]    # launch/learning_check.sh

prints the table on stdout (the scripts ``tee`` it into ``RUNS_DIR/table.md`` or
``learning.md``). Runs are ``RUNS_DIR/<row>_seed<s>/results.json`` for seeds
``0 .. N-1`` (the class-attentive runs one level deeper:
``RUNS_DIR/<setting>/<row>_seed<s>``). Every cell over seeds is :func:`mean_std`
(percent for accuracies). A missing run is an error naming every missing file
(exit 2), except in the class-attentive table, which shows the runs there are
and the seed count of a partial row (a setting without any run is the error),
and the learning table, which takes whatever ``<name>_seed<k>`` runs exist.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
from typing import Any
from typing import Callable
from typing import Sequence

from fgjax.evaluate import learning_table as learning
from fgjax.evaluate.stats import mean_std


def _read(path: str) -> dict[str, Any]:
  with open(path) as f:
    return json.load(f)


def collect(runs_dir: str, names: Sequence[str], seeds: int) -> dict[str, list[dict[str, Any]]]:
  """``{name: [results.json of RUNS_DIR/<name>_seed<s> for s in 0..seeds-1]}``.

  Raises:
    FileNotFoundError: some run has no results.json (the message lists them all).
  """
  paths = {name: [os.path.join(runs_dir, f"{name}_seed{s}", "results.json") for s in range(seeds)]
           for name in names}
  missing = [p for ps in paths.values() for p in ps if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"{len(missing)} run(s) of the table have no results.json (unfinished or "
                            f"never run; --seeds {seeds}): {', '.join(missing)}")
  return {name: [_read(p) for p in ps] for name, ps in paths.items()}


# ----------------------------------------------------------------------------
# launch/perturb_table.sh: the paper's Tables 3-4 (Perturb-SSL and its ablations)

PERTURB_ROWS = (("MoCo v2", "moco"), ("Perturb-MoCo (full)", "perturb_moco"),
                ("  Grad-CAM noise only (v + v^g)", "gradcam_only"),
                ("  low-variance noise only (v + v^var)", "lowvar_only"),
                ("  L_C + alpha L_R only (no pairs)", "no_pairs"),
                ("SimSiam", "simsiam"), ("Perturb-SimSiam (full)", "perturb_simsiam"))
_PERTURB_COLS = (("probe100_top1_fine", "linear 100 %"), ("probe50_top1_fine", "linear 50 %"),
                 ("probe20_top1_fine", "linear 20 %"), ("rank1_fine", "rank-1"), ("map_fine", "mAP"),
                 ("knn20_top1_fine", "kNN"))


def perturb_table(runs_dir: str, seeds: int) -> str:
  """Fine-class linear probes, retrieval and kNN per method; random init from ``moco_seed0``."""
  res = collect(runs_dir, [name for _, name in PERTURB_ROWS], seeds)
  lines = [f"Embedded patches data, fine classes (32), test split; mean ± std over {seeds} seed(s), in %.", "",
           "| method | " + " | ".join(title for _, title in _PERTURB_COLS) + " |",
           "|---|" + "---|" * len(_PERTURB_COLS)]
  base = res["moco"][0].get("random_init")
  if base:
    lines.append("| random init (seed 0) | " + " | ".join(f"{100 * base[k]:.2f}" for k, _ in _PERTURB_COLS) + " |")
  for title, name in PERTURB_ROWS:
    trained = [r["trained"] for r in res[name]]
    lines.append(f"| {title} | " + " | ".join(mean_std([t[k] for t in trained], scale=100)
                                              for k, _ in _PERTURB_COLS) + " |")
  return "\n".join(lines)


# ----------------------------------------------------------------------------
# launch/base_indi_table.sh: the paper's Tables 1-2 (Base-Indi)

BASE_INDI_ROWS = (("Base", "base"), ("Indi", "indi"), ("Base-Indi", "base_indi"), ("Base-Indi_eff", "eff"),
                  ("Fine", "fine"))
# The paper's CIFAR-100 numbers: Table 1 (super: top-1, top-5, R@1/2/4/8), Table 2 (fine: R@1/2/4/8).
PAPER_BASE_INDI_SUPER = {"base": [85.60, 97.53, 81.07, 87.02, 90.68, 93.24],
                         "indi": [None, None, 22.42, 32.94, 46.83, 62.62],
                         "base_indi": [86.27, 98.15, 82.38, 87.97, 91.42, 94.10],
                         "eff": [86.08, 97.92, 82.28, 87.51, 91.43, 94.15]}
PAPER_BASE_INDI_FINE = {"base": [37.06, 51.63, 67.04, 79.91], "indi": [13.57, 19.22, 27.08, 37.29],
                        "base_indi": [56.95, 67.97, 77.50, 85.50], "eff": [56.62, 68.04, 77.46, 85.11],
                        "fine": [71.77, 78.80, 84.06, 88.34]}


def base_indi_table(runs_dir: str, seeds: int) -> str:
  """Super-class accuracy and Recall@k (Table 1, no Fine row), fine Recall@k (Table 2)."""
  res = collect(runs_dir, [name for _, name in BASE_INDI_ROWS], seeds)

  def cell(trained, key):
    return mean_std([t[key] for t in trained], scale=100) if key in trained[0] else "-"

  def paper(values):
    return " / ".join("-" if v is None else f"{v:.2f}" for v in values)

  def rows(names, cols, paper_values):
    for title, name in names:
      trained = [r["trained"] for r in res[name]]
      yield (f"| {title} | " + " | ".join(cell(trained, k) for k, _ in cols)
             + f" | {paper(paper_values[name])} |")

  super_cols = [("head_top1_super", "Top1 Acc"), ("head_top5_super", "Top5 Acc")] + [
      (f"recall@{k}_super", f"R@{k}") for k in (1, 2, 4, 8)]
  fine_cols = [(f"recall@{k}_fine", f"R@{k}") for k in (1, 2, 4, 8)]
  return "\n".join([
      f"Embedded patches data (32 super-classes x 4 fine classes, 1,024 test images); mean ± std over "
      f"{seeds} seed(s), in %. Retrieval: leave-one-out on the test split, cosine similarity on f(x). "
      "Paper: CIFAR-100 (ResNet-18, 200 epochs), Tables 1-2.", "",
      "Super-classes (Table 1):", "",
      "| method | " + " | ".join(t for _, t in super_cols) + " | paper (CIFAR-100) |",
      "|---|" + "---|" * (len(super_cols) + 1),
      *rows(BASE_INDI_ROWS[:4], super_cols, PAPER_BASE_INDI_SUPER),
      "", "Fine classes (Table 2):", "",
      "| method | " + " | ".join(t for _, t in fine_cols) + " | paper R@1 / 2 / 4 / 8 (CIFAR-100) |",
      "|---|" + "---|" * (len(fine_cols) + 1),
      *rows(BASE_INDI_ROWS, fine_cols, PAPER_BASE_INDI_FINE)])


# ----------------------------------------------------------------------------
# launch/hcl_table.sh: CE vs SupCon vs HCL, genus-level outliers

HCL_ROWS = (("CE", "ce"), ("SupCon", "supcon"), ("HCL", "hcl"))
PAPER_HCL = {"ce": "725 (~20 %)", "supcon": "423 (-41.7 %)", "hcl": "201 (-72.3 %)"}  # DF20-Mini


def hcl_table(runs_dir: str, seeds: int) -> str:
  """Genus outliers (count, share, per-seed reduction vs CE), species kNN and linear probe."""
  res = collect(runs_dir, [name for _, name in HCL_ROWS], seeds)
  ce_outliers = [r["trained"]["outliers_super"] for r in res["ce"]]
  lines = [f"Embedded hierarchy data ({res['ce'][0]['run']['data']}); test split; mean ± std over {seeds} "
           "seed(s). Outliers: test images whose nearest genus centroid (cosine, on f(x)) is not their genus. "
           "Reduction vs CE: per seed, 1 - outliers / CE's outliers of the same seed. "
           "Paper: DF20-Mini (182 species, 6 genera), ViT/Swin, one run.", "",
           "| method | genus outliers | share % | reduction vs CE % | species kNN top-1 % | "
           "species linear top-1 % | paper (DF20-Mini) |",
           "|---|---|---|---|---|---|---|"]
  for title, name in HCL_ROWS:
    t = [r["trained"] for r in res[name]]
    knn = [k for k in t[0] if k.startswith("knn") and k.endswith("_top1_fine")][0]  # the run's kNN k
    reduction = [100 * (1 - o["outliers_super"] / c) if c else float("nan") for o, c in zip(t, ce_outliers)]
    lines.append(f"| {title} | {mean_std([x['outliers_super'] for x in t], digits=1)} | "
                 f"{mean_std([x['outlier_share_super'] for x in t], scale=100)} | "
                 f"{'-' if name == 'ce' else mean_std(reduction, digits=1)} | "
                 f"{mean_std([x[knn] for x in t], scale=100)} | "
                 f"{mean_std([x['probe100_top1_fine'] for x in t], scale=100)} | {PAPER_HCL[name]} |")
  return "\n".join(lines)


# ----------------------------------------------------------------------------
# launch/moco_vs_perturb.sh: MoCo v2 vs Perturb-MoCo v2

_MOCO_VS_PERTURB_KEYS = ("knn20_top1_fine", "probe100_top1_fine", "probe20_top1_fine", "rank1_fine", "rank5_fine",
                         "map_fine", "knn20_top1_super", "map_super")


def moco_vs_perturb_table(runs_dir: str, seeds: int) -> str:
  """Rows moco, random init (of the MoCo runs that have it), perturb_moco; columns are metric keys."""
  res = collect(runs_dir, ["moco", "perturb_moco"], seeds)
  rows = {"moco": [r["trained"] for r in res["moco"]],
          "random init": [r["random_init"] for r in res["moco"] if "random_init" in r],
          "perturb_moco": [r["trained"] for r in res["perturb_moco"]]}
  lines = ["| encoder | " + " | ".join(_MOCO_VS_PERTURB_KEYS) + " |", "|---|" + "---|" * len(_MOCO_VS_PERTURB_KEYS)]
  for name, results in rows.items():
    if results:
      lines.append(f"| {name} | " + " | ".join(mean_std([r[k] for r in results], scale=100)
                                               for k in _MOCO_VS_PERTURB_KEYS) + " |")
  return "\n".join(lines)


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
  return "\n".join([
      f"\nMoCo v2 step, {f['config']} on {f['device']}:",
      f"  fgjax   {m['images_per_s']:9.1f} img/s  {m['ms_per_step']:8.1f} ms/step  "
      f"{m['achieved_tflops']:.1f} TFLOP/s  MFU {100 * m['mfu']:.1f} % "
      f"(ceiling {f['ceiling_tflops_per_device']:.1f} TFLOP/s)",
      f"  PyTorch {t['images_per_s']:9.1f} img/s  {t['ms_per_step']:8.1f} ms/step  ({t['framework']}, {t['device']})",
      f"  fgjax / PyTorch = {m['images_per_s'] / t['images_per_s']:.2f}x images/s"])


# name -> the table of parsed arguments
TABLES: dict[str, Callable[[argparse.Namespace], str]] = {
    "torch_comparison": lambda a: torch_comparison(a.runs_dir),
    "perturb": lambda a: perturb_table(a.runs_dir, a.seeds),
    "base_indi": lambda a: base_indi_table(a.runs_dir, a.seeds),
    "hcl": lambda a: hcl_table(a.runs_dir, a.seeds),
    "moco_vs_perturb": lambda a: moco_vs_perturb_table(a.runs_dir, a.seeds),
    "class_attentive": lambda a: class_attentive_table(a.runs_dir, [s for s in a.settings.split(",") if s], a.seeds),
    "learning": lambda a: learning_table(a.runs_dir, a.curves),
}


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m fgjax.tools.tables", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("table", choices=sorted(TABLES))
  parser.add_argument("runs_dir", metavar="RUNS_DIR")
  parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 of every row (not 'learning')")
  parser.add_argument("--settings", default="default,hard", help="class_attentive: data settings (subdirectories)")
  parser.add_argument("--curves", default=None, metavar="PNG", help="learning: also draw every run's kNN curve")
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error(f"--seeds must be >= 1, got {args.seeds}")
  try:
    text = TABLES[args.table](args)
  except FileNotFoundError as e:
    print(f"{parser.prog}: error: {e}", file=sys.stderr)
    return 2
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
