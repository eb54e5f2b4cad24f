#!/bin/sh
# One cold first INT8 run (issue 11: the digits stand-in's recipe v2 against v1): a fresh
# DEEPGAP_CACHE, so the ONNX export, the calibration and the digits stand-in are all built.
# Usage: cold_first_int8.sh REPO LOG   (REPO: a checkout to time; the v1 side was a detached
# worktree of the same commit with `git checkout 347b00d^ -- sut/digits_model.py`). Timed as
#   farm-bench -n 3 --warmup 0 --timeout 1500 --vs "cold_first_int8.sh OLD old.log" -- cold_first_int8.sh NEW new.log
repo=$1; log=$2
export DEEPGAP_CACHE=$(mktemp -d /tmp/coldcache.XXXX) PYTHONPATH=$repo
cd $repo
python harness/run.py --scenario SingleStream --gpu cpu --precision int8 --model resnet18 --image-size 64 \
  --dataset-count 256 --no-progress --output /tmp/coldout-$(basename $repo) --overwrite >> $log 2>&1
rc=$?
rm -rf $DEEPGAP_CACHE
exit $rc
