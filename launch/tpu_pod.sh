#!/usr/bin/env bash
# Runs one fgjax config on every worker of a Cloud TPU VM pod slice (multi-controller JAX:
# the same command on every worker; jax.distributed detects the slice from the TPU metadata).
# Run it from your workstation, in the repository root, with gcloud authenticated.
#
#   bash launch/tpu_pod.sh TPU_NAME ZONE install
#       copies this checkout to ~/fgjax on every worker and installs it (jax[tpu] + pip install -e .)
#   bash launch/tpu_pod.sh TPU_NAME ZONE run --config=configs/perturb_moco.py:cub200 --workdir=/mnt/shared/runs/p1 [flags...]
#       starts the run on all workers (--distributed is added) and streams their output: worker 0
#       logs progress, the others only warnings and errors. Run it again after a preemption: it
#       resumes from the last checkpoint in --workdir.
#   bash launch/tpu_pod.sh TPU_NAME ZONE stop
#       stops the run on every worker (the process ids it recorded).
#
# Requirements (not checked here):
#   * --workdir is one directory that every worker sees at the same path: NFS / Filestore, or a
#     bucket mounted with gcsfuse at the same mount point on every worker. gs:// paths do not work
#     (fgjax writes its workdir with plain file I/O). Every worker takes part in checkpoint saves.
#   * the data: every worker reads its own slice of each global batch, so the data set (tfds
#     data_dir, or the image folder) must be readable on every worker at the same path.
#   * data.global_batch_size divisible by the number of chips (and by model.bn_groups; see
#     docs/scale_out.md "Running at scale" for the learning-rate rule when you change it).
#
# Environment: PROJECT (gcloud project; default: gcloud's), REMOTE_DIR (default fgjax, in the
# workers' home), JAX_TPU_SPEC (default "jax[tpu]"), PYTHON_REMOTE (default python3).
set -euo pipefail

usage="usage: bash launch/tpu_pod.sh TPU_NAME ZONE {install|run FLAGS...|stop}"
tpu=${1:?$usage}; zone=${2:?$usage}; action=${3:?$usage}
shift 3
remote_dir=${REMOTE_DIR:-fgjax}
py=${PYTHON_REMOTE:-python3}
project_flag=()
[[ -n "${PROJECT:-}" ]] && project_flag=(--project="$PROJECT")

on_all_workers() {  # runs one shell command on every worker, in parallel
  gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" ${project_flag[@]+"${project_flag[@]}"} \
    --worker=all --command="$1"
}

case "$action" in
  install)
    # The checkout as it is here (uncommitted edits included), without build outputs.
    archive=$(mktemp "${TMPDIR:-/tmp}/fgjax_src_XXXXXX.tar.gz")
    trap 'rm -f "$archive"' EXIT
    tar --exclude=.git --exclude=.venv --exclude='*.pyc' --exclude=runs -czf "$archive" .
    gcloud compute tpus tpu-vm scp "$archive" "$tpu":fgjax_src.tar.gz --zone="$zone" \
      ${project_flag[@]+"${project_flag[@]}"} --worker=all
    on_all_workers "set -e; mkdir -p ~/$remote_dir && tar -xzf ~/fgjax_src.tar.gz -C ~/$remote_dir \
      && cd ~/$remote_dir && $py -m pip install -q -U '${JAX_TPU_SPEC:-jax[tpu]}' && $py -m pip install -q -e . \
      && $py -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'"
    ;;
  run)
    [[ $# -gt 0 ]] || { echo "$usage" >&2; exit 2; }
    args=$(printf '%q ' "$@")  # quoted once for the remote shell
    # Each worker records its process id (for 'stop'), then becomes the trainer.
    on_all_workers "cd ~/$remote_dir && echo \$\$ > /tmp/fgjax_run.pid && \
      exec $py -m fgjax.main --distributed $args"
    ;;
  stop)
    # SIGTERM first: every process saves the same step (JAX's preemption sync point) and exits
    # with status 3; SIGKILL only if one is still running after 120 s.
    on_all_workers "if [ -f /tmp/fgjax_run.pid ]; then pid=\$(cat /tmp/fgjax_run.pid); kill \$pid 2>/dev/null; \
      for i in \$(seq 120); do kill -0 \$pid 2>/dev/null || break; sleep 1; done; \
      kill -9 \$pid 2>/dev/null; rm -f /tmp/fgjax_run.pid; fi; true"
    ;;
  *)
    echo "$usage" >&2; exit 2 ;;
esac
