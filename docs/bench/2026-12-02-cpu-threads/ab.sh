cd /work/main
A="--gpu auto --precision fp32 --model resnet18 --image-size 64 --dataset-count 256 --no-progress --overwrite"
for rep in 1 2 3; do for pin in 1 0; do
  for sc in Server Offline; do
    PINNED=$pin python /tmp/exp/pinwrap.py --scenario $sc $A --output /tmp/exp/ab_$pin > /tmp/exp/ab.log 2>&1
    echo "rep=$rep pinned=$pin $sc $(grep -E '^result:|samples per second|Samples per second|latency p50' /tmp/exp/ab.log | tr -s ' ' | tr '\n' '|')"
  done
done; done
