"""Results layout, in MLPerf's submission shape:

    OUTPUT/results/<system>/<model>/<scenario>/performance/run_1/   LoadGen logs
    OUTPUT/results/<system>/<model>/<scenario>/accuracy/            logs, accuracy.txt
    OUTPUT/results/<system>/<model>/<scenario>/measurements.json    deepgap's versioned result
    OUTPUT/results/<system>/<model>/<scenario>/user.conf            effective LoadGen settings
    OUTPUT/results/<system>/<model>/<scenario>/TEST01/performance/run_1/   compliance runs (audit/)
    OUTPUT/systems/<system>.json                                    hardware and software

A run never replaces an earlier result unless asked to with --overwrite.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import OutputError

RESULT_SCHEMA_VERSION = 1
LOADGEN_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json")


@dataclass(frozen=True)
class ResultPaths:
    root: Path
    system: str
    model: str
    scenario: str
    mode: str
    # A compliance test's name (TEST01, TEST04): its performance run goes under its own folder.
    compliance: str | None = None

    @property
    def scenario_dir(self) -> Path:
        return self.root / "results" / self.system / self.model / self.scenario

    @property
    def run_dir(self) -> Path:
        if self.compliance is not None:
            return self.scenario_dir / self.compliance / "performance" / "run_1"
        if self.mode == "accuracy":
            return self.scenario_dir / "accuracy"
        return self.scenario_dir / "performance" / "run_1"

    @property
    def measurements(self) -> Path:
        return self.scenario_dir / "measurements.json"

    @property
    def user_conf(self) -> Path:
        return self.scenario_dir / "user.conf"

    @property
    def system_json(self) -> Path:
        return self.root / "systems" / f"{self.system}.json"


def prepare_run_dir(paths: ResultPaths, overwrite: bool) -> None:
    """Create the run directory, refusing to replace an earlier result unless `overwrite`."""
    run_dir = paths.run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise OutputError(
                f"{run_dir} already holds a result; pass --overwrite to replace it "
                "or --output to write elsewhere"
            )
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write results to {run_dir}: {exc.strerror or exc}") from None


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_run(paths: ResultPaths, run_result: dict[str, Any]) -> None:
    """Add this run's section to measurements.json, keeping the other sections. Compliance
    runs go under "compliance", so readers of "runs" see only the accuracy and performance runs."""
    if paths.compliance is not None:
        update_measurements(paths, {"compliance": {paths.compliance: run_result}})
    else:
        update_measurements(paths, {"runs": {paths.mode: run_result}})


def update_measurements(paths: ResultPaths, sections: dict[str, dict[str, Any]]) -> None:
    """Merge `sections` (top-level key -> entries) into measurements.json, keeping the rest."""
    existing: dict[str, Any] = {}
    if paths.measurements.exists():
        try:
            existing = json.loads(paths.measurements.read_text())
        except json.JSONDecodeError:
            raise OutputError(f"{paths.measurements} is not valid JSON; move it aside") from None
    existing.setdefault("runs", {})
    existing["schema_version"] = RESULT_SCHEMA_VERSION
    existing["system"] = paths.system
    existing["model"] = paths.model
    existing["scenario"] = paths.scenario
    for key, entries in sections.items():
        existing.setdefault(key, {}).update(entries)
    performance = sections.get("runs", {}).get("performance")
    if performance is not None and "power" in performance:
        # GPU power of the performance run, at the top level where reports look for it.
        existing["power"] = performance["power"]
    write_json_atomic(paths.measurements, existing)


def load_measurements(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise OutputError(f"{path}: no such result file") from None
    except json.JSONDecodeError as exc:
        raise OutputError(f"{path}: not valid JSON ({exc})") from None
    version = data.get("schema_version")
    if version != RESULT_SCHEMA_VERSION:
        raise OutputError(f"{path}: result schema {version!r}, this deepgap reads {RESULT_SCHEMA_VERSION}")
    return data
