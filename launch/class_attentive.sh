#!/usr/bin/env bash
# Class-attentive contrastive learning (seed A) on the embedded circles data: every variant x N seeds,
# on the default data and on the `hard` setting (closer radii), then one Markdown table of
# mean +- std beside the seed's 25 % (also written to RUNS_DIR/table.md), and a t-SNE picture of
# the held-out embeddings per method (seed 0: RUNS_DIR/<setting>/<method>_seed0/tsne.png).
#
#   . .venv/bin/activate && bash launch/class_attentive.sh [RUNS_DIR=runs/class_attentive] [NUM_SEEDS=3] [extra --config.* flags...]
#
# Sizing: 8 variants x 3 seeds x 2 data settings = 48 runs of 20 epochs, 20-35 s each on the
# 2-core CPU machine (README "Class-attentive contrastive learning"). A finished run is skipped
# when its results.json exists, so the script can be re-run after an interruption.
set -euo pipefail
runs=${1:-runs/class_attentive}; seeds=${2:-3}; shift $(( $# > 2 ? 2 : $# )) || true
config=configs/class_attentive.py
runs_list=(  # name:presets[:extra flag]  (names are the rows of fgjax.tools.tables.CLASS_ATTENTIVE_ROWS)
  "paper:paper"
  "siamese_paper:siamese,positives_only"
  "contrastive:contrastive"
  "contrastive_infonce:contrastive,infonce"
  "contrastive_own:contrastive,own_weights"
  "contrastive_zero_bias:contrastive:--config.model.bias_init_std=0.0"
  "siamese:siamese"
  "supervised:supervised"
)
settings=("default:" "hard:,hard")
mkdir -p "${runs}"
start=$(date +%s)
for setting_entry in "${settings[@]}"; do
  setting=${setting_entry%%:*}; setting_presets=${setting_entry#*:}
  mkdir -p "${runs}/${setting}"
  for seed in $(seq 0 $((seeds - 1))); do
    for entry in "${runs_list[@]}"; do
      IFS=: read -r name presets flag <<< "${entry}"
      workdir="${runs}/${setting}/${name}_seed${seed}"
      [[ -f "${workdir}/results.json" ]] && continue
      extra=()
      [[ -n "${flag}" ]] && extra+=("${flag}")
      if [[ "${seed}" == 0 ]]; then
        extra+=(--config.eval.tsne=True)  # one picture per method
      fi
      if [[ "${seed}" != 0 || "${name}" != paper ]]; then
        extra+=(--config.eval.random_init_baseline=False)  # the untrained floor once per setting
      fi
      t0=$(date +%s)
      python -m fgjax.main --config="${config}:${presets}${setting_presets}" --workdir="${workdir}" \
        --config.seed="${seed}" "${extra[@]}" "$@" 2> "${workdir}.log" || { tail -3 "${workdir}.log"; exit 1; }
      echo "${setting} ${name} seed ${seed}: $(( $(date +%s) - t0 )) s" | tee -a "${runs}/times.txt"
    done
  done
done
echo "total: $(( $(date +%s) - start )) s" | tee -a "${runs}/times.txt"
python -m fgjax.tools.tables class_attentive "${runs}" --seeds "${seeds}" --settings default,hard \
  | tee "${runs}/table.md"
