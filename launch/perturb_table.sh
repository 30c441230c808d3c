#!/usr/bin/env bash
# The Perturb-SSL comparison of the paper's Tables 3 and 4 on the embedded data:
# MoCo v2, Perturb-MoCo and its three ablations, SimSiam, Perturb-SimSiam; N seeds each,
# one Markdown table of mean +- std at the end (also written to RUNS_DIR/table.md).
#
#   bash launch/perturb_table.sh [NUM_SEEDS=3] [RUNS_DIR=runs/table] [extra --config.* flags...]
#
# Sizing: the `compare` settings below (4 epochs of the default data and model, 20 decoder
# pre-training steps, no online monitor): 3 seeds x 7 runs took about 65 min on the quiet 2-core
# CPU machine (measured; docs/perturb_ssl.md "Reproduction"). A finished run is
# skipped when its results.json exists, so the script can be re-run after an interruption.
set -euo pipefail
. "$(dirname "$0")/table_runs.sh"
seeds=${1:-3}; runs=${2:-runs/table}; shift $(( $# > 2 ? 2 : $# )) || true
compare=(--config.optim.num_epochs=4 --config.eval.knn_every=0)
# Only the Perturb runs have a decoder: MoCo's and SimSiam's configs have no perturb block and
# refuse the field.
perturb_compare=(--config.perturb.decoder_pretrain_steps=20)
runs_list=(
  "moco:configs/moco.py"
  "perturb_moco:configs/perturb_moco.py"
  "gradcam_only:configs/perturb_moco.py:gradcam_only"
  "lowvar_only:configs/perturb_moco.py:lowvar_only"
  "no_pairs:configs/perturb_moco.py:no_pairs"
  "simsiam:configs/simsiam.py"
  "perturb_simsiam:configs/perturb_simsiam.py"
)
mkdir -p "${runs}"
start=$(date +%s)
for seed in $(seq 0 $((seeds - 1))); do
  for entry in "${runs_list[@]}"; do
    name=${entry%%:*}; config=${entry#*:}
    extra=()
    if [[ "${name}" != moco && "${name}" != simsiam ]]; then
      extra+=("${perturb_compare[@]}")
    fi
    if [[ "${name}" != moco || "${seed}" != 0 ]]; then
      extra+=(--config.eval.random_init_baseline=False)  # the floor once is enough
    fi
    run_table_entry "${name}" "${seed}" "${runs}" "${config}" "${compare[@]}" "${extra[@]}" "$@"
  done
done
echo "total: $(( $(date +%s) - start )) s" | tee -a "${runs}/times.txt"
python -m fgjax.tools.tables perturb "${runs}" --seeds "${seeds}" | tee "${runs}/table.md"
