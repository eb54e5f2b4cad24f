"""Runs a study on the present device: models x precisions x backends x batch sizes, in the
scenarios asked for, each point repeated; resumable. See studies/study.py for the folder and
harness/sweep.py for the command line:

    python -m harness.sweep --study STUDY_DIR --models resnet18 resnet50 --precisions fp16 fp32 \\
        --scenarios Offline Server SingleStream

* Offline: one point per batch size (the batcher's max batch), giving the throughput
  against batch size curve and its knees (smallest batch reaching 90% / 95% of the peak).
* Server: the highest target QPS that LoadGen calls VALID under the SLO (`--slo p99:15ms`),
  found with short runs and confirmed with a full-length one, then a point at each
  fraction of it (`--ladder`) for the latency-throughput curve.
* SingleStream, MultiStream: one point each.

One backend is loaded per model, precision and backend (for the largest batch the study
needs) and shared by all its runs. Every run also measures GPU power (runs/power.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from runs import limits
from plumbing import logs
from runs.config import RunConfig, resolve
from studies.curves import ladder, spread
from plumbing.errors import BackendError, DeepgapError, OutputError, RunFailed
from plumbing.files import folder_lock
from runs.loadgen_log import parse_detail, parse_summary
from runs.results import LOADGEN_FILES, ResultPaths, load_measurements, run_entry
from runs.gating import GateFailed
from runs.runner import CalibratedOn, RunAbandoned, execute, load_backend, make_dataset, quality_checks
from runs.sizing import warmup_batch_seconds
from studies.slo import Attempt, SearchSettings, failed_rule, search_max_qps
from studies.study import StudyPlan, StudyStore, build_study, group_key, point_id, point_stats
from runs.system import backend_label, describe_system
from sut.backends.base import Backend
from sut.settings import early_stopping_min_queries

# How much faster than its estimate an Offline point's first run may be and still last its
# minimum duration. In the 2026-11-26 H100/H200 studies three batches in flight ran up to
# 2.23x faster than one batch's round trip (batch 1); where the estimate is right, the
# first repeat lasts this much longer than asked.
FIRST_RUN_MARGIN = 2.5

log = logging.getLogger("deepgap.sweep")
SWEEP_LOG = "sweep.log"  # in the study folder: the sweep's lines, appended by each call

# (config, backend extras such as INT8 calibration) -> a loaded backend
BackendFactory = Callable[[RunConfig, dict[str, Any]], Backend]
SEARCH_ATTEMPTS_GUESS = 10  # for the run count before a search has run
START_FRACTION = 0.6  # the search starts at this fraction of the tight-loop rate at the Server batch


class StudyProgress:
    """One log line per finished run: how far the study is and roughly how long is left."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.measured = 0
        self._spent = 0.0

    def skipped(self, count: int) -> None:
        self.done += count

    def ran(self, label: str, seconds: float, line: str) -> None:
        self.done += 1
        self.measured += 1
        self._spent += seconds
        left = max(0, self.total - self.done) * self._spent / self.measured
        log.info("[%d/~%d] %s: %s (%.1f s; about %.0f min left)", self.done, self.total, label, line,
                 seconds, left / 60)


class CachedDataset:
    """A dataset that keeps each preprocessed sample after its first load. Every run's QSL
    stages the performance set again; normalising 1024 synthetic 224 px images costs
    seconds of CPU per run, which a study of hundreds of short runs cannot afford. Only
    loaded samples are kept (about 600 MB for 1024 at 224 px)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.count, self.image_size = inner.name, inner.count, inner.image_size
        self._kept: dict[int, np.ndarray] = {}

    def load(self, indices: np.ndarray) -> np.ndarray:
        wanted = [int(i) for i in np.asarray(indices).ravel()]
        missing = sorted({i for i in wanted if i not in self._kept})
        if missing:
            for index, sample in zip(missing, self.inner.load(np.array(missing, dtype=np.int64))):
                self._kept[index] = sample
        return np.stack([self._kept[i] for i in wanted])

    def labels(self) -> np.ndarray | None:
        return self.inner.labels()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


class Sweep:
    def __init__(self, plan: StudyPlan, root: Path, command: str, show_progress: bool = False,
                 backend_factory: BackendFactory | None = None) -> None:
        self.plan = plan
        self.store = StudyStore(root)
        self.command = command
        self.show_progress = show_progress
        self.backend_factory = backend_factory or load_backend
        self.failures: list[str] = []
        self.slo_conf: Path | None = None
        self.system: dict[str, Any] = {}
        self.progress = StudyProgress(planned_runs(plan))
        self._created: str | None = None
        self._dataset: CachedDataset | None = None

    def dataset(self, config: RunConfig) -> CachedDataset:
        """One dataset for the whole study: every group's runs ask for the same one (the plan
        sets dataset, count and image size for all)."""
        if self._dataset is None:
            self._dataset = CachedDataset(make_dataset(config))
        return self._dataset

    def run(self) -> dict[str, Any]:
        groups = self.groups()  # a bad name or device fails before the study folder exists
        # A second sweep into this study is refused; the sweep's own log lines go beside it.
        with folder_lock(self.store.root, "study"), logs.run_log(self.store.root / SWEEP_LOG, append=True):
            return self._run(groups)

    def groups(self) -> list[Group]:
        """Every group with its configuration resolved (device, precision, backend, the
        settings of each scenario), before anything is created or run; an error names the
        group and the sweep's own flags (--precisions, not run.py's --precision)."""
        groups = []
        for model, precision, backend in self.plan.groups():
            try:
                groups.append(Group(self, model, precision, backend))
            except DeepgapError as exc:
                raise in_sweep_words(exc, f"{group_key(model, precision, backend)}: ")
        return groups

    def _run(self, groups: list[Group]) -> dict[str, Any]:
        resuming = self.store.begin(self.plan)
        self.slo_conf = self.store.slo_conf(self.plan.slo)
        self.system = study_system(groups[0].load_config, {g.load_config.knobs["compile"] for g in groups
                                                           if g.backend_name == "torch"})
        previous = self.store.root / "study.json"
        if resuming and previous.exists():
            self._created = load_study_created(previous)
        log.info("%s study in %s: %d group(s), about %d runs", "resuming" if resuming else "starting",
                 self.store.root, len(groups), self.progress.total)
        for group in groups:
            try:
                group.run()
            except RunAbandoned:
                raise
            except (BackendError, GateFailed, RunFailed) as exc:
                self.fail(f"{group.key}: {exc}")
            finally:
                group.close()
                self.save()
        study = self.save()
        if self.failures:
            raise RunFailed(f"{len(self.failures)} part(s) of the study failed, first: {self.failures[0]}; "
                            f"finished points are saved in {self.store.root}, rerun the same command to retry")
        return study

    def fail(self, message: str) -> None:
        log.error("%s", message)
        self.failures.append(message)

    def save(self) -> dict[str, Any]:
        study = build_study(self.store, self.plan, self.command, self.system, self._created)
        self._created = study["created_utc"]
        return study


class Group:
    """One model, precision and backend: its runs share one loaded backend and dataset."""

    def __init__(self, sweep: Sweep, model: str, precision: str, backend: str) -> None:
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
            return self._entry(saved, scenario, repeat)
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
        entry = self._entry(saved, scenario, repeat)
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

    def _entry(self, saved: tuple[dict[str, Any], Path], scenario: str, repeat: int) -> dict[str, Any]:
        result, measurements = saved
        per_query = int(result["config"]["loadgen"].get("multi_stream_samples_per_query", 8)) \
            if scenario == "MultiStream" else 1
        entry = run_entry(result, self.store.relative(measurements), per_query)
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
        entry = run_entry(result, self.store.relative(measurements), 1)
        summary = result.get("summary") or {}
        attempt = Attempt(target_qps=qps, duration_ms=duration_ms, phase=phase, valid=entry["valid"],
                          latency_ms=entry["latency_ms"], achieved_qps=entry["samples_per_s"],
                          measurements=entry["measurements"], invalid_reasons=summary.get("invalid_reasons", []),
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


def planned_runs(plan: StudyPlan) -> int:
    per_group = 0
    for scenario in plan.scenarios:
        if scenario == "Offline":
            per_group += len(plan.batch_sizes) * plan.repeats
        elif scenario == "Server":
            per_group += SEARCH_ATTEMPTS_GUESS + len(plan.ladder) * plan.repeats
        else:
            per_group += plan.repeats
    return per_group * len(plan.groups())


def estimated_seconds(plan: StudyPlan, overhead_s: float = 1.0) -> float:
    """A floor for the study's wall time: run durations plus a per-run overhead; backend
    loads and CUDA graph captures come on top."""
    per_group = 0.0
    for scenario in plan.scenarios:
        if scenario == "Offline":
            per_group += len(plan.batch_sizes) * plan.repeats * (plan.duration_ms / 1e3 + overhead_s)
        elif scenario == "Server":
            per_group += (SEARCH_ATTEMPTS_GUESS - 1) * (plan.search_ms / 1e3 + overhead_s)
            per_group += plan.confirm_ms / 1e3 + overhead_s
            per_group += len(plan.ladder) * plan.repeats * (plan.duration_ms / 1e3 + overhead_s)
        else:
            per_group += plan.repeats * (plan.duration_ms / 1e3 + overhead_s)
    return per_group * len(plan.groups())


def study_system(config: RunConfig, torch_compile: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The study's system. Its torch runs compiled make it another software stack than the
    eager one on the same card ('H200x1-inductor' beside 'H200x1'), so a report can hold
    both and divide one by the other."""
    device = config.device
    compiled = sorted(torch_compile - {"none"})
    info = describe_system(device.system_prefix, device.device, device.count, {})
    info.pop("backend", None)
    nvml = info.get("nvml") or {}
    return {
        "name": device.system_prefix + "".join(backend_label("torch", m).removeprefix("torch") for m in compiled),
        "device": device.name,
        "torch_compile": compiled[0] if compiled else "none",
        "gpu_count": device.count if device.device != "cpu" else 0,
        "driver": nvml.get("driver"),
        "software": {**info["software"], "python": info["python"]},
        "description": info,
    }


def load_study_created(path: Path) -> str | None:
    import json

    try:
        return json.loads(path.read_text()).get("created_utc")
    except (OSError, ValueError):
        return None


_RUN_FLAG = re.compile(r"--(precision|backend|model|scenario)\b(?!s)")


def in_sweep_words(exc: DeepgapError, prefix: str = "") -> DeepgapError:
    """A run's error (its type and exit code kept) in the sweep's words: its flags are
    --precisions, --backends, --models and --scenarios where harness/run.py has
    --precision, ...; `prefix` names the group."""
    exc.args = (prefix + _RUN_FLAG.sub(lambda m: f"--{m.group(1)}s", str(exc)),)
    return exc

