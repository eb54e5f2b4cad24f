#!/usr/bin/env bash
# Issue 17's benchmark on the GPU machine's 16-core host CPU (its GPU is not used: MLServer's
# runtime is ONNX Runtime's CPU provider, and so is the in-process run it is compared with).
# 1. the client ceiling: an MLServer answering instantly (resnet50 inputs, 224 px), Offline
#    at batch 1 with 1, 8 and 32 requests in flight and at batch 32, and a Server run;
# 2. resnet50 fp32 served by MLServer against the same ONNX model run in-process by deepgap:
#    Offline twice each, then a study of each (Offline batch 8, Server SLO search at p99 <= 15 ms).
# 3. the client's own ceiling against the bare instant gRPC server (serving/instant_grpc.py), and
#    Server runs at fixed loads, in-process and served.
# Both servers idle while the in-process runs go, and each side uses ONNX Runtime's default
# threads (the physical cores). Logs and results go to $OUT/kserve-PART.tar.gz.
# Run from the project root: bash docs/bench/2026-12-04-kserve/gpu_host_kserve.sh PART
# PART: ceiling (1, and the Offline pairs of 2), grpc (3) or studies (the studies of 2): each fits one
# device call of 10 minutes. In grpc, ONLY_SLO=1 skips the bare-server ceiling runs, and INPROC_Q,
# SERVED_Q and SLO_BATCH set the fixed Server loads and batch (run on 2026-12-04: 80/30/2, then 40/15/1);
# studies was not run (no GPU-machine time left). The Server search uses batches of at most 2 (--server-max-batch):
# a resnet50 fp32 batch of 8 on the host CPU takes longer than the 15 ms bound.
set -u
PART=${1:?ceiling or studies}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl .whl/kserve/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD DEEPGAP_CACHE=/tmp/dgc CUDA_VISIBLE_DEVICES=""
L=$OUT/kserve-$PART; mkdir -p $L
trap 'tar czf $OUT/kserve-$PART.tar.gz -C $OUT kserve-$PART; kill $(jobs -p) 2>/dev/null' EXIT
(date -u; lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core"; python3 -V
 python3 -c "import onnxruntime, mlserver, tritonclient, torch; print('ort', onnxruntime.__version__, 'mlserver', mlserver.__version__, 'torch', torch.__version__)"
 pip list 2>/dev/null | grep -i -E "tritonclient|grpcio|protobuf") > $L/env.txt 2>&1
if [ $PART = ceiling ]; then
  python3 -m serving.mlserver_launch --model resnet50 --image-size 224 --instant --grpc-port 18002 --http-port 18082 \
    --folder /tmp/ms-instant > $L/mlserver-instant.log 2>&1 &
fi
python3 -m serving.mlserver_launch --model resnet50 --image-size 224 --grpc-port 18001 --http-port 18081 \
  --folder /tmp/ms-real > $L/mlserver-real.log 2>&1 &
for i in $(seq 1 180); do grep -q "^serving" $L/mlserver-real.log && { [ $PART != ceiling ] || grep -q "^serving" $L/mlserver-instant.log; } && break; sleep 1; done
echo "servers ready after ${i}s" | tee -a $L/summary.txt
run() { local name=$1; shift; local t0=$(date +%s)
  timeout 120 python3 harness/run.py --model resnet50 --no-progress --output $L/r-$name "$@" > $L/$name.txt 2>&1
  echo "$name rc=$? $(( $(date +%s) - t0 ))s $(grep -i -E 'result:|samples per second|latency p50' $L/$name.txt | tr '\n' ' ')" | tee -a $L/summary.txt; }
if [ $PART = ceiling ]; then
# 1. the client ceiling (instant answers)
for k in 1 8 32; do run ceil-b1-k$k --endpoint 127.0.0.1:18002 --model-name resnet50 --scenario Offline --max-batch 1 --in-flight $k --min-duration-ms 3000; done
run ceil-b32-k8 --endpoint 127.0.0.1:18002 --model-name resnet50 --scenario Offline --max-batch 32 --in-flight 8 --min-duration-ms 3000
run ceil-http-b1-k8 --endpoint 127.0.0.1:18082 --protocol http --model-name resnet50 --scenario Offline --max-batch 1 --in-flight 8 --min-duration-ms 3000
run ceil-server-q300 --endpoint 127.0.0.1:18002 --model-name resnet50 --scenario Server --target-qps 300 --min-duration-ms 3000
# 2. served against in-process, Offline twice each
for r in 1 2; do
  run inproc-off-$r --gpu cpu --backend onnxruntime --scenario Offline --max-batch 8 --min-duration-ms 5000
  run served-off-$r --endpoint 127.0.0.1:18001 --scenario Offline --max-batch 8 --in-flight 2 --min-duration-ms 5000
done
fi
study() { local name=$1; shift; local t0=$(date +%s)
  timeout 230 python3 -m harness.sweep --study $L/study-$name --models resnet50 --scenarios Offline Server --batch-sizes 8 \
    --repeats 1 --duration-ms 3000 --search-ms 1500 --confirm-ms 3000 --ladder 1.0 --min-query-count 600 \
    --slo p99:15ms --search-tolerance 0.1 --server-max-batch 2 "$@" > $L/study-$name.txt 2>&1
  echo "study-$name rc=$? $(( $(date +%s) - t0 ))s $(grep -i -E 'server|offline' $L/study-$name.txt | tr '\n' ' ')" | tee -a $L/summary.txt; }
if [ $PART = grpc ]; then
# 3. the client's own ceiling: the bare instant gRPC server (serving/instant_grpc.py), and
#    Server at fixed loads near the Offline rates, in-process and served, at most 2 a batch.
  python3 -m serving.instant_grpc --model resnet50 --image-size 224 --port 18003 > $L/instant-grpc.log 2>&1 &
  sleep 3
  for k in 1 8 32; do run bare-b1-k$k --endpoint 127.0.0.1:18003 --scenario Offline --max-batch 1 --in-flight $k --min-duration-ms 3000; done
  run bare-b8-k8 --endpoint 127.0.0.1:18003 --scenario Offline --max-batch 8 --in-flight 8 --min-duration-ms 3000
  for q in 500 1000; do run bare-server-q$q --endpoint 127.0.0.1:18003 --scenario Server --target-qps $q --max-batch 1 --in-flight 32 --min-duration-ms 3000; done
  run inproc-server-q80 --gpu cpu --backend onnxruntime --scenario Server --target-qps 80 --max-batch 2 --min-duration-ms 5000
  run served-server-q30 --endpoint 127.0.0.1:18001 --scenario Server --target-qps 30 --max-batch 2 --in-flight 4 --min-duration-ms 5000
fi
if [ $PART = studies ]; then
  study inproc --gpu cpu --backends onnxruntime
  study served --endpoint 127.0.0.1:18001
fi
