"""The one screen a finished run prints, rendered from its saved result only."""

from __future__ import annotations

from typing import Any

from plumbing.errors import INVALID_RESULT_EXIT
from plumbing.logs import LOG_FILE
from runs.saved_run import LoadgenSummary, SavedRun

_HEADLINE_UNITS = {
    "Samples per second": ("samples/s", 1.0),
    "Completed samples per second": ("samples/s", 1.0),
}


def _ms(value_ms: float | None) -> str:
    return "-" if value_ms is None else f"{value_ms:.3f} ms"


def _hint(summary: LoadgenSummary) -> str | None:
    if summary.valid:
        return None
    if summary.scenario == "Offline" and summary.min_duration_satisfied is False:
        return (f"the query finished before the minimum duration; rerun with "
                f"--target-qps {1.2 * summary.value:.0f} so LoadGen sizes it for this device")
    if summary.scenario == "Server":
        return "lower --target-qps, or shorten --batch-timeout-us / --max-batch, until p99 fits the bound"
    return None


def render_run(result: dict[str, Any], run_dir: str) -> str:
    config = result["config"]
    request = config["request"]
    lines = [
        f"deepgap {result['deepgap_version']}  {config['system_name']}  {request['model']}  "
        f"{request['scenario']}  {request['mode']}  (run profile {request['run_profile']})",
        f"device: {config['device']['name']} ({config['device']['profile']} profile), backend "
        f"{config['backend']} {request['precision']}, max batch {config['knobs']['max_batch']}",
    ]
    summary = SavedRun.from_record(result).summary
    if summary is not None:
        verdict = "VALID" if summary.valid else f"INVALID (exit code {INVALID_RESULT_EXIT}; the result is kept)"
        lines.append(f"result: {verdict}")
        for reason in summary.invalid_reasons if not summary.valid else ():
            lines.append(f"  - {reason}")
        unit, _ = _HEADLINE_UNITS.get(summary.metric, ("", 1.0))
        if unit:
            lines.append(f"{summary.metric}: {summary.value:,.1f} {unit}")
        else:
            lines.append(f"{summary.metric.replace(' (ns)', '')}: {_ms(summary.value / 1e6)}")
        lines.append(f"latency p50 {_ms(summary.latency_ms('p50'))}  p90 {_ms(summary.latency_ms('p90'))}  "
                     f"p99 {_ms(summary.latency_ms('p99'))}")
        hint = _hint(summary)
        if hint:
            lines.append(f"hint: {hint}")
    gate = result.get("accuracy_gate")
    if gate and gate.get("skipped"):
        lines.append("accuracy gate: SKIPPED (--skip-accuracy-gate): this precision was not checked against FP32")
    elif gate:
        from runs.gate import GateFigures, GateVerdict

        figures = GateFigures(**{k: gate[k] for k in GateFigures.__dataclass_fields__})
        lines.append(GateVerdict(gate["passed"], gate["rule"], figures).line())
    calibration = result.get("calibration")
    if calibration:
        line = f"int8 calibration: {calibration['algorithm']} on {calibration['subset']}"
        if "overlap_with_performance_set" in calibration:
            line += f"; {calibration['overlap_with_performance_set']} of them in the performance set"
        lines.append(line)
    accuracy = result.get("accuracy")
    if accuracy:
        label = "top-1 accuracy" if accuracy["kind"] == "accuracy" else "top-1 agreement with the FP32 reference (synthetic data: not an accuracy)"
        lines.append(f"{label}: {accuracy['percent']:.3f}% ({accuracy['good']}/{accuracy['total']})")
        from runs.accuracy import AccuracyResult

        # Every accuracy run says its verdict, or that there is none and why (no signal).
        lines.append(f"MLPerf accuracy rule: {AccuracyResult.from_json(accuracy).verdict_line()}")
    if result.get("loadgen_errors"):
        lines.append(f"LoadGen reported {len(result['loadgen_errors'])} error(s): {result['loadgen_errors'][0]}")
    if result.get("weights_note"):
        lines.append(f"note: {result['weights_note']}")
    if request["run_profile"] != "submission":
        lines.append("note: quick run profile: shortened durations, not a submission-grade result")
    elif config.get("submission_shortfalls"):
        lines.append(f"note: not a submission-grade result: {'; '.join(config['submission_shortfalls'])}")
    lines.append(f"results: {run_dir} (details: {LOG_FILE} there, or -v)")
    return "\n".join(lines)
