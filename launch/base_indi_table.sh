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
python -m fgjax.tools.tables base_indi "${runs}" --seeds "${seeds}" | tee "${runs}/table.md"
