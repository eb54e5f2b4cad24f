#!/usr/bin/env bash
# The issue-5 GPU study on one card, resumable across calls of limited length.
# Usage: gpu_study.sh STUDY_DIR SECONDS [extra sweep flags]. Stops the sweep after SECONDS
# (SIGINT; finished points stay saved) so the caller can resume with the same command.
set -uo pipefail
STUDY=${1:?study folder}; LIMIT=${2:?seconds}; shift 2
cd "$(dirname "$0")/../.."
timeout -s INT "$LIMIT" python -m harness.sweep --study "$STUDY" \
  --models resnet18 resnet50 --precisions fp16 fp32 \
  --scenarios Offline Server SingleStream --batch-sizes 1 2 4 8 16 32 64 128 256 512 \
  --repeats 3 --duration-ms 1000 --search-ms 600 --confirm-ms 3000 --slo p99:15ms \
  --skip-accuracy-gate "$@"
echo "sweep exit: $?"
