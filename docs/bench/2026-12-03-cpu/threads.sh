#!/bin/bash
# run server flow, sample per-thread cpu ticks
cd /work/main
python harness/run.py --scenario Server --gpu auto --precision fp32 --model resnet18 --image-size 64 --dataset-count 256 --output /tmp/exp/srv-$1 --no-progress --overwrite > /tmp/exp/srv-$1.log 2>&1 &
PID=$!
sleep 1
while kill -0 $PID 2>/dev/null; do
  T=$(date +%s)
  for t in /proc/$PID/task/*; do
    tid=${t##*/}; read -r line < $t/stat 2>/dev/null || continue
    comm=$(cat $t/comm 2>/dev/null)
    set -- $(echo "$line" | sed 's/.*) //')
    echo "$T $tid $comm ${12} ${13}"
  done
  sleep 2
done > /tmp/exp/threads-$1.txt
wait $PID; echo rc=$?
