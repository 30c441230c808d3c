#!/usr/bin/env bash
# Does every CPU default learn? Each default config (no flags but the seed) trained for
# NUM_SEEDS seeds, then one table of trained vs random init per seed (mean +- std) and one
# figure of all the online kNN curves: RUNS_DIR/learning.md, RUNS_DIR/learning_curves.png.
#
#   bash launch/learning_check.sh [NUM_SEEDS=3] [RUNS_DIR=runs/learning] [NAMES...]
#
# NAMES (default: all below) picks entries. Wall times on the 2-core CPU machine are in
# docs/recipes.md; an interrupted check resumes (finished runs are skipped).
set -euo pipefail
seeds=${1:-3}; runs=${2:-runs/learning}; shift $(( $# > 2 ? 2 : $# )) || true
declare -A CONFIGS=(
  [perturb_moco]=configs/perturb_moco.py   # the main job
  [moco]=configs/moco.py
  [simsiam]=configs/simsiam.py
  [perturb_simsiam]=configs/perturb_simsiam.py
  [simclr]=configs/simclr.py
  [perturb_simclr]=configs/perturb_simclr.py
  [byol]=configs/byol.py
  [perturb_byol]=configs/perturb_byol.py
  [ce]=configs/ce.py
  [supcon]=configs/supcon.py
  [hcl]=configs/hcl.py
  [base]=configs/base_indi.py:base
  [fine]=configs/base_indi.py:fine
  [indi]=configs/base_indi.py:indi
  [base_indi]=configs/base_indi.py
  [base_indi_eff]=configs/base_indi.py:eff
)
names=("$@")
[[ ${#names[@]} -eq 0 ]] && names=(perturb_moco moco simsiam perturb_simsiam simclr perturb_simclr byol perturb_byol ce supcon hcl base fine indi base_indi base_indi_eff)
mkdir -p "${runs}"
source "$(dirname "$0")/table_runs.sh"
for seed in $(seq 0 $((seeds - 1))); do
  for name in "${names[@]}"; do
    run_table_entry "${name}" "${seed}" "${runs}" "${CONFIGS[${name}]}"
  done
done
python -m fgjax.tools.tables learning "${runs}" --curves "${runs}/learning_curves.png" | tee "${runs}/learning.md"
