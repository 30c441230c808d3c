#!/usr/bin/env bash
# The Perturb-SSL comparison of the paper's Tables 3 and 4 on the embedded data: MoCo v2,
# Perturb-MoCo and its three ablations, SimSiam, Perturb-SimSiam; N seeds each. Writes
# RUNS_DIR/table.md (fine and super classes: linear probe at 100/50/20 %, rank-1, mAP, kNN,
# mean +- std beside the paper's CUB-200 figures, the difference to MoCo v2 and whether it lies
# outside the seed spread, every seed's values) and RUNS_DIR/curves.png (every run's online kNN).
#
#   bash launch/perturb_table.sh [NUM_SEEDS=2] [RUNS_DIR=runs/perturb_table] [extra --config.* flags...]
#   BUDGET=gpu bash launch/perturb_table.sh 3 runs/perturb_table_gpu        # the long budget, one GPU
#
# Budgets (the defaults' data, model and recipe; docs/results.md "Reproduction tables"):
# - cpu: 25 epochs (800 steps), the main job's default. NOT converged: MoCo v2 gained 22 points
#   of fine kNN from 25 to 50 epochs, and 50 epochs of the seven rows take about 110 minutes a
#   seed on 2 cores. 2 seeds at 25 epochs: about 100 minutes, the longest that fits 2 hours.
# - gpu: 200 epochs (6,400 steps).
# A finished run is skipped when its results.json exists, so the script can be re-run after an
# interruption (or with more seeds).
set -euo pipefail
. "$(dirname "$0")/table_runs.sh"
seeds=${1:-2}; runs=${2:-runs/perturb_table}; shift $(( $# > 2 ? 2 : $# )) || true
cpu=(--config.optim.num_epochs=25 --config.eval.knn_every=100)
gpu=(--config.optim.num_epochs=200 --config.eval.knn_every=400)
table_budget cpu gpu
runs_list=(
  "moco:configs/moco.py"
  "perturb_moco:configs/perturb_moco.py"
  "gradcam_only:configs/perturb_moco.py:gradcam_only"
  "lowvar_only:configs/perturb_moco.py:lowvar_only"
  "no_pairs:configs/perturb_moco.py:no_pairs"
  "simsiam:configs/simsiam.py"
  "perturb_simsiam:configs/perturb_simsiam.py"
)
start=$(date +%s)
for seed in $(seq 0 $((seeds - 1))); do
  for entry in "${runs_list[@]}"; do
    name=${entry%%:*}; config=${entry#*:}
    extra=()
    if [[ "${name}" != moco ]]; then
      extra+=(--config.eval.random_init_baseline=False)  # the random-init row: MoCo's encoder, every seed
    fi
    run_table_entry "${name}" "${seed}" "${runs}" "${config}" "${budget[@]}" "${extra[@]}" "$@"
  done
done
finish_table perturb "${runs}" "${seeds}" "${start}"
