#!/usr/bin/env bash
# The Perturb-SSL comparison of the paper's Tables 3 and 4 on the embedded data:
# MoCo v2, Perturb-MoCo and its three ablations, SimSiam, Perturb-SimSiam; N seeds each,
# one Markdown table of mean +- std at the end (also written to RUNS_DIR/table.md).
#
#   bash launch/perturb_table.sh [NUM_SEEDS=3] [RUNS_DIR=runs/table] [extra --config.* flags...]
#
# Sizing: the `compare` settings below (4 epochs of the default data and model, 20 decoder
# pre-training steps, no online monitor): 3 seeds x 7 runs took about 65 min on the quiet 2-core
# CPU machine (measured; README "Reproduction"). A finished run is
# skipped when its results.json exists, so the script can be re-run after an interruption.
set -euo pipefail
. "$(dirname "$0")/table_runs.sh"
seeds=${1:-3}; runs=${2:-runs/table}; shift $(( $# > 2 ? 2 : $# )) || true
compare=(--config.optim.num_epochs=4 --config.perturb.decoder_pretrain_steps=20 --config.eval.knn_every=0)
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
    if [[ "${name}" != moco || "${seed}" != 0 ]]; then
      extra+=(--config.eval.random_init_baseline=False)  # the floor once is enough
    fi
    run_table_entry "${name}" "${seed}" "${runs}" "${config}" "${compare[@]}" "${extra[@]}" "$@"
  done
done
echo "total: $(( $(date +%s) - start )) s" | tee -a "${runs}/times.txt"
python - "$runs" "$seeds" <<'PY' | tee "${runs}/table.md"
import json, statistics as st, sys
runs, seeds = sys.argv[1], int(sys.argv[2])
cols = [("probe100_top1_fine", "linear 100 %"), ("probe50_top1_fine", "linear 50 %"),
        ("probe20_top1_fine", "linear 20 %"), ("rank1_fine", "rank-1"), ("map_fine", "mAP"),
        ("knn20_top1_fine", "kNN")]
rows = [("MoCo v2", "moco"), ("Perturb-MoCo (full)", "perturb_moco"),
        ("  Grad-CAM noise only (v + v^g)", "gradcam_only"),
        ("  low-variance noise only (v + v^var)", "lowvar_only"),
        ("  L_C + alpha L_R only (no pairs)", "no_pairs"),
        ("SimSiam", "simsiam"), ("Perturb-SimSiam (full)", "perturb_simsiam")]
def cell(values):
    values = [100 * v for v in values]
    return f"{st.mean(values):.2f}" + (f" ± {st.stdev(values):.2f}" if len(values) > 1 else "")
print(f"Embedded patches data, fine classes (32), test split; mean ± std over {seeds} seed(s), in %.\n")
print("| method | " + " | ".join(title for _, title in cols) + " |")
print("|---|" + "---|" * len(cols))
base = json.load(open(f"{runs}/moco_seed0/results.json")).get("random_init")
if base:
    print("| random init (seed 0) | " + " | ".join(f"{100 * base[k]:.2f}" for k, _ in cols) + " |")
for title, name in rows:
    res = [json.load(open(f"{runs}/{name}_seed{s}/results.json"))["trained"] for s in range(seeds)]
    print(f"| {title} | " + " | ".join(cell([r[k] for r in res]) for k, _ in cols) + " |")
PY
