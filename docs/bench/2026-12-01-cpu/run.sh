#!/usr/bin/env bash
# INT8 CPU paths (issue 11.2): ONNX Runtime fp32 against int8 on each CPU path this CPU can
# run exactly, Offline and SingleStream, every run a fresh process.
# Usage: run.sh OUT_DIR REPEATS MODEL... ; phase 1 builds the caches (export, calibration,
# digits stand-in) with a short untimed run, phase 2 makes the timed runs. An INVALID run (exit
# 6) is kept and counted; a run whose result exists is not repeated, so a stopped call resumes.
set -euo pipefail
OUT=${1:?output folder}; REPEATS=${2:?repeats}; shift 2
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
grep -m1 'model name' /proc/cpuinfo > "$OUT/cpu.txt"; python3 -c 'from sut.cpu_isa import detect_cpu_isa; print(detect_cpu_isa())' >> "$OUT/cpu.txt"
COMMON=(--gpu cpu --backend onnxruntime --no-progress -q)
for model in "$@"; do
  python harness/run.py "${COMMON[@]}" --model "$model" --precision int8 --scenario Offline \
    --min-duration-ms 500 --min-query-count 16 --output "$OUT/warm" --overwrite > /dev/null || [ $? = 6 ]
done
for run in $(seq 1 "$REPEATS"); do
  for model in "$@"; do
    for variant in fp32 int8:vnni int8:reduce-range int8:u8u8; do
      precision=${variant%%:*}; path=${variant#*:}
      extra=(); [ "$precision" = int8 ] && extra=(--int8-cpu-path "$path")
      for scenario in Offline SingleStream; do
        out="$OUT/r$run/${variant/:/-}"
        ls "$out"/results/*/"$model/$scenario"/measurements.json > /dev/null 2>&1 && continue
        python harness/run.py "${COMMON[@]}" --model "$model" --precision "$precision" "${extra[@]}" \
          --scenario "$scenario" --output "$out" > /dev/null || [ $? = 6 ]
      done
    done
  done
done
python docs/bench/2026-12-01-cpu/collect.py "$OUT"
