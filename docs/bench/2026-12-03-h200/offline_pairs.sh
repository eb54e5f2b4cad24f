#!/usr/bin/env bash
# Issue 13 on the H200: resnet101 fp16 and resnet50 bf16, eager against compiled,
# alternating, through the canonical command (each run a process of its own, accuracy gate
# included). Each line: tag, repeat, exit code, verdict, samples/s, compile line.
# Logs under $OUT/offline, tarred by the caller.
set -u; mkdir -p "$OUT/offline"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"
run() { local tag=$1 rep=$2; shift 2
  timeout 150 python3 harness/run.py --scenario Offline --gpu auto --overwrite --no-progress --output /tmp/op-$tag "$@" > "$OUT/offline/$tag-$rep.log" 2>&1
  echo "$tag rep=$rep rc=$? $(grep -hE '^result:|Samples per second|accuracy gate|compiled ' "$OUT/offline/$tag-$rep.log" | tr -s ' ' | tr '\n' ' ' | cut -c1-400)"; }
for rep in 1 2; do
  run r101-fp16-eager $rep --model resnet101 --precision fp16 --compile none
  run r101-fp16-compiled $rep --model resnet101 --precision fp16 --compile default
  run r50-bf16-eager $rep --model resnet50 --precision bf16 --compile none
  run r50-bf16-compiled $rep --model resnet50 --precision bf16 --compile default
done
