#!/usr/bin/env bash
# ONNX Runtime fp32 and int8 on the GPU machine's own host CPU (16 cores), beside the
# card's torch fp16 in the same session: the CPU INT8 baseline on a server-class CPU.
# Usage: run.sh OUT_DIR STEP... where a STEP is "warm" (short untimed runs that build the
# caches: ONNX export, calibration, digits stand-ins) or a repeat number. Every run is a
# fresh process. The steps can be split over calls to stay inside a call's time limit.
set -euo pipefail
OUT=${1:?output folder}
shift
cd "$(dirname "$0")/../../.."
PY=${PYTHON:-python3}
mkdir -p "$OUT"
lscpu > "$OUT/lscpu.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/gpu.txt"
CPU=(--gpu cpu --backend onnxruntime --no-progress -q --model resnet50)
GPU=(--gpu auto --backend torch --no-progress -q --model resnet50 --precision fp16)
for run in "$@"; do
  echo "$(date -u +%T) step $run" >&2
  if [ "$run" = warm ]; then
    "$PY" harness/run.py "${CPU[@]}" --precision int8 --scenario Offline \
      --min-duration-ms 500 --min-query-count 16 --output "$OUT/warm" --overwrite > /dev/null
    "$PY" harness/run.py "${GPU[@]}" --scenario Offline \
      --min-duration-ms 500 --min-query-count 16 --output "$OUT/warm" --overwrite > /dev/null
    continue
  fi
  for precision in fp32 int8; do
    for scenario in Offline SingleStream; do
      "$PY" harness/run.py "${CPU[@]}" --precision $precision --scenario $scenario --output "$OUT/r$run" > /dev/null
    done
  done
  "$PY" harness/run.py "${GPU[@]}" --scenario Offline --output "$OUT/r$run" > /dev/null
done
