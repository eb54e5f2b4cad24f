"""Collect the CPU INT8 runs (run.sh) into one JSON and a Markdown table.

    python docs/bench/2026-11-26-cpu/collect.py OUT_DIR > table.md
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def main(root: Path) -> None:
    rows: dict[tuple[str, str, str], list[dict]] = {}
    for path in sorted(root.glob("r*/results/*/*/*/measurements.json")):
        run = json.loads(path.read_text())["runs"]["performance"]
        r = run["config"]["request"]
        rows.setdefault((r["model"], r["precision"], r["scenario"]), []).append(run)
    raw = {"/".join(key): runs for key, runs in rows.items()}
    (root / "cpu_int8.json").write_text(json.dumps(raw, indent=1))
    print("| model | precision | Offline img/s | SingleStream p90 ms | valid runs | gate (stand-in) |")
    print("|---|---|---|---|---|---|")
    for model in ("resnet18", "resnet50", "resnet101"):
        for precision in ("fp32", "int8"):
            off = rows.get((model, precision, "Offline"), [])
            ss = rows.get((model, precision, "SingleStream"), [])
            qps = [x["summary"]["value"] for x in off]
            p90 = [x["summary"]["percentiles_ns"]["90.00"] / 1e6 for x in ss]
            valid = sum(x["summary"]["valid"] for x in off + ss)
            gate = (off or ss or [{}])[0].get("accuracy_gate")
            gate_text = "-"
            if gate and "agreement" in gate:
                f = gate
                gate_text = (f"top-1 {100 * f['top1']:.1f}% vs FP32 {100 * f['reference_top1']:.1f}%, "
                             f"agreement {100 * f['agreement']:.1f}%, cosine {f['cosine']:.4f}, "
                             f"rel. error {f['relative_error']:.4f}, {f['samples']} images, "
                             f"{'PASS' if gate['passed'] else 'FAIL'}")
            print(f"| {model} | {precision} | {fmt(qps)} | {fmt(p90, 2)} | {valid}/{len(off) + len(ss)} | {gate_text} |")


def fmt(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {spread:.{digits}f} (n={len(values)})"


if __name__ == "__main__":
    main(Path(sys.argv[1]))
