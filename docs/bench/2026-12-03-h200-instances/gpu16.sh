#!/bin/bash
# Issue 16 on the one-GPU machine: --gpus checks, then harness.bench with --instances 1 2 3,
# compiled and eager, resnet50 fp16. Everything lands in $OUT/b16.tgz.
export DEEPGAP_CACHE=/tmp/dgcache
B=$OUT/b16; mkdir -p $B
start=$(date +%s)
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv; git log -1 --format=%h 2>/dev/null; python -c "import torch;print(torch.__version__)"; lscpu | grep 'Model name'; } > $B/env.txt 2>&1
for g in 2 0,1 all; do echo "--gpus $g: $(timeout 60 python harness/run.py --gpus $g --scenario Offline --precision fp16 --min-duration-ms 500 --output $B/g$g --skip-accuracy-gate 2>&1 | grep -E 'error|result:|device:' | head -3)"; done > $B/gpus_checks.txt
timeout 360 python -m harness.bench --models resnet50 --precisions fp16 --compile default --instances 1 2 3 --repeats 2 --duration-ms 1500 --search-ms 800 --output $B/compiled > $B/compiled.log 2>&1
echo "compiled rc=$? at $(( $(date +%s) - start )) s" >> $B/env.txt
left=$(( 560 - ($(date +%s) - start) ))
timeout $left python -m harness.bench --models resnet50 --precisions fp16 --compile none --instances 1 2 3 --repeats 2 --duration-ms 1500 --search-ms 800 --output $B/eager > $B/eager.log 2>&1
echo "eager rc=$? at $(( $(date +%s) - start )) s" >> $B/env.txt
cd $OUT && find b16 \( -name bench.json -o -name '*.log' -o -name '*.txt' -o -name measurements.json \) -size -2M | tar czf b16.tgz -T - && rm -rf b16
