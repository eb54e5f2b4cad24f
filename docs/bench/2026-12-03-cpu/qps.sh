cd /work/main
for i in 1 2; do for q in 20 50 80; do
python harness/run.py --scenario Server --gpu auto --precision fp32 --model resnet18 --image-size 64 --dataset-count 256 --target-qps $q --output /tmp/exp/q$q-$i --no-progress --overwrite > /tmp/exp/q$q-$i.log 2>&1
echo "$(date +%T) qps=$q run$i rc=$? $(grep -E '^result:|latency p50|Processed|Would need' /tmp/exp/q$q-$i.log | tr -s ' ' | tr '\n' ' ')"
done; done
