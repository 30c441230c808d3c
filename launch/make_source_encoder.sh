#!/usr/bin/env bash
# Makes the shipped source encoder (model.init_from=source) from nothing but this repository:
#   1. trains configs/source.py (cross-entropy on the embedded source set, the ImageNet stand-in) into
#      RUNS_DIR/source (skipped when its results.json exists: the script resumes);
#   2. exports its encoder to fgjax/pretrained/weights/source_resnet18_w16.safetensors (torchvision layout);
#   3. measures its transfer to the targets, the encoder untouched against the same encoder at random init:
#      patches (configs/moco.py's data and protocol) and hierarchy (configs/ce.py's), linear probe and kNN,
#      fine and super classes (configs/evaluate.py with init_from=source and init_from=none);
#   4. writes the manifest beside the file (fgjax.tools.source_manifest): the command, the commit, the
#      SHA-256, the source accuracy and the transfer, and prints the transfer table (docs/pretrained.md).
#
#   bash launch/make_source_encoder.sh [RUNS_DIR=runs/make_source] [extra --config.* flags for step 1]
#
# About 25 min on a quiet 2-core AVX2 machine (the training about 20 of them).
set -euo pipefail
runs=${1:-runs/make_source}; shift $(( $# > 0 ? 1 : 0 )) || true
weights=fgjax/pretrained/weights/source_resnet18_w16.safetensors
mkdir -p "${runs}" "$(dirname "${weights}")"
start=$(date +%s)
if [[ ! -f "${runs}/source/results.json" ]]; then
  python -m fgjax.main --config=configs/source.py --workdir="${runs}/source" "$@" 2> "${runs}/source.log" \
    || { tail -3 "${runs}/source.log"; exit 1; }
fi
python -m fgjax.tools.export_encoder "${runs}/source" "${weights}"
# A manifest without transfer figures first: init_from=source verifies the file against it.
python -m fgjax.tools.source_manifest "${runs}" "${weights}" --command "bash $0 ${runs}${*:+ $*}"
for target in patches:configs/moco.py hierarchy:configs/ce.py; do
  name=${target%%:*} config=${target#*:}
  for init in source none; do
    out="${runs}/transfer_${name}_${init}"
    [[ -f "${out}/results.json" ]] && continue
    python -m fgjax.main --config=configs/evaluate.py --config.init_from="${init}" --config.train_config="${config}" \
      --workdir="${out}" 2> "${out}.log" || { tail -3 "${out}.log"; exit 1; }
  done
done
python -m fgjax.tools.source_manifest "${runs}" "${weights}" --command "bash $0 ${runs}${*:+ $*}"
echo "total: $(( $(date +%s) - start )) s"
