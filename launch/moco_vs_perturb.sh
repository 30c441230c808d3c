#!/usr/bin/env bash
# MoCo v2 vs Perturb-MoCo v2 on the embedded data, same data/model/schedule, N seeds,
# one table (mean +- std) at the end. The paper-scale ablation table is issue 5.
#
#   bash launch/moco_vs_perturb.sh [NUM_SEEDS=1] [RUNS_DIR=runs/compare] [extra --config.* flags...]
#
# On the 2-core CPU machine each seed takes about 2 min (MoCo) + 6.5 min (Perturb-MoCo), measured.
set -euo pipefail
seeds=${1:-1}; runs=${2:-runs/compare}; shift $(( $# > 2 ? 2 : $# )) || true
for seed in $(seq 0 $((seeds - 1))); do
  for method in moco perturb_moco; do
    python -m fgjax.main --config=configs/${method}.py --workdir="${runs}/${method}_seed${seed}" \
      --config.seed="${seed}" "$@"
  done
done
python -m fgjax.tools.tables moco_vs_perturb "${runs}" --seeds "${seeds}"
