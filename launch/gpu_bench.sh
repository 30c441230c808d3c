#!/usr/bin/env bash
# fgjax MoCo v2 step vs a plain PyTorch MoCo v2 step: same model, batch and precision, one device.
#
#   bash launch/gpu_bench.sh                        # ResNet-50, 224 px, batch 128, bfloat16 (the cub200 preset)
#   PRECISION=float32 bash launch/gpu_bench.sh
#   BATCH=256 STEPS=20 bash launch/gpu_bench.sh
#   CPU=1 bash launch/gpu_bench.sh                  # ResNet-18, CIFAR stem, 32 px, batch 128, float32 (CPU figure)
#   CPU=1 WIDTH=16 bash launch/gpu_bench.sh         # the same at quarter width (the CPU default's model)
#   CPU=1 BREAKDOWN=1 bash launch/gpu_bench.sh      # also each part of the step and each conv layer, both sides
#   CONV_IMPL=xla CPU=1 bash launch/gpu_bench.sh     # fgjax with XLA's convolutions (default: model.conv_impl=auto)
#
# Needs fgjax with the PyTorch extra: pip install -e '.[torch-bench]' (and a CUDA jax:
# pip install 'jax[cuda12]'). Prints both throughputs and fgjax/PyTorch; the JSON of each
# side goes to $OUT_DIR (default runs/gpu_bench).
#
# What is compared (launch/torch_moco_v2.py says the same on the PyTorch side):
# - model: ResNet-50 (torchvision layout) + MoCo v2's 2048-2048-128 MLP head, momentum
#   encoder, queue of 65536 keys, InfoNCE at tau 0.2, SGD with momentum and weight decay;
# - one BatchNorm group of the whole batch on both sides and no shuffle-BN: PyTorch's
#   official code shuffles across GPUs only, so on one GPU neither side shuffles
#   (fgjax's preset default, 4 BN groups with shuffle-BN, is set back here);
# - fgjax's timed step also does the on-device aug+ of both views (random resized
#   crop from a 448-px base, colour jitter, blur, flip); PyTorch gets ready tensors.
#   That work is counted against fgjax only.
# - bfloat16: fgjax computes in bf16 with float32 parameters, optimizer state, BN
#   statistics and losses; PyTorch runs its forward under torch.autocast(bfloat16).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${CPU:-0}" == "1" ]]; then PRECISION=${PRECISION:-float32}; else PRECISION=${PRECISION:-bfloat16}; fi
BATCH=${BATCH:-128}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-3}
OUT_DIR=${OUT_DIR:-runs/gpu_bench}
mkdir -p "$OUT_DIR"

if [[ "${CPU:-0}" == "1" && "${WIDTH:-64}" == "16" ]]; then
  PRESET=""           # the CPU default: ResNet-18 width 16, CIFAR stem, 32 px, head 128-128-128, queue 1024
  TORCH_MODEL=(--arch=resnet18 --width=16 --cifar-stem --image-size=32 --hidden=128 --queue=1024)
elif [[ "${CPU:-0}" == "1" ]]; then
  PRESET="fullwidth"  # ResNet-18 width 64, CIFAR stem, 32 px, head 512-512-128, queue 1024
  TORCH_MODEL=(--arch=resnet18 --cifar-stem --image-size=32 --hidden=512 --queue=1024)
else
  PRESET="cub200"     # ResNet-50, 224 px (crops of a 448-px base), head 2048-2048-128, queue 65536
  TORCH_MODEL=(--arch=resnet50 --image-size=224 --hidden=2048 --queue=65536)
fi
[[ "$PRECISION" == "bfloat16" ]] && PRESET="${PRESET:+$PRESET,}bf16"
CONFIG="configs/moco.py${PRESET:+:$PRESET}"

echo "== fgjax (python -m fgjax.tools.bench --config=$CONFIG)"
python -m fgjax.tools.bench --config="$CONFIG" --methods=moco --steps="$STEPS" --warmup="$WARMUP" \
  --config.data.global_batch_size="$BATCH" --config.model.bn_groups=1 --config.moco.shuffle_bn=False \
  --config.model.conv_impl="${CONV_IMPL:-auto}" \
  ${BREAKDOWN:+--breakdown} --out="$OUT_DIR/fgjax.json"

echo "== PyTorch (launch/torch_moco_v2.py)"
python launch/torch_moco_v2.py "${TORCH_MODEL[@]}" --batch="$BATCH" --precision="$PRECISION" \
  --steps="$STEPS" --warmup="$WARMUP" ${BREAKDOWN:+--breakdown} --json="$OUT_DIR/torch.json"

python -m fgjax.tools.tables torch_comparison "$OUT_DIR"
