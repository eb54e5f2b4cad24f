#!/usr/bin/env bash
# Issue 11.1: every scenario on a dataset below, at and above the performance sample count
# (1024), with device and host staging, torch fp16 on the GPU. Each run is its own process,
# so a device-side assert shows as its exit code (134) instead of ending the matrix.
# Usage (project root, GPU machine): docs/bench/2026-12-01-h200/small_datasets.sh OUT_DIR
# SCENARIOS and COUNTS (space-separated) pick a part of the matrix, to fit one device call.
set -u
OUT=${1:?output folder}
mkdir -p "$OUT"
for scenario in ${SCENARIOS:-Offline Server SingleStream MultiStream}; do
  for count in ${COUNTS:-96 1024 1100}; do
    for staging in device host; do
      tag=$scenario-$count-$staging; start=$SECONDS
      timeout 150 python harness/run.py --scenario $scenario --gpu auto --precision fp16 --dataset-count $count \
        --staging $staging --min-duration-ms 1000 --skip-accuracy-gate --no-progress \
        --output "$OUT/$tag" > "$OUT/$tag.log" 2>&1
      rc=$?
      result=$(grep -m1 '^result:' "$OUT/$tag.log" | cut -d' ' -f2)
      metric=$(grep -m1 -E 'samples per second|Samples per second|latency p' "$OUT/$tag.log" | tr -s ' ')
      assert=$(grep -c -E 'device-side assert|illegal memory|out of bounds' "$OUT/$tag.log")
      printf '%-26s rc=%-3s %4ss %-8s asserts=%s  %s\n' "$tag" "$rc" "$((SECONDS - start))" "${result:-none}" "$assert" "$metric"
    done
  done
done
