#!/usr/bin/env bash
# Issue 13 on the H200: whole-process startup (the first call only), then the study with the
# compiled default (resnet18/50/101, fp16 and fp32), resumable across calls of limited length.
# Usage: study.sh STUDY_DIR SECONDS. The sweep is stopped SECONDS after the script started
# (SIGINT; finished points stay saved) so the caller resumes with the same command. Everything goes to
# $OUT/study.tgz (the study folder, the sweep's log, startup.txt).
set -uo pipefail
STUDY=${1:?study folder}; LIMIT=${2:?seconds}
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT" "$(dirname "$STUDY")" .device/logs
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"
if [ ! -e .device/logs/startup.txt ]; then
  # One SingleStream process each, accuracy gate off: compiled on an empty Inductor cache,
  # then alternating compiled on that (now warm) cache and eager.
  startup() { local tag=$1; shift; local t0=$(date +%s.%N)
    python3 harness/run.py --scenario SingleStream --precision fp16 --min-duration-ms 1000 \
      --skip-accuracy-gate --no-progress --overwrite --output /tmp/st-$tag -v "$@" > .device/logs/startup-$tag.log 2>&1
    local rc=$? t1=$(date +%s.%N)
    echo "$tag rc=$rc wall_s=$(python3 -c "print(round($t1-$t0,1))") $(grep -hoE 'compiled resnet50 [^(]+\([^)]*\)|latency p50 [^|]*p90 [0-9.]+ ms' .device/logs/startup-$tag.log | tr '\n' ' ')" | tee -a .device/logs/startup.txt; }
  export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-startup; rm -rf "$TORCHINDUCTOR_CACHE_DIR"
  startup compiled-cold --compile default
  startup compiled-warm-1 --compile default
  startup eager-1 --compile none
  startup compiled-warm-2 --compile default
  startup eager-2 --compile none
  unset TORCHINDUCTOR_CACHE_DIR
fi
started=$(date +%s)
timeout -s INT "$(( LIMIT - SECONDS ))" python3 -m harness.sweep --study "$STUDY" \
  --models resnet18 resnet50 resnet101 --precisions fp16 fp32 \
  --scenarios Offline Server SingleStream --batch-sizes 1 4 16 64 256 512 \
  --repeats 2 --duration-ms 1000 --search-ms 600 --confirm-ms 3000 --slo p99:15ms \
  --ladder 0.25 0.5 0.9 1.0 --compile default --skip-accuracy-gate -v >> .device/logs/sweep.log 2>&1
echo "sweep exit: $? after $(( $(date +%s) - started )) s"
tail -5 .device/logs/sweep.log
tar czf "$OUT/study.tgz" "$STUDY" .device/logs
