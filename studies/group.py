"""One group of a study: a model, precision and backend on the present device, with its
one backend shared by all its points (Offline batch sizes, the Server search and its
ladder, the stream scenarios), each point repeated and saved, resumable. The study that
holds the groups and their order is studies/sweeper.py."""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from runs import limits
from runs.config import resolve
from studies.curves import ladder, spread
from plumbing.errors import OutputError, RunFailed
from runs.loadgen_log import parse_detail, parse_summary
from runs.results import LOADGEN_FILES, ResultPaths, load_measurements
from runs.saved_run import SavedRun
from runs.calibrated_on import CalibratedOn
from runs.runner import RunAbandoned, execute, quality_checks
from runs.sizing import warmup_batch_seconds
from studies.slo import Attempt, SearchSettings, failed_rule, search_max_qps
from studies.study import group_key, point_id, point_stats
from sut.backends.base import Backend
from sut.settings import early_stopping_min_queries


# How much faster than its estimate an Offline point's first run may be and still last its
# minimum duration. In the 2026-11-26 H100/H200 studies three batches in flight ran up to
# 2.23x faster than one batch's round trip (batch 1); where the estimate is right, the
# first repeat lasts this much longer than asked.
FIRST_RUN_MARGIN = 2.5
START_FRACTION = 0.6  # the search starts at this fraction of the tight-loop rate at the Server batch

log = logging.getLogger("deepgap.sweep")  # the sweep's lines, whichever module writes them


class Group:
    """One model, precision and backend: its runs share one loaded backend and dataset."""

    def __init__(self, sweep: Any, model: str, precision: str, backend: str) -> None:
        self.sweep, self.plan, self.store = sweep, sweep.plan, sweep.store
        self.model, self.precision, self.backend_name = model, precision, backend
        self.key = group_key(model, precision, backend)
        scratch = sweep.store.root / "scratch"
        self.scenario_configs = {s: resolve(self._request(s, scratch)) for s in self.plan.scenarios}
        needed = [int(c.knobs["max_batch"]) for c in self.scenario_configs.values()]
        if "Offline" in self.plan.scenarios:
            needed += list(self.plan.batch_sizes)
        in_flight = max(int(c.knobs["in_flight"]) for c in self.scenario_configs.values())
        self.load_config = resolve(self._request("Offline", scratch, max_batch=max(needed), in_flight=in_flight))
        self._backend: Backend | None = None
        self.record: dict[str, Any] = {}
        self.calibrated_on: CalibratedOn | None = None  # the calibration images, for each run's overlap
        self.capacity = 0
        self.offline_rates: dict[int, float] = {}  # batch size -> last measured Offline samples/s

    def _request(self, scenario: str, output: Path, **overrides: Any):
        return self.plan.request(self.model, self.precision, self.backend_name, scenario, output, **overrides)

    # -- shared backend --------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            config = self.load_config
            started = dt.datetime.now(dt.timezone.utc)
            gate_paths = ResultPaths(self.store.root / "gate" / self.key, config.system_name, self.model,
                                     "Offline", "performance")
            checks = quality_checks(config, gate_paths, started)
            self.record = checks.get("record", {})
            self.calibrated_on = checks.get("calibrated_on")
            log.info("%s: loading the backend for batches up to %d", self.key, config.knobs["max_batch"])
            backend = self.sweep.backend_factory(config, checks.get("extra", {}))
            self._prime(backend)
            self._backend = backend
        return self._backend

    def _prime(self, backend: Backend) -> None:
        """Stage the first rows now, so the backend's own loop can be timed before the first
        run. The capacity is the one every run's QSL asks for, so a backend that keeps a
        same-sized buffer (and the CUDA graphs captured on it) keeps them."""
        configured = self.load_config.loadgen.get("performance_sample_count_override")
        self.capacity = min(int(configured or self.dataset.count), self.dataset.count)
        backend.allocate_staging(self.capacity)
        rows = np.arange(min(self.capacity, int(self.load_config.knobs["max_batch"])))
        backend.stage(rows, self.dataset.load(rows))

    def batch_seconds(self, batch: int) -> float:
        """The backend's own time for one batch (a batch larger than the staged set repeats
        staged rows, as the run's own batches do)."""
        return warmup_batch_seconds(self.backend, batch, budget_s=0.3)

    @property
    def dataset(self) -> Any:
        return self.sweep.dataset(self.load_config)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # -- the study's points ------------------------------------------------------------------

    def run(self) -> None:
        for scenario in self.plan.scenarios:
            if scenario == "Offline":
                for batch in self.plan.batch_sizes:
                    self.point("Offline", batch_size=batch)
            elif scenario == "Server":
                self.server()
            else:
                self.point(scenario, batch_size=int(self.scenario_configs[scenario].knobs["max_batch"]))

    def point(self, scenario: str, batch_size: int | None = None, fraction: float | None = None,
              target_qps: float | None = None) -> dict[str, Any] | None:
        pid = point_id(self.model, self.precision, self.backend_name, scenario, batch_size, fraction)
        finished = self.store.finished_point(pid)
        if finished is not None:
            self.sweep.progress.skipped(len(finished["runs"]))
            if scenario == "Offline" and finished["stats"]["samples_per_s"]:
                self.offline_rates[batch_size] = finished["stats"]["samples_per_s"]["mean"]
            return finished
        runs = []
        try:
            for repeat in range(1, self.plan.repeats + 1):
                runs.append(self.measure(pid, repeat, scenario, batch_size, target_qps))
        except RunAbandoned:
            raise
        except RunFailed as exc:
            self.sweep.fail(f"{pid}: {exc}")
            return None
        if scenario == "Server":
            batch_size = int(self.scenario_configs["Server"].knobs["max_batch"])
        point = {
            "id": pid, "model": self.model, "precision": self.precision, "backend": self.backend_name,
            "scenario": scenario, "batch_size": batch_size, "target_qps": target_qps,
            "load_fraction": fraction, "runs": runs, "stats": point_stats(runs),
        }
        if scenario == "Offline":
            point["batch_ms"] = spread(r["batch_ms"] for r in runs)
        self.store.save_point(point)
        self.sweep.save()
        return point

    def measure(self, pid: str, repeat: int, scenario: str, batch_size: int | None,
                target_qps: float | None) -> dict[str, Any]:
        """One repeat of a point: reuse its saved result, else run it."""
        root = self.store.run_root(pid, repeat)
        overrides: dict[str, Any] = {}
        if scenario == "Offline":
            overrides["max_batch"] = batch_size
        if scenario == "Server":
            overrides["target_qps"] = target_qps
        saved = self._saved(root, scenario, overrides)
        if saved is not None:
            self.sweep.progress.skipped(1)
            return self._entry(saved, repeat)
        batch_ms = None
        if scenario == "Offline":
            # Size the Offline query from this batch size's own rate: the profile's expected
            # rate is for its large batch and would make small-batch runs last minutes.
            per_batch = self.batch_seconds(batch_size)
            overrides["target_qps"] = self.offline_expected(batch_size, batch_size / per_batch)
            batch_ms = per_batch * 1e3
        started = time.monotonic()
        saved = self._execute(root, scenario, self.plan.duration_ms, overrides,
                              {"point": pid, "repeat": repeat, "batch_ms": batch_ms})
        entry = self._entry(saved, repeat)
        if scenario == "Offline":
            self.offline_rates[batch_size] = entry["samples_per_s"]
        self.sweep.progress.ran(f"{pid} r{repeat}", time.monotonic() - started, _run_line(entry))
        return entry

    def offline_expected(self, batch: int, tight_rate: float) -> float:
        """Expected Offline samples/s for LoadGen's query size (1.1 x duration x rate).

        An earlier repeat's measured rate at this batch size is the best estimate. Before
        one exists: the backend's own loop overstates what the harness reaches where
        per-batch overhead dominates (small batches; the null backend by orders of
        magnitude), so a measured rate at the nearest smaller batch, scaled by the batch
        ratio, bounds it from above (a batch never costs less than a smaller one). But one
        batch's round trip understates a GPU with several batches in flight, which made
        first runs end before their minimum duration (INVALID); FIRST_RUN_MARGIN
        lengthens them instead: too long costs seconds, too short costs the run."""
        if batch in self.offline_rates:
            return self.offline_rates[batch]
        smaller = [b for b in self.offline_rates if b <= batch]
        estimate = min(tight_rate, limits.HARNESS_MAX_SAMPLES_PER_S)  # the null backend's loop: 46M/s
        if smaller:
            nearest = max(smaller)
            estimate = min(tight_rate, self.offline_rates[nearest] * batch / nearest)
        return FIRST_RUN_MARGIN * estimate

    def _execute(self, root: Path, scenario: str, duration_ms: int, overrides: dict[str, Any],
                 sweep_record: dict[str, Any]) -> tuple[dict[str, Any], Path]:
        request = self._request(scenario, root, min_duration_ms=duration_ms, user_conf=self.sweep.slo_conf,
                                overwrite=True, **overrides)
        config = resolve(request)
        backend = self.backend  # loads (and gates) before the run is timed
        record = {**self.record, "sweep": {"study": str(self.store.root), **sweep_record}}
        outcome = execute(config, self.sweep.show_progress, backend, self.dataset, record=record,
                          calibrated_on=self.calibrated_on)
        return outcome.result, outcome.paths.measurements

    def _saved(self, root: Path, scenario: str, overrides: dict[str, Any]) -> tuple[dict[str, Any], Path] | None:
        """A repeat already measured (its measurements.json holds a successful run)."""
        request = self._request(scenario, root, **{k: v for k, v in overrides.items() if k == "max_batch"})
        paths = ResultPaths(root, resolve(request).system_name, self.model, scenario, "performance")
        if not paths.measurements.exists():
            return None
        result = load_measurements(paths.measurements).get("runs", {}).get("performance")
        if not result or result.get("status") != "ok" or "summary" not in result:
            return None
        return result, paths.measurements

    def _entry(self, saved: tuple[dict[str, Any], Path], repeat: int) -> dict[str, Any]:
        result, measurements = saved
        entry = SavedRun.from_record(result, str(measurements)).study_entry(self.store.relative(measurements))
        entry["repeat"] = repeat
        entry["batch_ms"] = (result.get("sweep") or {}).get("batch_ms")
        return entry

    # -- Server: SLO search, then the load ladder ---------------------------------------------

    def server(self) -> None:
        state = self.store.search_state(self.key)
        if not (state and state.get("done")):
            state = self.search(state or {})
        if state["max_qps"] is None:
            stopped = state.get("stopped")
            self.sweep.fail(f"{self.key}: no Server load met {self.plan.slo.label}" + (f": {stopped}" if stopped else ""))
            return
        for fraction, qps in ladder(state["max_qps"], self.plan.ladder):
            self.point("Server", fraction=fraction, target_qps=qps)

    def search(self, state: dict[str, Any]) -> dict[str, Any]:
        slo = self.plan.slo
        base = {"key": self.key, "model": self.model, "precision": self.precision, "backend": self.backend_name,
                "percentile": slo.percentile, "latency_ms": slo.latency_ms}
        server_batch = int(self.scenario_configs["Server"].knobs["max_batch"])
        start = state.get("start_qps")
        if start is None:
            # From the backend's own rate at the Server batch, bounded by the Offline rates
            # the study measured: the harness may be far slower than the backend's loop, and
            # an overloaded Server run lasts until its whole backlog drains.
            start = START_FRACTION * self.offline_expected(server_batch, server_batch / self.batch_seconds(server_batch))
        recorded = [Attempt.from_json(a) for a in state.get("attempts", [])]
        made: list[Attempt] = []

        def trial(qps: float, duration_ms: int, phase: str) -> Attempt:
            i = len(made)
            old = recorded[i] if i < len(recorded) else None
            if old is not None and math.isclose(old.target_qps, qps, rel_tol=1e-9) and old.duration_ms == duration_ms:
                attempt = old  # resumed: the search is deterministic, so it asks again for what it ran
                self.sweep.progress.skipped(1)
            else:
                attempt = self.attempt(i, qps, duration_ms, phase)
            made.append(attempt)
            self.store.save_search(self.key, {**base, "start_qps": start, "done": False,
                                              "attempts": [a.to_json() for a in made]})
            return attempt

        settings = SearchSettings(start, self.plan.search_ms, self.plan.confirm_ms, tolerance=self.plan.search_tolerance)
        result = search_max_qps(trial, settings)
        ladder_ids = [point_id(self.model, self.precision, self.backend_name, "Server", load_fraction=f)
                      for f, _ in (ladder(result.max_qps, self.plan.ladder) if result.max_qps else [])]
        state = {**base, "start_qps": start, "done": True, **result.to_json(), "ladder": ladder_ids,
                 "server_knobs": {k: self.scenario_configs["Server"].knobs[k]
                                  for k in ("max_batch", "batch_timeout_us", "in_flight")}}
        self.store.save_search(self.key, state)
        log.info("%s: highest Server load meeting %s: %s (%s)", self.key, slo.label,
                 f"{result.max_qps:,.1f} QPS" if result.max_qps else "none",
                 "confirmed" if result.confirmed else "NOT confirmed by a full-length run")
        if result.stopped and result.max_qps is not None:
            log.warning("%s: %s", self.key, result.stopped)
        return state

    def attempt(self, index: int, qps: float, duration_ms: int, phase: str) -> Attempt:
        root = self.store.root / "searches" / self.key / f"a{index:02d}"
        started = time.monotonic()
        result, measurements = self._execute(root, "Server", duration_ms, {"target_qps": qps},
                                             {"search": self.key, "attempt": index, "phase": phase})
        run = SavedRun.from_record(result, str(measurements))
        entry = run.study_entry(self.store.relative(measurements))
        attempt = Attempt(target_qps=qps, duration_ms=duration_ms, phase=phase, valid=entry["valid"],
                          latency_ms=entry["latency_ms"], achieved_qps=entry["samples_per_s"],
                          measurements=entry["measurements"], invalid_reasons=list(run.summary.invalid_reasons) if run.summary else [],
                          failed_rule=None if entry["valid"] else _failed_rule(root, result))
        line = _run_line(entry) + (f" ({attempt.failed_rule})" if attempt.failed_rule else "")
        self.sweep.progress.ran(f"{self.key} Server search {phase} {qps:,.1f} QPS", time.monotonic() - started, line)
        return attempt


def _failed_rule(root: Path, result: dict[str, Any]) -> str | None:
    """The LoadGen rule an invalid Server run failed, from its summary file (the saved
    result keeps no 'Performance constraints satisfied') and the query count of its detail log."""
    request = result["config"]["request"]
    paths = ResultPaths(root, result["config"]["system_name"], request["model"], "Server", "performance")
    try:
        summary = parse_summary(paths.run_dir / LOADGEN_FILES[0])
    except OutputError:
        return None
    try:
        processed = parse_detail(paths.run_dir / LOADGEN_FILES[1]).result.get("query_count")
    except OutputError:
        processed = None
    percentile = result["config"]["loadgen"].get("server_target_latency_percentile")
    clean_count_met = (None if not isinstance(processed, int) or percentile is None
                       else processed >= early_stopping_min_queries("Server", float(percentile)))
    return failed_rule(summary.perf_constraints_satisfied, summary.early_stopping_satisfied,
                       summary.min_queries_satisfied, summary.min_duration_satisfied, clean_count_met)


def _run_line(entry: dict[str, Any]) -> str:
    lat = entry["latency_ms"]
    power = entry.get("power") or {}
    watts = f", {power['avg_w']:.0f} W" if power.get("source") == "nvml" else ""
    return (f"{'VALID' if entry['valid'] else 'INVALID'} {entry['samples_per_s']:,.1f} samples/s, "
            f"p99 {lat.get('p99', float('nan')):.2f} ms{watts}")
