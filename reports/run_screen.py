"""The one screen a finished run prints, rendered from its saved result only."""

from __future__ import annotations

from typing import Any

from plumbing.errors import INVALID_RESULT_EXIT
from plumbing.logs import LOG_FILE
from runs.saved_run import SavedRun

_HEADLINE_UNITS = {
    "Samples per second": ("samples/s", 1.0),
    "Completed samples per second": ("samples/s", 1.0),
}


def _ms(value_ms: float | None) -> str:
    return "-" if value_ms is None else f"{value_ms:.3f} ms"


# A Server miss whose batches alone take at least this share of the query p99 is compute
# bound: a lighter load or a shorter batching wait would not shorten it.
_COMPUTE_BOUND_SHARE = 0.7


def _hint(run: SavedRun) -> str | None:
    summary = run.summary
    if summary is None or summary.valid:
        return None
    if summary.scenario == "Offline" and summary.min_duration_satisfied is False:
        return (f"the query finished before the minimum duration; rerun with "
                f"--target-qps {1.2 * summary.value:.0f} so LoadGen sizes it for this device")
    if summary.scenario == "Server":
        batch_p99, query_p99 = run.batch_time_ms("p99"), summary.latency_ms("p99")
        if batch_p99 is not None and query_p99 and batch_p99 >= _COMPUTE_BOUND_SHARE * query_p99:
            return (f"the batches themselves took p99 {batch_p99:.3f} ms (max {run.batch_time_ms('max'):.3f} ms, "
                    f"p50 {run.batch_time_ms('p50'):.3f} ms) of the queries' p99 {query_p99:.3f} ms: the tail is "
                    "compute, not queueing, so a lower --target-qps will not fix it; on a shared or virtual host, "
                    "other tenants' load shows up here (a smaller model, precision or image size, or a quieter "
                    "host, will)")
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
    run = SavedRun.from_record(result)
    backend = result.get("backend") or {}
    if backend.get("remote"):
        server, model = backend.get("server") or {}, backend.get("model") or {}
        lines.append(f"server: {server.get('name') or '?'} {server.get('version') or ''} at {backend.get('endpoint')} "
                     f"({backend.get('protocol')}), model {model.get('name')} "
                     f"{model.get('version') or '(server default version)'}; the server runs and batches it, so "
                     "there is no local device, accuracy gate or local power")
    if run.instances:
        devices = list(dict.fromkeys(i["device"] for i in run.instances))
        lines.append(f"instances: {len(run.instances)} ({len(run.instances) // len(devices)} on each of "
                     f"{', '.join(devices)}); batches each: {' / '.join(str(i['batches']) for i in run.instances)}")
    summary = run.summary
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
        hint = _hint(run)
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
