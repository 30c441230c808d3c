#!/usr/bin/env bash
# Does Perturb-SSL help? The paired comparison on the embedded data: each method beside its base on
# the same seeds, where a seed fixes the initialisation (the encoder of MoCo v2, Perturb-MoCo,
# SimSiam and Perturb-SimSiam is the same) and the data order and augmentations of every joint step.
# Writes RUNS_DIR/table.md (fine and super classes: linear probe at 100/50/20 %, rank-1, mAP, kNN;
# mean +- std, then per method and base the per-seed differences, the seeds above the base, a
# paired t-test, a sign test and a bootstrap interval; the feature-spread collapse check) and
# RUNS_DIR/curves.png (every run's online kNN).
#
#   bash launch/perturb_table.sh [SEEDS=5] [RUNS_DIR=runs/perturb_paired] [extra --config.* flags...]
#   VARIANT_SEEDS=3 bash launch/perturb_table.sh 5 runs/perturb_paired     # the variants on 3 seeds
#   PROTOCOL=source bash launch/perturb_table.sh 5 runs/perturb_source     # the paper's protocol (below)
#   BUDGET=gpu bash launch/perturb_table.sh 5 runs/perturb_paired_gpu
#   cp -r docs/tables/perturb_paired_cpu runs/perturb_paired    # resume from the committed runs
#
# Order: the pairs that decide the question first, seed by seed (MoCo v2 and Perturb-MoCo, then
# SimSiam and Perturb-SimSiam), then the variants of Perturb-MoCo on VARIANT_SEEDS seeds, then
# SimCLR / Perturb-SimCLR and BYOL / Perturb-BYOL (the wrapper on the other bases). Variants: without
# the pair loss's shuffle-BN (the leak), Eq. 3's printed sign, the noise scale read as a variance,
# the pairs augmented, and L_C + alpha L_R alone. A finished run is skipped when its results.json
# exists, so the script resumes after an interruption (and a table can span machines: commit
# each finished run's results.json, see docs/tables/).
#
# Protocols (PROTOCOL, docs/perturb_ssl.md):
# - scratch (default): every encoder from a random initialisation (model.init_from=none); the variants
#   are the readings of the paper's ambiguous text, on VARIANT_SEEDS seeds.
# - source: every encoder from the shipped source encoder (model.init_from=source), as the paper starts
#   from ImageNet weights; the variants are the paper's ablations (Grad-CAM noise only, low-variance noise
#   only, L_C + alpha L_R), on SEEDS seeds like the pairs. MoCo's runs also evaluate the source encoder
#   untouched (the paper's "ResNet50" row).
#
# Budgets (the defaults' data, model and recipe; docs/perturb_ssl.md "Does it help?"):
# - cpu: 100 epochs (3,200 joint steps), where MoCo v2's curve is flat. Seed 0's fine kNN: 33.0 at
#   25 epochs, 58.6 at 50 (flat over its own last quarter, the cosine's doing), 64.3 at 100, whose
#   curve reached 65.2 half-way and stayed there (63-65 over the second half). On the 2-core
#   AVX2 machine a MoCo run takes about 31 min, a Perturb-MoCo run about 70: hours a seed, so the
#   table spans sessions (commit the finished runs: launch/keep_runs.py).
# - gpu: 200 epochs.
set -euo pipefail
. "$(dirname "$0")/table_runs.sh"
seeds=${1:-5}; runs=${2:-runs/perturb_paired}; shift $(( $# > 2 ? 2 : $# )) || true
protocol=${PROTOCOL:-scratch}
case "${protocol}" in
  scratch)
    variant_seeds=${VARIANT_SEEDS:-3}
    cpu=(--config.optim.num_epochs=100 --config.eval.knn_every=200)
    gpu=(--config.optim.num_epochs=200 --config.eval.knn_every=400)
    variants=(
      "pm_unshuffled:configs/perturb_moco.py --config.perturb.pair_shuffle_bn=False"
      "pm_sign_loss:configs/perturb_moco.py --config.perturb.gradcam_sign=loss"
      "pm_noise_variance:configs/perturb_moco.py --config.perturb.noise_scale=variance"
      "pm_pair_aug:configs/perturb_moco.py --config.perturb.pair_augment=aug+"
      "no_pairs:configs/perturb_moco.py:no_pairs"
    ) ;;
  source)
    variant_seeds=${VARIANT_SEEDS:-${seeds}}
    cpu=(--config.optim.num_epochs="${SOURCE_EPOCHS:-50}" --config.eval.knn_every=200)
    gpu=(--config.optim.num_epochs=100 --config.eval.knn_every=400)
    variants=(
      "pm_gradcam_only:configs/perturb_moco.py:gradcam_only"
      "pm_lowvar_only:configs/perturb_moco.py:lowvar_only"
      "no_pairs:configs/perturb_moco.py:no_pairs"
    ) ;;
  *) echo "PROTOCOL must be scratch or source, got '${protocol}'" >&2; exit 2 ;;
esac
echo "protocol ${protocol}"
table_budget cpu gpu
budget+=(--config.model.init_from="${protocol/scratch/none}")  # explicit: the defaults may change
pairs=(
  "moco:configs/moco.py"
  "perturb_moco:configs/perturb_moco.py"
  "simsiam:configs/simsiam.py"
  "perturb_simsiam:configs/perturb_simsiam.py"
  "simclr:configs/simclr.py"
  "perturb_simclr:configs/perturb_simclr.py"
  "byol:configs/byol.py"
  "perturb_byol:configs/perturb_byol.py"
)

run_entry() {  # NAME:CONFIG[ FLAGS] SEED [extra flags...]
  local name=${1%%:*} spec=${1#*:} seed=$2
  shift 2
  local config=${spec%% *} flags=()
  [[ "${spec}" == *" "* ]] && read -r -a flags <<< "${spec#* }"
  local extra=()
  # The random-init row: MoCo's encoder before training, every seed (every row starts from it).
  [[ "${name}" != moco ]] && extra+=(--config.eval.random_init_baseline=False)
  run_table_entry "${name}" "${seed}" "${runs}" "${config}" "${budget[@]}" "${flags[@]}" "${extra[@]}" "$@"
}

run_pairs() {  # GROUP...: each group "A B" (indices of pairs), seed by seed
  local group a b seed
  for group in "$@"; do
    read -r a b <<< "${group}"
    for seed in $(seq 0 $((seeds - 1))); do
      run_entry "${pairs[a]}" "${seed}" "${extra_flags[@]}"
      run_entry "${pairs[b]}" "${seed}" "${extra_flags[@]}"
    done
  done
}

extra_flags=("$@")
start=$(date +%s)
run_pairs "0 1" "2 3"
for seed in $(seq 0 $((variant_seeds - 1))); do
  for entry in "${variants[@]}"; do
    run_entry "${entry}" "${seed}" "$@"
  done
done
run_pairs "4 5" "6 7"  # Perturb-SSL on the other bases (the wrapper), after the question and its variants
finish_table perturb_paired "${runs}" "${seeds}" "${start}" --variant_seeds "${variant_seeds}" --protocol "${protocol}"
