"""Results layout, in MLPerf's submission shape:

    OUTPUT/results/<system>/<model>/<scenario>/performance/run_1/   LoadGen logs, deepgap.log
    OUTPUT/results/<system>/<model>/<scenario>/accuracy/            logs, accuracy.txt
    OUTPUT/results/<system>/<model>/<scenario>/measurements.json    deepgap's versioned result
    OUTPUT/results/<system>/<model>/<scenario>/user.conf            effective LoadGen settings
    OUTPUT/results/<system>/<model>/<scenario>/TEST01/performance/run_1/   compliance runs (audit/)
    OUTPUT/systems/<system>.json                                    hardware and software

A run holds its scenario folder locked from its start to its end (a second run into it is
refused at once), checks everything it will write into before it measures anything, and
writes its logs into a sibling `<run>.partial-<pid>/` marked as interrupted until it has
finished. Only then is the new folder swapped in and measurements.json updated, so a run
that dies (kill -9 included) leaves the earlier result and its record as they were. A run
never replaces an earlier result unless asked to with --overwrite.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from plumbing.errors import OutputError
from plumbing.files import folder_lock, write_atomic

log = logging.getLogger(__name__)

RESULT_SCHEMA_VERSION = 1
LOADGEN_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json")
PARTIAL = ".partial-"  # run_1.partial-<pid>: a run being written, or one that died
REPLACED = ".replaced-"  # run_1.replaced-<pid>: the earlier result, for the instant of the swap
# In a run folder until its result is recorded: a folder holding it is not a result.
INTERRUPTED_MARKER = "deepgap-interrupted.json"


@dataclass(frozen=True)
class ResultPaths:
    root: Path
    system: str
    model: str
    scenario: str
    mode: str
    # A compliance test's name (TEST01, TEST04): its performance run goes under its own folder.
    compliance: str | None = None
    # Set while the run is written: run_dir is then the sibling `<run>.partial-<staging>`.
    staging: str | None = None

    @property
    def scenario_dir(self) -> Path:
        return self.root / "results" / self.system / self.model / self.scenario

    @property
    def final_run_dir(self) -> Path:
        if self.compliance is not None:
            return self.scenario_dir / self.compliance / "performance" / "run_1"
        if self.mode == "accuracy":
            return self.scenario_dir / "accuracy"
        return self.scenario_dir / "performance" / "run_1"

    @property
    def run_dir(self) -> Path:
        final = self.final_run_dir
        return final if self.staging is None else final.with_name(final.name + PARTIAL + self.staging)

    @property
    def measurements(self) -> Path:
        return self.scenario_dir / "measurements.json"

    @property
    def user_conf(self) -> Path:
        return self.scenario_dir / "user.conf"

    @property
    def system_json(self) -> Path:
        return self.root / "systems" / f"{self.system}.json"

    @property
    def section(self) -> tuple[str, str]:
        """Where measurements.json records this run: ("runs", mode) or ("compliance", test)."""
        return ("compliance", self.compliance) if self.compliance is not None else ("runs", self.mode)


def check_outputs(paths: ResultPaths) -> None:
    """Refuse now, before anything is measured, what would make the run fail when it saves
    its result: a measurements.json that does not parse, a folder where a file goes."""
    for path in (paths.measurements, paths.user_conf, paths.system_json):
        if path.exists() and not path.is_file():
            raise OutputError(f"{path} is in the way: it should be a file; move it aside")
    for path in (paths.final_run_dir, paths.system_json.parent):
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path} is in the way: it should be a folder; move it aside")
    if paths.measurements.exists():
        _read_result_file(paths.measurements)
    try:
        paths.system_json.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write results to {paths.system_json.parent}: {exc.strerror or exc}") from None


def holds_result(paths: ResultPaths) -> bool:
    """Whether the run folder holds a finished run (not a partial or interrupted one)."""
    run_dir = paths.final_run_dir
    return run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / INTERRUPTED_MARKER).exists()


def refuse_existing(run_dir: Path, what: str = "it") -> None:
    raise OutputError(f"{run_dir} already holds a result; pass --overwrite to replace {what} "
                      "or --output to write elsewhere")


class RunFolder:
    """One run's result folder, from before anything is measured until its result is
    recorded: the scenario folder locked, the outputs checked, what an interrupted run left
    tidied, and the run written into `staged.run_dir` until `commit` swaps it in."""

    def __init__(self, paths: ResultPaths, overwrite: bool) -> None:
        self.paths = replace(paths, staging=None)
        self.staged = replace(paths, staging=str(os.getpid()))
        self.overwrite = overwrite
        self.run_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}-{secrets.token_hex(4)}"
        self.committed = False
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> RunFolder:
        with contextlib.ExitStack() as stack:
            stack.enter_context(folder_lock(self.paths.scenario_dir))
            check_outputs(self.paths)
            recover(self.paths)
            if not self.overwrite and holds_result(self.paths):
                refuse_existing(self.paths.final_run_dir)
            self._start()
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if not self.committed:  # a failure before the result existed: the old one stays
                shutil.rmtree(self.staged.run_dir, ignore_errors=True)
        finally:
            self._stack.close()

    def _start(self) -> None:
        run_dir = self.staged.run_dir
        marker = {"status": "interrupted", "run_id": self.run_id, "pid": os.getpid(),
                  "note": "written when the run started and removed when its result is recorded: "
                          "a folder that still holds it is not a result"}
        try:
            run_dir.mkdir(parents=True)
            write_atomic(run_dir / INTERRUPTED_MARKER, json.dumps(marker, indent=2) + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write results to {run_dir}: {exc.strerror or exc}") from None

    def commit(self, result: dict[str, Any]) -> None:
        """Swap the finished run in for the earlier one and record `result`. Each step is
        one rename or one atomic write; `recover` finishes or undoes a swap that died."""
        final, staged = self.paths.final_run_dir, self.staged.run_dir
        aside = final.with_name(final.name + REPLACED + str(os.getpid()))
        try:
            if final.exists():
                final.rename(aside)
            staged.rename(final)
        except OSError as exc:
            if aside.exists() and not final.exists():
                aside.rename(final)
            raise OutputError(f"cannot move the new result into {final}: {exc.strerror or exc}") from None
        try:
            record_run(self.paths, {**result, "run_id": self.run_id})
        except BaseException:
            final.rename(staged)
            if aside.exists():
                aside.rename(final)
            raise
        self.committed = True
        with contextlib.suppress(OSError):
            (final / INTERRUPTED_MARKER).unlink()
        shutil.rmtree(aside, ignore_errors=True)


def recover(paths: ResultPaths) -> None:
    """Called holding the lock: finish or undo a swap that an interrupted run left, and
    remove the partial folders of runs that died."""
    final = paths.final_run_dir
    if not final.parent.is_dir():
        return
    try:
        marker = final / INTERRUPTED_MARKER
        if marker.is_file():
            recorded = _read_json_or_none(paths.measurements) or {}
            key, name = paths.section
            recorded_id = ((recorded.get(key) or {}).get(name) or {}).get("run_id")
            if recorded_id is not None and recorded_id == (_read_json_or_none(marker) or {}).get("run_id"):
                marker.unlink()  # recorded: only the tidying after the swap was left
            else:
                log.warning("removing %s: an interrupted run moved it in but never recorded it", final)
                shutil.rmtree(final)
        for aside in sorted(final.parent.glob(glob.escape(final.name) + REPLACED + "*")):
            if final.exists():
                shutil.rmtree(aside)
            else:
                log.warning("restoring %s from %s, which an interrupted run had moved aside", final, aside.name)
                aside.rename(final)
        for partial in sorted(final.parent.glob(glob.escape(final.name) + PARTIAL + "*")):
            log.warning("removing %s, left by an interrupted run", partial)
            shutil.rmtree(partial)
    except OSError as exc:
        raise OutputError(f"cannot tidy {final.parent} after an interrupted run: {exc.strerror or exc}") from None


def remove_empty_loadgen_files(run_dir: Path, keep_accuracy_log: bool) -> None:
    """Remove what LoadGen creates and leaves empty: mlperf_log_trace.json (trace logging
    is off, LoadGen opens the file anyway) and, unless `keep_accuracy_log`, a performance
    run's mlperf_log_accuracy.json that holds no sampled response ('[]'). One that holds
    responses (accuracy log sampling asked for them) is kept."""
    trace = run_dir / "mlperf_log_trace.json"
    accuracy = run_dir / "mlperf_log_accuracy.json"
    try:
        if trace.is_file() and trace.stat().st_size == 0:
            trace.unlink()
        if not keep_accuracy_log and accuracy.is_file() and accuracy.stat().st_size <= 64:
            with contextlib.suppress(ValueError):
                if json.loads(accuracy.read_text() or "null") == []:
                    accuracy.unlink()
    except OSError as exc:
        raise OutputError(f"cannot tidy {run_dir}: {exc.strerror or exc}") from None


def write_result_file(path: Path, text: str) -> None:
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_json_atomic(path: Path, data: Any) -> None:
    write_result_file(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def record_run(paths: ResultPaths, run_result: dict[str, Any]) -> None:
    """Add this run's section to measurements.json, keeping the other sections. Compliance
    runs go under "compliance", so readers of "runs" see only the accuracy and performance runs."""
    key, name = paths.section
    update_measurements(paths, {key: {name: run_result}})


def update_measurements(paths: ResultPaths, sections: dict[str, dict[str, Any]], merge: bool = True) -> None:
    """Merge `sections` (top-level key -> entries) into measurements.json, keeping the rest;
    with merge=False each given section replaces the old one whole."""
    existing: dict[str, Any] = _read_result_file(paths.measurements) if paths.measurements.exists() else {}
    existing.setdefault("runs", {})
    existing["schema_version"] = RESULT_SCHEMA_VERSION
    existing["system"] = paths.system
    existing["model"] = paths.model
    existing["scenario"] = paths.scenario
    for key, entries in sections.items():
        if merge:
            existing.setdefault(key, {}).update(entries)
        else:
            existing[key] = dict(entries)
    performance = sections.get("runs", {}).get("performance")
    if performance is not None and "power" in performance:
        # GPU power of the performance run, at the top level where reports look for it.
        existing["power"] = performance["power"]
    write_json_atomic(paths.measurements, existing)


def forget_run(paths: ResultPaths) -> None:
    """Remove a run's folder and its record (an earlier submission's optional test that
    this one did not run): measurements.json never describes a run that is not there."""
    folder = paths.scenario_dir / paths.compliance if paths.compliance else paths.final_run_dir
    shutil.rmtree(folder, ignore_errors=True)
    if paths.measurements.exists():
        data = _read_result_file(paths.measurements)
        key, name = paths.section
        if name in (data.get(key) or {}):
            del data[key][name]
            write_json_atomic(paths.measurements, data)


def load_measurements(path: Path) -> dict[str, Any]:
    if not Path(path).exists():
        raise OutputError(f"{path}: no such result file")
    data = _read_result_file(Path(path))
    version = data.get("schema_version")
    if version != RESULT_SCHEMA_VERSION:
        raise OutputError(f"{path}: result schema {version!r}, this deepgap reads {RESULT_SCHEMA_VERSION}")
    return data


def _read_result_file(path: Path) -> dict[str, Any]:
    """measurements.json as a dict; anything else is an OutputError saying to move it aside."""
    try:
        data = json.loads(path.read_text())
    except IsADirectoryError:
        raise OutputError(f"{path} is in the way: it should be a file; move it aside") from None
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OutputError(f"{path} is not valid JSON ({exc}); move it aside") from None
    if not isinstance(data, dict):
        raise OutputError(f"{path} is not a deepgap result (not a JSON object); move it aside")
    return data


def _read_json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
