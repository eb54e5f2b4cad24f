#!/usr/bin/env bash
# CPU INT8 baseline (issue 3): ONNX Runtime fp32 vs int8, Offline and SingleStream, on the
# 2-core development machine. Usage: run.sh OUT_DIR [REPEATS]
# Phase 1 builds the caches (ONNX export, calibration, digits stand-in training) with a
# short untimed run; phase 2 makes the timed runs, each in a fresh process.
set -euo pipefail
OUT=${1:?output folder}
REPEATS=${2:-3}
cd "$(dirname "$0")/../../.."
COMMON=(--gpu cpu --backend onnxruntime --no-progress -q)
for model in resnet18 resnet50 resnet101; do
  python harness/run.py "${COMMON[@]}" --model $model --precision int8 --scenario Offline \
    --min-duration-ms 500 --min-query-count 16 --output "$OUT/warm" --overwrite > /dev/null
done
for model in resnet18 resnet50 resnet101; do
  for precision in fp32 int8; do
    for scenario in Offline SingleStream; do
      for run in $(seq 1 "$REPEATS"); do
        python harness/run.py "${COMMON[@]}" --model $model --precision $precision \
          --scenario $scenario --output "$OUT/r$run" > /dev/null
      done
    done
  done
done
