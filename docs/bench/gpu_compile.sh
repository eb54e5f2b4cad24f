#!/usr/bin/env bash
# Issue 13 on the GPU machine, in one call: (1) startup of harness/run.py, eager, compiled
# with an empty Inductor cache and compiled again (cached), each a new process; (2)
# harness.bench, compiled against eager side by side in one process on one card.
# Usage (from the project root, wheels installed): bash docs/bench/gpu_compile.sh [MODELS] [PRECISIONS]
# Writes $OUT/startup.txt, $OUT/bench.md, $OUT/bench.json and $OUT/bench.log.
set -u
MODELS=${1:-resnet50}; PRECISIONS=${2:-fp16 fp32}
export PYTHONUNBUFFERED=1 DEEPGAP_CACHE=${DEEPGAP_CACHE:-/tmp/deepgap-cache}
rm -rf "$DEEPGAP_CACHE/inductor"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/startup.txt"
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)" >> "$OUT/startup.txt"
startup() { # tag, then run.py arguments: wall seconds of the whole process
  local t0; t0=$(date +%s.%N)
  python3 harness/run.py --scenario SingleStream --precision fp16 --min-duration-ms 1000 --skip-accuracy-gate \
    --output /tmp/startup-$1 --no-progress "${@:2}" > /tmp/startup-$1.log 2>&1; local rc=$?
  printf "%-16s rc=%s wall %.1f s | %s\n" "$1" "$rc" "$(awk "BEGIN{print $(date +%s.%N) - $t0}")" \
    "$(grep -hE 'compiled |latency p50' /tmp/startup-$1.log | tr -s ' ' | tr '\n' ' ')" >> "$OUT/startup.txt"
}
startup eager --compile none
startup compiled-cold --compile default
startup compiled-cached --compile default
cat "$OUT/startup.txt"
timeout "${BENCH_TIMEOUT:-420}" python3 -m harness.bench --models $MODELS --precisions $PRECISIONS \
  --compile none default --repeats 3 --duration-ms 1500 --search-ms 800 --output /tmp/bench \
  > "$OUT/bench.md" 2> "$OUT/bench.log"
echo "bench rc=$?"
cp /tmp/bench/bench.json "$OUT/bench.json" 2>/dev/null
cat "$OUT/bench.md"; grep -E "done in|compiled " "$OUT/bench.log" | tail -20
