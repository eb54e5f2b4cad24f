"""Machine-readable summaries (--json PATH, or - for stdout): one small JSON object per
command, schema deepgap.summary/1, with what CI gates on. A run's summary, and its exit
code, are read back from the saved result (measurements.json, study.json), so they say
what was saved, not what the process happened to hold.

Every summary has "schema", "command" and "exit_code"; one whose command failed has
"error" (the one-line message) instead of the figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from plumbing.logs import LOG_FILE
from runs.saved_run import SavedRun

# ---- a run --------------------------------------------------------------------------------


def exit_code_of(result: dict[str, Any]) -> int:
    """A finished run's exit code, from its saved result (runs/saved_run.py)."""
    return SavedRun.from_record(result).exit_code


def run_fields(result: dict[str, Any]) -> dict[str, Any]:
    """What CI gates on in one saved run: its verdict, headline metric, samples/s and
    latency percentiles (performance), accuracy (accuracy), the accuracy gate."""
    run = SavedRun.from_record(result)
    fields: dict[str, Any] = {
        "system": run.system, "model": run.model, "scenario": run.scenario, "mode": run.mode,
        "precision": run.precision, "backend": run.backend, "run_profile": run.run_profile, "status": run.status,
        "result": None, "invalid_reasons": [], "metric": None, "samples_per_s": None, "latency_ms": None,
    }
    if run.summary is not None:
        fields.update(result="VALID" if run.summary.valid else "INVALID",
                      invalid_reasons=list(run.summary.invalid_reasons),
                      metric={"name": run.summary.metric, "value": run.summary.value},
                      samples_per_s=run.samples_per_s, latency_ms=run.latency_ms())
    if run.accuracy is not None:
        fields["accuracy"] = {k: run.accuracy.get(k) for k in ("kind", "percent", "good", "total", "passed", "no_verdict")}
    if run.accuracy_gate is not None:
        fields["accuracy_gate"] = {"passed": run.accuracy_gate.get("passed"),
                                   "skipped": bool(run.accuracy_gate.get("skipped"))}
    return fields


def saved_run(measurements: Path, section: tuple[str, str]) -> dict[str, Any]:
    """One run's record in a saved measurements.json (section: ("runs", mode) or
    ("compliance", test))."""
    from plumbing.errors import OutputError
    from runs.results import load_measurements

    key, name = section
    result = (load_measurements(measurements).get(key) or {}).get(name)
    if not isinstance(result, dict):
        raise OutputError(f"{measurements} records no {name} run")
    return result


def run_paths(measurements: Path, run_dir: Path) -> dict[str, str]:
    return {"measurements": str(measurements), "run_dir": str(run_dir), "log": str(run_dir / LOG_FILE)}


def submission_fields(measurements: Path) -> dict[str, Any]:
    """A submission's runs (each as run_fields), its compliance verdicts and the checker's
    verdict, from the saved measurements.json."""
    from runs.results import load_measurements

    data = load_measurements(measurements)
    submission = data.get("submission") or {}
    runs = {name: run_fields(result) for name, result in (data.get("runs") or {}).items()}
    runs.update({name: run_fields(result) for name, result in (data.get("compliance") or {}).items()})
    return {
        "system": data.get("system"), "model": data.get("model"), "scenario": data.get("scenario"),
        "grade": submission.get("grade"), "accuracy": submission.get("accuracy"),
        "compliance": submission.get("compliance") or {}, "check_passed": submission.get("check_passed"),
        "runs": runs,
        "paths": {"measurements": str(measurements), "check": str(measurements.parent / "check.txt")},
    }


# ---- a study ------------------------------------------------------------------------------


def study_fields(study_json: Path) -> dict[str, Any]:
    """A study's points (mean samples/s and p99 over their runs, VALID run counts) and SLO
    searches, from the saved study.json."""
    data = json.loads(Path(study_json).read_text())

    def mean(stat: dict[str, Any] | None) -> float | None:
        return None if not stat else stat.get("mean")

    points = [{
        "id": p["id"], "model": p["model"], "precision": p["precision"], "backend": p["backend"],
        "scenario": p["scenario"], "batch_size": p.get("batch_size"), "target_qps": p.get("target_qps"),
        "runs": len(p.get("runs") or []), "valid_runs": (p.get("stats") or {}).get("valid_runs"),
        "samples_per_s": mean((p.get("stats") or {}).get("samples_per_s")),
        "p99_ms": mean((p.get("stats") or {}).get("p99_ms")),
    } for p in data.get("points") or []]
    searches = [{k: s.get(k) for k in ("key", "model", "precision", "backend", "percentile", "latency_ms",
                                       "max_qps", "confirmed")} for s in data.get("slo_searches") or []]
    return {"study": str(study_json), "system": (data.get("system") or {}).get("name"),
            "points": points, "slo_searches": searches}
