#!/usr/bin/env bash
# Accuracy-gate figures for fp16 and bf16 (torch backend) on a GPU (issue 3).
# Usage: gpu_gate.sh OUT_DIR. Each run trains (once, cached) the digits stand-in on the
# GPU at 224 px, gates, then makes a short Offline run.
set -uo pipefail
OUT=${1:?output folder}
cd "$(dirname "$0")/../.."
for model in resnet18 resnet50 resnet101; do
  for precision in fp16 bf16; do
    /usr/bin/time -f "$model $precision: %e s" python harness/run.py --gpu auto --backend torch \
      --model $model --precision $precision --scenario Offline --min-duration-ms 1000 \
      --no-progress -q --output "$OUT/runs" --overwrite > "$OUT/last.txt" 2>&1 || tail -3 "$OUT/last.txt"
    tail -1 "$OUT/last.txt"
  done
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1]); gates = {}
for path in sorted((out / "runs").rglob("measurements.json")):
    run = json.loads(path.read_text())["runs"]["performance"]
    r = run["config"]["request"]
    gates[f"{r['model']}/{r['precision']}"] = {"gate": run.get("accuracy_gate"), "backend": run.get("backend"),
                                              "offline_img_s": (run.get("summary") or {}).get("value")}
(out / "gates.json").write_text(json.dumps(gates, indent=1))
for key, g in gates.items():
    print(key, json.dumps(g["gate"]))
PY
