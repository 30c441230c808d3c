#!/usr/bin/env bash
# Seed B's comparison (the paper's Tables 1-2) on the embedded patches data: Base, Indi,
# Base-Indi, Base-Indi_eff and Fine, N seeds each; Markdown tables of mean +- std at the end
# (also written to RUNS_DIR/table.md), beside the paper's CIFAR-100 numbers.
#
#   bash launch/base_indi_table.sh [NUM_SEEDS=3] [RUNS_DIR=runs/base_indi] [extra --config.* flags...]
#
# Each run is configs/base_indi.py's default (quarter-width ResNet-18, 32 px, 32 super x 4 fine
# classes, 2,048 training images) unless extra flags change it. A finished run is skipped
# when its results.json exists, so the script can be re-run after an interruption.
set -euo pipefail
. "$(dirname "$0")/table_runs.sh"
seeds=${1:-3}; runs=${2:-runs/base_indi}; shift $(( $# > 2 ? 2 : $# )) || true
methods=(base indi base_indi eff fine)
mkdir -p "${runs}"
start=$(date +%s)
for seed in $(seq 0 $((seeds - 1))); do
  for name in "${methods[@]}"; do
    run_table_entry "${name}" "${seed}" "${runs}" "configs/base_indi.py:${name}" "$@"
  done
done
echo "total: $(( $(date +%s) - start )) s" | tee -a "${runs}/times.txt"
python - "$runs" "$seeds" <<'PY' | tee "${runs}/table.md"
import json, statistics as st, sys
runs, seeds = sys.argv[1], int(sys.argv[2])
names = [("Base", "base"), ("Indi", "indi"), ("Base-Indi", "base_indi"), ("Base-Indi_eff", "eff"),
         ("Fine", "fine")]
# The paper's CIFAR-100 numbers (Tables 1 and 2), for the layout and the comparison.
paper_super = {"base": [85.60, 97.53, 81.07, 87.02, 90.68, 93.24], "indi": [None, None, 22.42, 32.94, 46.83, 62.62],
               "base_indi": [86.27, 98.15, 82.38, 87.97, 91.42, 94.10],
               "eff": [86.08, 97.92, 82.28, 87.51, 91.43, 94.15]}
paper_fine = {"base": [37.06, 51.63, 67.04, 79.91], "indi": [13.57, 19.22, 27.08, 37.29],
              "base_indi": [56.95, 67.97, 77.50, 85.50], "eff": [56.62, 68.04, 77.46, 85.11],
              "fine": [71.77, 78.80, 84.06, 88.34]}
def load(name):
    return [json.load(open(f"{runs}/{name}_seed{s}/results.json"))["trained"] for s in range(seeds)]
def cell(res, key):
    if key not in res[0]:
        return "-"
    values = [100 * r[key] for r in res]
    return f"{st.mean(values):.2f}" + (f" ± {st.stdev(values):.2f}" if len(values) > 1 else "")
def paper(values):
    return " / ".join("-" if v is None else f"{v:.2f}" for v in values)
print(f"Embedded patches data (32 super-classes x 4 fine classes, 1,024 test images); mean ± std over "
      f"{seeds} seed(s), in %. Retrieval: leave-one-out on the test split, cosine similarity on f(x). "
      "Paper: CIFAR-100 (ResNet-18, 200 epochs), Tables 1-2.\n")
print("Super-classes (Table 1):\n")
cols = [("head_top1_super", "Top1 Acc"), ("head_top5_super", "Top5 Acc")] + [
    (f"recall@{k}_super", f"R@{k}") for k in (1, 2, 4, 8)]
print("| method | " + " | ".join(t for _, t in cols) + " | paper (CIFAR-100) |")
print("|---|" + "---|" * (len(cols) + 1))
for title, name in names[:4]:
    res = load(name)
    print(f"| {title} | " + " | ".join(cell(res, k) for k, _ in cols) + f" | {paper(paper_super[name])} |")
print("\nFine classes (Table 2):\n")
cols = [(f"recall@{k}_fine", f"R@{k}") for k in (1, 2, 4, 8)]
print("| method | " + " | ".join(t for _, t in cols) + " | paper R@1 / 2 / 4 / 8 (CIFAR-100) |")
print("|---|" + "---|" * (len(cols) + 1))
for title, name in names:
    res = load(name)
    print(f"| {title} | " + " | ".join(cell(res, k) for k, _ in cols) + f" | {paper(paper_fine[name])} |")
PY
