"""Read-side of a study: STUDY_DIR/study.json (schema deepgap.study/1) into typed dataclasses.

The sweep writes study.json; reports and the capacity planner only read it. Reading is
strict about the fields they use (a malformed file is one line naming the file and the
field) and tolerant of extra fields, so a newer writer does not break older readers.
Nothing here computes a figure the study already holds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plumbing.errors import StudyError
from reports.study_fields import NUMBER, Fields, check_figure
from runs.device import ENDPOINT_PREFIX
from sut.settings import SCENARIOS

log = logging.getLogger(__name__)

STUDY_SCHEMA = "deepgap.study/1"
STUDY_FILE = "study.json"
LEGACY_CPU_NAME = "CPU"  # a CPU system's name before it carried the CPU model


@dataclass(frozen=True)
class Stat:
    """Mean, standard deviation and run count of one figure over repeated runs."""

    mean: float
    std: float
    n: int

    @property
    def rel_std(self) -> float:
        return self.std / self.mean if self.mean else 0.0


@dataclass(frozen=True)
class Power:
    source: str  # "nvml" or "absent"
    reason: str | None  # why it is absent
    label: str | None  # e.g. "GPU-only": what the reading covers
    avg_w: float | None
    samples_per_joule: float | None
    mj_per_query: float | None

    @property
    def present(self) -> bool:
        return self.source != "absent"


@dataclass(frozen=True)
class Run:
    measurements: str
    valid: bool
    samples_per_s: float
    latency_ms: dict[str, float | None]  # "p50", "p90", "p99"
    power: Power | None


@dataclass(frozen=True)
class PointStats:
    samples_per_s: Stat
    p99_ms: Stat | None
    watts: Stat | None
    samples_per_joule: Stat | None
    mj_per_query: Stat | None


@dataclass(frozen=True)
class Point:
    id: str
    model: str
    precision: str
    backend: str
    scenario: str
    batch_size: int | None
    target_qps: float | None
    runs: tuple[Run, ...]
    stats: PointStats

    @property
    def valid_runs(self) -> int:
        return sum(1 for r in self.runs if r.valid)

    def power_absent_reason(self) -> str | None:
        """Why no run of this point has power, or None if one has."""
        if any(r.power is not None and r.power.present for r in self.runs):
            return None
        reasons = {r.power.reason for r in self.runs if r.power is not None and r.power.reason}
        return "; ".join(sorted(reasons)) or "no power reading recorded"

    def power_label(self) -> str | None:
        labels = {r.power.label for r in self.runs if r.power is not None and r.power.present and r.power.label}
        return ", ".join(sorted(labels)) or None


@dataclass(frozen=True)
class Curve:
    model: str
    precision: str
    backend: str
    points: dict[int, float]  # batch size -> mean samples/s
    knee_90: int | None
    knee_95: int | None
    peak: float


@dataclass(frozen=True)
class Attempt:
    target_qps: float
    duration_ms: float | None
    valid: bool
    latency_ms: dict[str, float | None]
    phase: str | None = None  # "search" (short run) or "confirm" (full length); None: not recorded


@dataclass(frozen=True)
class SloSearch:
    model: str
    precision: str
    backend: str
    percentile: float
    latency_ms: float
    max_qps: float | None  # None: no load met the bound
    confirmed: bool
    attempts: tuple[Attempt, ...]
    ladder: tuple[str, ...]  # point ids
    batch_timeout_us: int | None = None  # the Server batch timeout searched with; None: not recorded


def _system_name(system: "Fields") -> str:
    """Studies written before CPU names carried the model are named plain 'CPU': they take
    today's name from the model and cores they recorded, so two hosts are not one system."""
    from runs.system import cpu_system_label

    name = system.get("name", str)
    description = system.get("description", dict, nullable=True) or {}
    model, cores = description.get("host_processor_model_name"), description.get("host_processor_core_count")
    if name == LEGACY_CPU_NAME and isinstance(model, str) and isinstance(cores, int):
        return cpu_system_label(model, cores)
    return name


@dataclass(frozen=True)
class SystemInfo:
    name: str
    device: str
    gpu_count: int
    driver: str | None
    software: dict[str, Any]
    torch_compile: str = "none"  # the study's torch runs: "none" (eager) or the --compile mode

    def stack(self, backend: str) -> str:
        """The backend as its software stack: 'torch-inductor' for the compiled torch runs of
        this system, so a plan does not call a compiled capacity plain 'torch'."""
        from runs.system import backend_label

        return backend_label(backend, self.torch_compile)

    @property
    def is_endpoint(self) -> bool:  # a remote server's replica (runs/endpoint.py names it so)
        return self.name.startswith(ENDPOINT_PREFIX)

    @property
    def is_cpu(self) -> bool:
        return not self.is_endpoint and (self.gpu_count == 0 or "cpu" in self.device.lower())

    @property
    def devices(self) -> int:
        """Units the system's figures divide by: its GPUs, one host for the CPU, one replica of an endpoint."""
        return 1 if self.is_cpu or self.is_endpoint else self.gpu_count

    @property
    def unit(self) -> str:
        return "replica" if self.is_endpoint else "host" if self.is_cpu else "GPU"


@dataclass(frozen=True)
class PlanInfo:
    """What the study's figures rest on, from its recorded plan (sweep flags)."""

    repeats: int
    scenarios: tuple[str, ...]
    duration_ms: float  # every measured point's runs
    search_ms: float  # the Server SLO search's short runs
    confirm_ms: float  # its full-length confirmation runs
    skip_accuracy_gate: bool
    weights: str  # "seeded" unless the plan chose other weights
    run_profile: str  # "quick" unless the plan chose another


@dataclass(frozen=True)
class Study:
    directory: Path
    created_utc: str
    command: str
    system: SystemInfo
    points: tuple[Point, ...]
    curves: tuple[Curve, ...]
    slo_searches: tuple[SloSearch, ...]
    plan: PlanInfo | None = None  # None: study.json records no plan
    _by_id: dict[str, Point] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.system.name

    def point(self, point_id: str) -> Point:
        return self._by_id[point_id]

    def select(self, scenario: str, model: str | None = None, precision: str | None = None,
               backend: str | None = None) -> list[Point]:
        return [p for p in self.points if p.scenario == scenario
                and (model is None or p.model == model)
                and (precision is None or p.precision == precision)
                and (backend is None or p.backend == backend)]


def _stat(f: Fields, key: str, nullable: bool) -> Stat | None:
    s = f.child(key, nullable)
    if s is None:
        return None
    return Stat(mean=s.number("mean"), std=s.number("std"), n=s.get("n", int))


def _latencies(f: Fields, key: str) -> dict[str, float | None]:
    lat = f.child(key)
    return {k: lat.number(k, nullable=True) for k in ("p50", "p90", "p99")}


def _power(f: Fields) -> Power | None:
    p = f.child("power", nullable=True)
    if p is None:
        return None
    return Power(source=p.get("source", str), reason=p.get("reason", str, nullable=True),
                 label=p.get("label", str, nullable=True), avg_w=p.number("avg_w", nullable=True),
                 samples_per_joule=p.number("samples_per_joule", nullable=True),
                 mj_per_query=p.number("mj_per_query", nullable=True))


def _point(f: Fields) -> Point:
    scenario = f.get("scenario", str)
    if scenario not in SCENARIOS:
        raise StudyError(f"{f.source}: {f.where}.scenario {scenario!r} is not one of {', '.join(SCENARIOS)}")
    runs = tuple(Run(measurements=r.get("measurements", str), valid=r.get("valid", bool),
                     samples_per_s=r.number("samples_per_s"), latency_ms=_latencies(r, "latency_ms"),
                     power=_power(r)) for r in f.children("runs"))
    s = f.child("stats")
    stats = PointStats(samples_per_s=_stat(s, "samples_per_s", False), p99_ms=_stat(s, "p99_ms", True),
                       watts=_stat(s, "watts", True), samples_per_joule=_stat(s, "samples_per_joule", True),
                       mj_per_query=_stat(s, "mj_per_query", True))
    target = f.number("target_qps", nullable=True)
    return Point(id=f.get("id", str), model=f.get("model", str), precision=f.get("precision", str),
                 backend=f.get("backend", str), scenario=scenario, batch_size=f.get("batch_size", int, nullable=True),
                 target_qps=target, runs=runs, stats=stats)


def _curve(f: Fields) -> Curve:
    raw = f.get("points", dict)
    points: dict[int, float] = {}
    for key, value in raw.items():
        # JSON object keys are strings: the batch sizes arrive as "1", "8", ...
        try:
            batch = int(key)
        except ValueError:
            raise StudyError(f"{f.source}: {f.where}.points key {key!r} is not a batch size") from None
        if isinstance(value, bool) or not isinstance(value, NUMBER):
            raise StudyError(f"{f.source}: {f.where}.points[{key!r}] is not a number")
        check_figure(f.source, f"{f.where}.points[{key!r}]", batch)
        check_figure(f.source, f"{f.where}.points[{key!r}]", value)
        points[batch] = float(value)
    return Curve(model=f.get("model", str), precision=f.get("precision", str), backend=f.get("backend", str),
                 points=dict(sorted(points.items())), knee_90=f.get("knee_90", int, nullable=True),
                 knee_95=f.get("knee_95", int, nullable=True), peak=f.number("peak"))


def _search(f: Fields) -> SloSearch:
    attempts = tuple(Attempt(target_qps=a.number("target_qps"), duration_ms=a.number("duration_ms", nullable=True),
                             valid=a.get("valid", bool), latency_ms=_latencies(a, "latency_ms"),
                             phase=a.get("phase", str, nullable=True))
                     for a in f.children("attempts"))
    ladder = f.get("ladder", list)
    if not all(isinstance(i, str) for i in ladder):
        raise StudyError(f"{f.source}: {f.where}.ladder must list point ids")
    knobs = f.child("server_knobs", nullable=True)
    timeout = None if knobs is None else knobs.get("batch_timeout_us", int, nullable=True)
    return SloSearch(model=f.get("model", str), precision=f.get("precision", str), backend=f.get("backend", str),
                     percentile=f.number("percentile"), latency_ms=f.number("latency_ms"),
                     max_qps=f.number("max_qps", nullable=True), confirmed=f.get("confirmed", bool),
                     attempts=attempts, ladder=tuple(ladder), batch_timeout_us=timeout)


def _plan(f: Fields | None) -> PlanInfo | None:
    if f is None:
        return None
    base = f.child("base", nullable=True)
    scenarios = f.get("scenarios", list)
    if not all(isinstance(x, str) for x in scenarios):
        raise StudyError(f"{f.source}: plan.scenarios must list scenario names")
    # The sweep leaves defaults out of plan.base; these are CliRequest's defaults.
    return PlanInfo(repeats=f.get("repeats", int), scenarios=tuple(scenarios), duration_ms=f.number("duration_ms"),
                    search_ms=f.number("search_ms"), confirm_ms=f.number("confirm_ms"),
                    skip_accuracy_gate=bool(base and base.get("skip_accuracy_gate", bool, nullable=True)),
                    weights=(base and base.get("weights", str, nullable=True)) or "seeded",
                    run_profile=(base and base.get("run_profile", str, nullable=True)) or "quick")


def load_study(path: Path | str) -> Study:
    """STUDY_DIR (or its study.json) -> Study. Raises StudyError, one line, naming the problem."""
    path = Path(path)
    file = path if path.is_file() else path / STUDY_FILE
    directory = file.parent
    if not path.exists():
        raise StudyError(f"{path}: no such study directory")
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise StudyError(f"{path}: no {STUDY_FILE} (not a study directory)") from None
    except OSError as exc:
        raise StudyError(f"{file}: cannot read ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StudyError(f"{file}: not valid JSON ({exc})") from None
    top = Fields(file, "", data)
    schema = top.get("schema", str, nullable=True)
    if schema != STUDY_SCHEMA:
        raise StudyError(f"{file}: schema {schema!r}, this deepgap reads {STUDY_SCHEMA!r}")
    s = top.child("system")
    system = SystemInfo(name=_system_name(s), device=s.get("device", str), gpu_count=s.get("gpu_count", int),
                        driver=s.get("driver", str, nullable=True), software=s.get("software", dict, nullable=True) or {},
                        torch_compile=s.get("torch_compile", str, nullable=True) or "none")
    points = tuple(_point(p) for p in top.children("points"))
    by_id: dict[str, Point] = {}
    for p in points:
        if p.id in by_id:
            raise StudyError(f"{file}: point id {p.id!r} appears twice")
        by_id[p.id] = p
    searches = tuple(_search(x) for x in top.children("slo_searches"))
    for search in searches:
        missing = [i for i in search.ladder if i not in by_id]
        if missing:
            raise StudyError(f"{file}: an SLO search's ladder names unknown point {missing[0]!r}")
    study = Study(directory=directory, created_utc=top.get("created_utc", str), command=top.get("command", str),
                  system=system, points=points, curves=tuple(_curve(c) for c in top.children("curves")),
                  slo_searches=searches, plan=_plan(top.child("plan", nullable=True)), _by_id=by_id)
    log.debug("loaded study %s: %d points, %d curves, %d SLO searches", file, len(points),
              len(study.curves), len(searches))
    return study


def load_studies(paths: list[Path]) -> list[Study]:
    """Several studies; their system names must differ, since reports and plans name them."""
    studies = [load_study(p) for p in paths]
    seen: dict[str, Path] = {}
    for study in studies:
        if study.name in seen:
            raise StudyError(f"{study.directory} and {seen[study.name]} both hold system {study.name!r}; "
                             "compare studies of different systems")
        seen[study.name] = study.directory
    return studies
