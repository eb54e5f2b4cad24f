#!/usr/bin/env bash
# Issue 11 on the GPU machine, first pass: the CUDA tests of the changed backends, the
# small-dataset matrix (11.1) and the fp16 Server submission rehearsal (11.3, TEST01 Part III).
# Usage (project root, wheels installed): docs/bench/2026-12-01-h200/check_fixes.sh OUT_DIR
set -u
OUT=${1:?output folder}; mkdir -p "$OUT"
export DEEPGAP_CACHE=${DEEPGAP_CACHE:-/tmp/deepgap-cache} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 150 python -m pytest -q -x tests/sut/test_torch_backend.py tests/sut/test_cpu_isa.py \
  tests/harness/test_limits.py tests/harness/test_power.py > "$OUT/pytest.log" 2>&1; echo "pytest rc=$?"; tail -2 "$OUT/pytest.log"
timeout 300 docs/bench/2026-12-01-h200/small_datasets.sh "$OUT/matrix" | tee "$OUT/matrix.txt"
s=$SECONDS
timeout 180 python harness/run.py --scenario Server --gpu auto --precision fp16 --mode submission \
  --output "$OUT/sub" --no-progress > "$OUT/submission-server.log" 2>&1
echo "submission Server fp16 rc=$? $((SECONDS - s)) s"; tail -25 "$OUT/submission-server.log"
