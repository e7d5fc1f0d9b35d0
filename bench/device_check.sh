#!/usr/bin/env bash
# The one prepared GPU check (run on a lent GPU machine from the repo root; writes figures under $OUT):
# throughput of every method's step (fp32 and bf16, sync check on), then the real-data sanity run on the lossy
# CIFAR-10 stand-in. Needs .device_carry/{data/cifar10-jpeg.tar.gz,tools/cifar10_standin.py} carried along.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT="${OUT:-bench/out}"; mkdir -p "$OUT"
EPOCHS="${EPOCHS:-6}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"
python .device_carry/tools/cifar10_standin.py data >/dev/null &
standin=$!
python bench/throughput.py --backbone resnet32 --batch-size 128 --peers 3 --methods all 2>&1 | tee "$OUT/throughput.txt"
python bench/throughput.py --backbone resnet32 --batch-size 128 --peers 3 --methods baseline,pcl --precision bf16 2>&1 | tee -a "$OUT/throughput.txt"
python bench/throughput.py --backbone wrn20_8 --batch-size 128 --peers 3 --methods baseline,pcl 2>&1 | tee -a "$OUT/throughput.txt"
wait $standin
python bench/gpu_sanity.py --data-root data --epochs "$EPOCHS" --out "$OUT/sanity.json" 2>&1 | tee "$OUT/sanity.txt"
