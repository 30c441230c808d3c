#!/usr/bin/env bash
# Seed H's comparison on the embedded two-level hierarchy data: CE vs SupCon vs HCL, N seeds,
# the same backbone, data and augmentation; one Markdown table at the end (also written to
# RUNS_DIR/table.md): genus-level nearest-centroid outliers (count, share, reduction vs CE),
# species-level kNN and linear-probe accuracy, beside the seed paper's DF20-Mini figures.
#
#   bash launch/hcl_table.sh [NUM_SEEDS=3] [RUNS_DIR=runs/hcl] [extra --config.* flags...]
#
# e.g. `bash launch/hcl_table.sh 3 runs/hcl_vit --config.model.encoder=vit_tiny` (add the
# `vit` preset's optimizer flags) for the ViT backbone. A finished run is skipped when its
# results.json exists, so the script can be re-run after an interruption.
set -euo pipefail
. "$(dirname "$0")/table_runs.sh"
seeds=${1:-3}; runs=${2:-runs/hcl}; shift $(( $# > 2 ? 2 : $# )) || true
methods=(ce supcon hcl)
mkdir -p "${runs}"
start=$(date +%s)
for seed in $(seq 0 $((seeds - 1))); do
  for name in "${methods[@]}"; do
    run_table_entry "${name}" "${seed}" "${runs}" "configs/${name}.py" "$@"
  done
done
echo "total: $(( $(date +%s) - start )) s" | tee -a "${runs}/times.txt"
python -m fgjax.tools.tables hcl "${runs}" --seeds "${seeds}" | tee "${runs}/table.md"
