#!/usr/bin/env bash
# Runs one fgjax config on a SLURM GPU cluster (multi-controller JAX: the same command in every
# task; jax.distributed reads the job from SLURM's environment: SLURM_JOB_ID, SLURM_NTASKS,
# SLURM_PROCID, SLURM_LOCALID, SLURM_STEP_NODELIST). Submit from the repository root, on a
# filesystem every node sees:
#
#   sbatch --nodes=2 --gpus-per-node=8 --ntasks-per-node=8 launch/slurm_gpu.sh per-gpu \
#       --config=configs/perturb_moco.py:cub200 --workdir=/shared/runs/p1 [flags...]
#   sbatch --nodes=2 --gpus-per-node=8 --ntasks-per-node=1 launch/slurm_gpu.sh per-node \
#       --config=configs/perturb_moco.py:cub200 --workdir=/shared/runs/p1 [flags...]
#
# per-gpu:  one process per GPU (--ntasks-per-node = GPUs per node); JAX gives task i of a node
#           GPU i (SLURM_LOCALID). Every task must see all GPUs of its node: do not use
#           --gpus-per-task / per-task CUDA_VISIBLE_DEVICES.
# per-node: one process per node driving all its GPUs (JAX_LOCAL_DEVICE_IDS lists them; JAX
#           would otherwise give the single task GPU 0 only).
# Either way the mesh is every GPU of the job and the math is the same (fgjax/infra/parallel.py).
#
# Install: once, into the Python environment the tasks use (a venv on the shared filesystem):
#   FGJAX_VENV (default .venv here; created if missing), JAX_GPU_SPEC (default "jax[cuda12]").
#   FGJAX_SKIP_INSTALL=1 skips it (already installed).
# Requirements (not checked here): --workdir on a filesystem shared by all nodes (every task
# takes part in checkpoint saves; resubmitting the same command resumes); the data readable on
# every node; data.global_batch_size divisible by the number of GPUs.
# Other environment: FGJAX_DISTRIBUTED_TIMEOUT (s to wait for all tasks; default 300).
#SBATCH --job-name=fgjax
#SBATCH --output=fgjax-%j.out
set -euo pipefail

usage="usage: sbatch [--nodes=N --gpus-per-node=G --ntasks-per-node=G|1] launch/slurm_gpu.sh {per-gpu|per-node} FLAGS..."
mode=${1:?$usage}; shift
[[ $# -gt 0 ]] || { echo "$usage" >&2; exit 2; }
[[ -n "${SLURM_JOB_ID:-}" ]] || { echo "slurm_gpu.sh: not inside a SLURM job; submit it with sbatch ($usage)" >&2; exit 2; }
cd "${SLURM_SUBMIT_DIR:-.}"

venv=${FGJAX_VENV:-.venv}
if [[ "${FGJAX_SKIP_INSTALL:-0}" != 1 ]]; then  # on the first node only: the venv is shared
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q -U "${JAX_GPU_SPEC:-jax[cuda12]}"
  "$venv/bin/python" -m pip install -q -e .
fi

gpus_per_node=${SLURM_GPUS_ON_NODE:-$(nvidia-smi -L 2>/dev/null | wc -l)}
case "$mode" in
  per-gpu)
    [[ "${SLURM_NTASKS_PER_NODE:-}" == "$gpus_per_node" ]] || echo "slurm_gpu.sh: warning: per-gpu" \
      "expects --ntasks-per-node=$gpus_per_node (got '${SLURM_NTASKS_PER_NODE:-unset}')" >&2
    local_ids=() ;;
  per-node)
    [[ "${SLURM_NTASKS_PER_NODE:-1}" == 1 ]] || { echo "slurm_gpu.sh: per-node needs --ntasks-per-node=1" >&2; exit 2; }
    local_ids=(JAX_LOCAL_DEVICE_IDS="$(seq -s, 0 $((gpus_per_node - 1)))") ;;
  *)
    echo "$usage" >&2; exit 2 ;;
esac

# srun starts the tasks, forwards signals (scancel) to all of them and fails if one fails.
exec srun --kill-on-bad-exit=1 env ${local_ids[@]+"${local_ids[@]}"} \
  "$venv/bin/python" -m fgjax.main --distributed "$@"
