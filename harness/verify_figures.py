"""What `deepgap verify-tensorrt` reads back from each step (harness/verify_tensorrt.py): the
tests' JUnit XML, the engine build's summary (its sidecar's build_seconds), and each run's
saved result (measurements.json, through runs/saved_run.py), accuracy gate included.
Each reader returns plumbing.steps.Figures: the values for the report, a short text for
the screen, and a problem where the step exited 0 but did not do what it should.
"""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, Mapping

from plumbing.steps import Figures
from runs.jsonsummary import saved_run
from runs.saved_run import SavedRun

# Skip reasons that mean a real-TensorRT or GPU test did not run: on a machine with both,
# each is a failure of the verification (tests/sut/test_tensorrt_backend.py's needs_trt
# and needs_cuda marks, and its GPU fixtures).
NOT_RUN_MARKS = ("tensorrt", "cuda gpu")
# What the report keeps of a run's backend description.
ENGINE_FIELDS = ("tensorrt", "engine_cache", "engine_path", "onnx_graph", "input_dtype", "output_dtype", "max_batch",
                 "cuda_graphs", "staging", "activation_bytes", "tensorrt_cuda_build", "driver", "driver_cuda",
                 "torch_cuda")


def _json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def junit_figures(junit: Path) -> Figures:
    """Counts from pytest's --junitxml file, and each skipped test with its reason."""
    root = ElementTree.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    skipped = []
    for case in root.iter("testcase"):
        mark = case.find("skipped")
        if mark is not None:
            skipped.append({"test": f"{case.get('classname')}::{case.get('name')}", "reason": mark.get("message", "")})
    not_run = [s for s in skipped if any(word in s["reason"].lower() for word in NOT_RUN_MARKS)]
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    values = {"passed": passed, **counts, "skipped_tests": skipped, "tensorrt_or_gpu_tests_not_run": len(not_run)}
    text = f"{passed} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped"
    problem = None
    if not_run:
        problem = (f"{len(not_run)} TensorRT or GPU test(s) skipped, e.g. {not_run[0]['test']}: "
                   f"{not_run[0]['reason']}")
    return Figures(values, text, problem)


def build_figures(summary: Path) -> Figures:
    """harness/trt_build.py's --json summary: the engine, its build and load seconds."""
    data = _json(summary)
    if "error" in data:
        return Figures({"error": data["error"]})
    keys = ("precision", "model", "max_batch", "engine_cache", "engine_path", "build_seconds", "engine_bytes",
            "calibration_seconds", "load_seconds")
    values = {key: data.get(key) for key in keys}
    backend = data.get("backend") or {}
    values["backend"] = {key: backend.get(key) for key in ENGINE_FIELDS if key in backend}
    values["tensorrt"] = backend.get("tensorrt")
    megabytes = f", {data['engine_bytes'] / 1e6:.1f} MB" if data.get("engine_bytes") else ""
    if data.get("engine_cache") == "hit":
        text = f"engine from the cache (built in {data.get('build_seconds')} s earlier){megabytes}"
    else:
        text = f"engine built in {data.get('build_seconds')} s{megabytes}, batches up to {data.get('max_batch')}"
    return Figures(values, text)


def gate_text(gate: Mapping[str, Any] | None) -> str:
    if not gate:
        return "no accuracy gate"
    if gate.get("skipped"):
        return "accuracy gate skipped"
    verdict = "PASS" if gate.get("passed") else "FAIL"
    agreement = gate.get("agreement")
    return f"gate {verdict}" + (f" (agreement {100 * agreement:.2f}%)" if isinstance(agreement, (int, float)) else "")


def run_figures(summary: Path, output: Path, since: dt.datetime | None = None) -> Figures:
    """One run's saved result under its own output root `output`
    (results/<system>/<model>/<scenario>/measurements.json, its performance record, if it
    started at `since` or later), and the one-line error of its --json summary where it
    stopped with one."""
    error = _json(summary).get("error") if summary.is_file() else None
    found = sorted(output.glob("results/*/*/*/measurements.json"))
    if len(found) > 1:
        raise ValueError(f"{output} holds {len(found)} results; expected one")
    record = saved_run(found[0], ("runs", "performance")) if found else None
    if record is not None and since is not None:
        started = dt.datetime.fromisoformat(str(record.get("started_utc")))
        if started < since:  # an earlier verification's, kept where this run stopped before its own
            return Figures({"error": error, "measurements": None, "earlier_result_ignored": str(found[0])})
    if record is None:
        return Figures({"error": error, "measurements": None})
    run = SavedRun.from_record(record, str(found[0]))
    backend = run.record.get("backend") or {}
    values: dict[str, Any] = {
        "system": run.system, "scenario": run.scenario, "precision": run.precision, "status": run.status,
        "result": None if run.summary is None else ("VALID" if run.summary.valid else "INVALID"),
        "invalid_reasons": [] if run.summary is None else list(run.summary.invalid_reasons),
        "samples_per_s": None if run.summary is None else run.samples_per_s,
        "latency_ms": run.latency_ms(), "accuracy_gate": None if run.accuracy_gate is None else dict(run.accuracy_gate),
        "engine": {key: backend.get(key) for key in ENGINE_FIELDS if key in backend}, "measurements": str(found[0]),
    }
    values["error"] = error
    parts = []
    if run.summary is not None:
        p99 = values["latency_ms"].get("p99")
        parts.append(f"{values['result']} {run.samples_per_s:,.1f} samples/s" + (f", p99 {p99:.2f} ms" if p99 else ""))
    parts.append(gate_text(run.accuracy_gate))
    if backend.get("engine_cache"):
        parts.append(f"engine {backend['engine_cache']}")
    return Figures(values, "; ".join(parts))
