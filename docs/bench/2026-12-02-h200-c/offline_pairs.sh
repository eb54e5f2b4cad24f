#!/usr/bin/env bash
# Issue 13 on the H200: compiled Offline at max batch 256 against 512 (resnet50 fp16, the
# 1.3% shortfall), and resnet50 fp32 eager against compiled, alternating, through the
# canonical command. Each line: tag, repeat, samples/s, verdict. Logs under $OUT/offline.
set -u; mkdir -p "$OUT/offline"
run() { local tag=$1 rep=$2; shift 2
  timeout 200 python3 harness/run.py --scenario Offline --gpu auto --overwrite --no-progress --output /tmp/op-$tag "$@" > "$OUT/offline/$tag-$rep.log" 2>&1
  echo "$tag rep=$rep rc=$? $(grep -hE '^result:|Samples per second' "$OUT/offline/$tag-$rep.log" | tr '\n' ' ')"; }
for rep in 1 2; do
  run r50-fp16-b256 $rep --model resnet50 --precision fp16 --max-batch 256
  run r50-fp16-b512 $rep --model resnet50 --precision fp16 --max-batch 512
done
for rep in 1; do
  run r50-fp32-eager $rep --model resnet50 --precision fp32 --compile none
  run r50-fp32-compiled $rep --model resnet50 --precision fp32 --compile default
done
