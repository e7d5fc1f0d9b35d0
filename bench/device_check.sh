#!/usr/bin/env bash
# The one prepared GPU check (issue 20), run on a lent GPU machine from the repo root. It fits one call of about
# 9 minutes: the phases run in the issue's order of priority, each under its own time limit and all under one
# deadline (BUDGET seconds from the start), so a hang or a slow phase costs only what comes after it.
#   check_fp32   bench/gpu_check.py: eager vs CUDA-graph fast path, every method, ResNet-32, fp32, deterministic
#   check_bf16   the same for baseline and PCL in bf16 + channels_last
#   bench_main   bench/throughput.py, ResNet-32 baseline and PCL: fast / eager / naive in one process, 1/2/4 packed
#                PCL runs, peak memory, GPU busy share, kernels per step
#   methods      every other method on ResNet-32, fast and eager (the launcher's epoch times)
#   bench_bf16   the fast path in bf16 + channels_last (baseline and PCL, ResNet-32)
#   bench_tf32   the fast path in tf32 (TF32 matmuls and convolutions: PyTorch's default for cuDNN)
#   sanity       the real-data run on the lossy CIFAR-10 stand-in (baseline and PCL; the fast path when the fp32
#                check passed), EPOCHS epochs; needs .device_carry/{data/cifar10-jpeg.tar.gz,
#                tools/cifar10_standin.py} carried along (its conversion runs on the CPU from the start)
#   backbones    baseline and PCL on the tables' other backbones, fast and eager (in the time left)
# Every output goes to one folder, packed after each phase into $OUT/device_results.tgz (what a cut-off call still
# returns); the summary (targets, check verdicts) ends the output. Needs only torch, torchvision, numpy.
# Knobs: BUDGET (s, default 525), PHASES (default all), PY, CHECK_STEPS, STEPS, WARMUP, EPOCHS, SEEDS, and for a
# try on the CPU: CHECK_ARGS, BENCH_ARGS, SANITY_ARGS (extra arguments of the scripts: --device cpu, tiny backbones).
# Exit 1 if the fp32 check failed.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT="${OUT:-bench/out}"; mkdir -p "$OUT"
WORK="$(mktemp -d)"
DATA="$(mktemp -d)"  # the stand-in's 180 MB of converted batches: outside WORK, which is packed after every phase
BUDGET="${BUDGET:-525}"
PHASES="${PHASES:-check_fp32 check_bf16 bench_main methods bench_bf16 bench_tf32 sanity backbones}"
PY="${PY:-$(command -v python3 || command -v python)}"
CHECK_STEPS="${CHECK_STEPS:-120}" STEPS="${STEPS:-50}" WARMUP="${WARMUP:-10}"
EPOCHS="${EPOCHS:-5}" SEEDS="${SEEDS:-0}"
CHECK_ARGS="${CHECK_ARGS:-}" BENCH_ARGS="${BENCH_ARGS:-}"
status=0 check_status=skipped
declare -A RC

left() { echo $((BUDGET - SECONDS)); }
pack() { tar czf "$OUT/device_results.tgz.tmp" -C "$WORK" . && mv "$OUT/device_results.tgz.tmp" "$OUT/device_results.tgz"; }
wanted() { [[ " $PHASES " == *" $1 "* ]]; }
# phase NAME LIMIT COMMAND...: run under min(LIMIT, time left - 10 s); skipped when under 20 s are left for it
phase() {
  local name=$1 limit=$2; shift 2
  wanted "$name" || return 0
  local t; t=$(left); t=$((t - 10)); ((t > limit)) && t=$limit
  if ((t < 20)); then echo "# phase $name SKIPPED: $(left) s of the budget left" | tee -a "$WORK/phases.txt"; RC[$name]=skipped; return 0; fi
  echo "# phase $name: limit ${t}s, $(left) s of the budget left" | tee -a "$WORK/phases.txt"
  local t0=$SECONDS
  timeout -k 5 "$t" "$@" > >(tee "$WORK/$name.txt") 2>&1
  local rc=$?
  RC[$name]=$rc
  echo "# phase $name: exit $rc after $((SECONDS - t0)) s$( ((rc == 124 || rc == 137)) && echo ' (TIME LIMIT)')" | tee -a "$WORK/phases.txt"
  pack
  return 0
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.draw --format=csv
  "$PY" -c "import torch, torchvision, numpy; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'numpy', numpy.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  date -u +%FT%TZ; echo "cpus $(nproc)"; echo "commit ${COMMIT:-$(git rev-parse HEAD 2>/dev/null)}"; } 2>&1 | tee "$WORK/gpu.txt"

# The stand-in's conversion (CPU only) runs beside the GPU phases.
if wanted sanity && [ -f .device_carry/tools/cifar10_standin.py ]; then
  ( "$PY" .device_carry/tools/cifar10_standin.py "$DATA" > "$WORK/standin.txt" 2>&1; echo "exit $?" >> "$WORK/standin.txt" ) &
  standin_pid=$!
fi

# deterministic kernels: a zero noise floor (2026-12-04 without them two eager fp32 copies drifted to O(1) apart)
phase check_fp32 190 "$PY" bench/gpu_check.py --steps "$CHECK_STEPS" --deterministic --out "$WORK/gpu_check_fp32.json" \
  $CHECK_ARGS
[ "${RC[check_fp32]:-skipped}" = 0 ] && check_status=passed
[[ "${RC[check_fp32]:-skipped}" =~ ^[0-9]+$ && "${RC[check_fp32]}" != 0 ]] && { check_status=FAILED; status=1; }
phase check_bf16 70 "$PY" bench/gpu_check.py --steps $((CHECK_STEPS / 2)) --methods baseline,pcl --precision bf16 \
  --channels-last --out "$WORK/gpu_check_bf16_cl.json" $CHECK_ARGS

cp bench/epoch_times.csv "$WORK/epoch_times.csv"  # this card's rows (paths graph and eager) replace or join its rows
TP=("$PY" bench/throughput.py --steps "$STEPS" --warmup "$WARMUP" --write-epoch-times "$WORK/epoch_times.csv")
phase bench_main 170 "${TP[@]}" --backbones resnet32 --fast-only-backbones "" --methods baseline,pcl \
  --naive-workers "${NAIVE_WORKERS:-4}" --pack 1,2,4 --out "$WORK/throughput_main.json" $BENCH_ARGS
phase methods 100 "${TP[@]}" --backbones resnet32 --fast-only-backbones "" --paths fast,eager --pack "" \
  --methods "${OTHER_METHODS:-dml,cl_ilr,one,ffl,okddip,kdcl}" --out "$WORK/throughput_methods.json" $BENCH_ARGS
phase bench_bf16 60 "$PY" bench/throughput.py --steps "$STEPS" --warmup "$WARMUP" --paths fast --backbones resnet32 \
  --fast-only-backbones "" --methods baseline,pcl --pack "" --precision bf16 --channels-last \
  --out "$WORK/throughput_bf16_cl.json" $BENCH_ARGS
phase bench_tf32 45 "$PY" bench/throughput.py --steps "$STEPS" --warmup "$WARMUP" --paths fast --backbones resnet32 \
  --fast-only-backbones "" --methods baseline,pcl --pack "" --precision tf32 \
  --out "$WORK/throughput_tf32.json" $BENCH_ARGS
if wanted sanity; then
  while [ -n "${standin_pid:-}" ] && kill -0 "$standin_pid" 2>/dev/null && (($(left) > 40)); do sleep 1; done
  if grep -q "^exit 0" "$WORK/standin.txt" 2>/dev/null && [ -d "$DATA/cifar-10-batches-py" ]; then
    fast=eager; [ "$check_status" = passed ] && fast=graph
    phase sanity "${SANITY_LIMIT:-120}" "$PY" bench/gpu_sanity.py --data-root "$DATA" --epochs "$EPOCHS" --seeds "$SEEDS" \
      --fast-path "${FAST_PATH:-$fast}" --out "$WORK/sanity.json" ${SANITY_ARGS:-}
  else
    echo "# phase sanity SKIPPED: no stand-in data ($(tail -c 300 "$WORK/standin.txt" 2>/dev/null))" | tee -a "$WORK/phases.txt"
  fi
fi
rm -rf "$DATA"

phase backbones 90 "${TP[@]}" --backbones "${OTHER_BACKBONES:-resnet110,wrn20_8,densenet40_12,vgg16}" \
  --fast-only-backbones "" --paths fast,eager --pack "" --methods baseline,pcl --no-profile \
  --out "$WORK/throughput_backbones.json" $BENCH_ARGS

{ echo "# ===== summary ($SECONDS s in all) ====="
  cat "$WORK/gpu.txt"
  echo "# fp32 GPU check: $check_status"
  cat "$WORK/phases.txt"
  grep -h -E "^[a-z_0-9]+ +(ok|FAIL)|^# (largest|target|headline|packed)|FAILED" "$WORK"/check_*.txt "$WORK"/bench_*.txt \
    "$WORK"/methods.txt "$WORK"/backbones.txt 2>/dev/null
  grep -h -E "^(resnet|wrn|densenet|vgg|tiny)" "$WORK"/bench_*.txt "$WORK"/methods.txt "$WORK"/backbones.txt 2>/dev/null
  grep -h -E "deployed|epoch [0-9]+:" "$WORK"/sanity.txt 2>/dev/null | tail -20
} > "$WORK/summary.txt"
pack
cat "$WORK/summary.txt"
exit $status
