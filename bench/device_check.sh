#!/usr/bin/env bash
# The one prepared GPU check (run on a lent GPU machine from the repo root; every output goes under $OUT):
#   1. bench/gpu_check.py: eager vs CUDA-graph fast path, every method, ResNet-32, 200 steps, fp32; then bf16 and
#      channels_last for baseline and PCL. Its exit status decides whether the fast path may become the default.
#   2. bench/throughput.py: fast / eager / naive side by side (resnet32, resnet110; wrn20_8 fast), 1/2/4 packed
#      PCL runs, peak memory, GPU busy share; epoch times of the eager path -> $OUT/epoch_times.csv (and of the
#      fast path -> $OUT/epoch_times_fast.csv), both starting from bench/epoch_times.csv.
#   3. optional (SANITY=1): the real-data sanity run on the lossy CIFAR-10 stand-in (baseline and PCL, seeds $SEEDS,
#      default 0,1; $EPOCHS epochs; the fast path when step 1 ran and passed, else eager); needs
#      .device_carry/{data/cifar10-jpeg.tar.gz,tools/cifar10_standin.py} carried along.
# Needs only torch, torchvision, numpy (no sacred, pymongo, submitit). PHASES selects steps (default "check bench").
# Each phase has its own time limit so a hang cannot eat the lease. Exit status: 1 if the GPU check failed.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT="${OUT:-bench/out}"; mkdir -p "$OUT"
PHASES="${PHASES:-check bench}"
EPOCHS="${EPOCHS:-6}"
status=0
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  date -u +%F; nproc; } 2>&1 | tee "$OUT/gpu.txt"

if [[ " $PHASES " == *" check "* ]]; then
  timeout 300 python bench/gpu_check.py --steps 200 --out "$OUT/gpu_check_fp32.json" 2>&1 | tee "$OUT/gpu_check.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  timeout 150 python bench/gpu_check.py --steps 100 --methods baseline,pcl --precision bf16 --channels-last \
    --out "$OUT/gpu_check_bf16_cl.json" 2>&1 | tee -a "$OUT/gpu_check.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

if [[ " $PHASES " == *" bench "* ]]; then
  cp bench/epoch_times.csv "$OUT/epoch_times.csv"
  cp bench/epoch_times.csv "$OUT/epoch_times_fast.csv"
  timeout 420 python bench/throughput.py --naive-workers "${NAIVE_WORKERS:-4}" --write-epoch-times "$OUT/epoch_times.csv" \
    --out "$OUT/throughput.json" 2>&1 | tee "$OUT/throughput.txt"
  timeout 120 python bench/throughput.py --paths fast --backbones resnet32,resnet110 --fast-only-backbones wrn20_8 \
    --pack "" --precision bf16 --channels-last --out "$OUT/throughput_fast_bf16_cl.json" 2>&1 | tee -a "$OUT/throughput.txt"
  timeout 120 python bench/throughput.py --paths fast --methods baseline,pcl,dml,cl_ilr,one,ffl,okddip,kdcl \
    --backbones resnet32 --fast-only-backbones "" --pack "" --no-profile --epoch-times-path fast \
    --write-epoch-times "$OUT/epoch_times_fast.csv" 2>&1 | tee -a "$OUT/throughput.txt"
fi

if [[ " $PHASES " == *" sanity "* || "${SANITY:-0}" == 1 ]]; then
  python .device_carry/tools/cifar10_standin.py data >/dev/null
  # the fast path only where the GPU check passed (status 0); SEEDS, SANITY_TIMEOUT as the lease allows
  fast=eager; [[ " $PHASES " == *" check "* && $status -eq 0 ]] && fast=graph
  timeout "${SANITY_TIMEOUT:-400}" python bench/gpu_sanity.py --data-root data --epochs "$EPOCHS" \
    --seeds "${SEEDS:-0,1}" --fast-path "${FAST_PATH:-$fast}" --out "$OUT/sanity.json" 2>&1 | tee "$OUT/sanity.txt"
fi
exit $status
