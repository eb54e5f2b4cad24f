"""Collect run.sh's runs into one JSON and a Markdown table: per model and CPU path,
Offline samples/s and SingleStream p90 with their spread over runs, and the gate figures.

    python docs/bench/2026-12-01-cpu/collect.py OUT_DIR
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def main(root: Path) -> None:
    rows: dict[tuple[str, str, str], list[dict]] = {}
    for path in sorted(root.glob("r*/*/results/*/*/*/measurements.json")):
        run = json.loads(path.read_text())["runs"]["performance"]
        request = run["config"]["request"]
        variant = path.relative_to(root).parts[1]
        rows.setdefault((request["model"], variant, request["scenario"]), []).append(run)
    (root / "cpu_int8_paths.json").write_text(json.dumps({"/".join(k): v for k, v in rows.items()}, indent=1))
    lines = ["| model | precision / CPU path | Offline img/s | vs fp32 | SingleStream p90 ms | valid | gate (digits stand-in) |",
             "|---|---|---|---|---|---|---|"]
    models = sorted({key[0] for key in rows})
    for model in models:
        fp32 = [x["summary"]["value"] for x in rows.get((model, "fp32", "Offline"), [])]
        for variant in ("fp32", "int8-vnni", "int8-reduce-range", "int8-u8u8"):
            off, ss = rows.get((model, variant, "Offline"), []), rows.get((model, variant, "SingleStream"), [])
            if not off and not ss:
                continue
            qps = [x["summary"]["value"] for x in off]
            p90 = [x["summary"]["percentiles_ns"]["90.00"] / 1e6 for x in ss]
            valid = sum(bool(x["summary"]["valid"]) for x in off + ss)
            ratio = f"{statistics.fmean(qps) / statistics.fmean(fp32):.2f}x" if qps and fp32 else "-"
            gate = (off or ss)[0].get("accuracy_gate") or {}
            gate_text = "-"
            if "top1" in gate:
                gate_text = (f"top-1 {100 * gate['top1']:.1f}% vs FP32 {100 * gate['reference_top1']:.1f}%, "
                             f"agreement {100 * gate['agreement']:.1f}%, rel. error {gate['relative_error']:.2e}, "
                             f"{'PASS' if gate.get('passed') else 'FAIL'}")
            lines.append(f"| {model} | {variant} | {fmt(qps)} | {ratio} | {fmt(p90, 2)} | {valid}/{len(off) + len(ss)} | {gate_text} |")
    table = "\n".join(lines) + "\n"
    (root / "table.md").write_text(table)
    print(table)


def fmt(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (n=1)"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} (n={len(values)})"


if __name__ == "__main__":
    main(Path(sys.argv[1]))
