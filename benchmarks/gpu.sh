#!/usr/bin/env bash
# GPU checks and figures, for a machine with one CUDA GPU (run from the repository root):
#  1. od2 vs torchvision RetinaNet-R50-FPN and od2 EfficientDet-D0 speed (benchmarks/gpu_bench.py);
#  2. the digits demo trained on the GPU under torchrun (NCCL process group, DDP), then evaluated.
# Usage: benchmarks/gpu.sh [DEMO_ITERS]   (python: $PYTHON, default python3; od2 importable)
set -euo pipefail
PYTHON=${PYTHON:-python3}
ITERS=${1:-1500}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PYTHON benchmarks/gpu_bench.py
OUT_DIR=${OUT_DIR:-output/gpu-demo}
start=$SECONDS
$PYTHON -m torch.distributed.run --standalone --nproc_per_node=1 -m od2.cli train \
  --config configs/digits/retinanet_lite0.yaml MODEL.DEVICE=cuda DATALOADER.NUM_WORKERS=6 \
  SOLVER.MAX_ITER=$ITERS OUTPUT_DIR=$OUT_DIR 2>&1 | tr '\r' '\n' | grep -v "^train: .*it/s" | tail -n 5
echo "digits training, $ITERS iterations on the GPU (torchrun, NCCL): $((SECONDS - start)) s"
$PYTHON -m od2.cli eval --config configs/digits/retinanet_lite0.yaml MODEL.DEVICE=cuda \
  --weights $OUT_DIR/model_final.pth OUTPUT_DIR=$OUT_DIR 2>&1 | grep -v "inference:"
