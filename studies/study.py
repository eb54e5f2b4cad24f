"""A study: the plan (what to measure), its folder (what was measured) and study.json.

    STUDY_DIR/plan.json                 the plan; a rerun with another plan is refused
    STUDY_DIR/slo.user.conf             the Server SLO as user.conf lines, used by every run
    STUDY_DIR/points/<id>.json          one finished point: its runs and their spread
    STUDY_DIR/runs/<id>/r<k>/results/   each run's LoadGen logs and measurements.json
    STUDY_DIR/searches/<group>.json     an SLO search's attempts (saved after each one)
    STUDY_DIR/searches/<group>/a<NN>/   each search attempt's logs and measurements.json
    STUDY_DIR/study.json                everything above in one file (deepgap.study/1)

Every file is written atomically; a point is finished when points/<id>.json exists, so an
interrupted study resumes where it stopped and never redoes a finished point.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runs.config import CliRequest
from runs.endpoint import ENDPOINT_FLAGS
from studies.curves import DEFAULT_LADDER, knee, peak, spread
from plumbing.errors import ConfigError, OutputError
from runs.results import write_json_atomic
from studies.slo import MLPERF_SLO, Slo
from sut.backends import backend_info
from sut.settings import SCENARIOS

SCHEMA = "deepgap.study/1"
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# CliRequest fields a plan may set for every run (the rest it chooses itself).
BASE_FIELDS = ("gpu", "gpus", "image_size", "dataset_count", "weights", "seed", "run_profile",
               "skip_accuracy_gate", "min_query_count", "cuda_graphs", "staging", "compile", "instances",
               *ENDPOINT_FLAGS)


@dataclass(frozen=True)
class StudyPlan:
    models: tuple[str, ...] = ("resnet50",)
    precisions: tuple[str, ...] = ("fp32",)
    backends: tuple[str, ...] = ("torch",)
    scenarios: tuple[str, ...] = ("Offline",)
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    repeats: int = 3
    duration_ms: int = 2000  # every measured run (Offline, ladder, SingleStream, MultiStream)
    search_ms: int = 1000  # short Server runs of the SLO search
    confirm_ms: int = 5000  # the search's full-length confirmation runs
    slo: Slo = MLPERF_SLO
    ladder: tuple[float, ...] = DEFAULT_LADDER
    server_max_batch: int | None = None  # Server batching; None = the GPU profile's
    batch_timeout_us: int | None = None
    in_flight: int | None = None
    search_tolerance: float = 0.03
    base: dict[str, Any] = field(default_factory=dict)  # CliRequest fields for every run

    def __post_init__(self) -> None:
        for name in ("models", "precisions", "backends", "scenarios", "batch_sizes", "ladder"):
            values = getattr(self, name)
            if not values:
                raise ConfigError(f"the study needs at least one of --{name.replace('_', '-')}")
            if len(set(values)) != len(values):
                raise ConfigError(f"--{name.replace('_', '-')} lists a value twice: {list(values)}")
        for scenario in self.scenarios:
            if scenario not in SCENARIOS:
                raise ConfigError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
        if any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch sizes must be positive, got {list(self.batch_sizes)}")
        if any(not 0 < f <= 1 for f in self.ladder):
            raise ConfigError(f"ladder fractions must lie in (0, 1], got {list(self.ladder)}")
        for name in ("repeats", "duration_ms", "search_ms", "confirm_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not 0 < self.search_tolerance < 1:
            raise ConfigError(f"--search-tolerance must lie in (0, 1), got {self.search_tolerance}")
        unknown = set(self.base) - set(BASE_FIELDS)
        if unknown:
            raise ConfigError(f"a study cannot set {', '.join(sorted(unknown))} for its runs")
        for model in self.models:  # checks names and values as a run would, before anything runs
            for precision in self.precisions:
                for backend in self.backends:
                    self.request(model, precision, backend, self.scenarios[0], Path("."))

    def groups(self) -> list[tuple[str, str, str]]:
        return [(m, p, b) for m in self.models for p in self.precisions for b in self.backends]

    def request(self, model: str, precision: str, backend: str, scenario: str, output: Path,
                **overrides: Any) -> CliRequest:
        values: dict[str, Any] = dict(self.base)
        values.update(model=model, precision=precision, backend=backend, scenario=scenario, output=output)
        if scenario == "Server":
            values.update(max_batch=self.server_max_batch, batch_timeout_us=self.batch_timeout_us)
        if scenario in ("Server", "Offline"):
            values["in_flight"] = self.in_flight
        values.update(overrides)
        if isinstance(values.get("compile"), bool):  # studies before the compile modes: a flag
            values["compile"] = "max-autotune" if values["compile"] else "none"
        if not backend_info(backend).compiles:
            values.pop("compile", None)  # a study's --compile is for its torch runs
        return CliRequest(**values)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["slo"] = {"percentile": self.slo.percentile, "latency_ms": self.slo.latency_ms}
        return json.loads(json.dumps(data))  # tuples -> lists, as read back from plan.json


def group_key(model: str, precision: str, backend: str) -> str:
    return f"{model}-{precision}-{backend}"


def point_id(model: str, precision: str, backend: str, scenario: str, batch_size: int | None = None,
             load_fraction: float | None = None) -> str:
    pid = f"{group_key(model, precision, backend)}-{scenario}"
    if scenario == "Offline":
        pid += f"-bs{batch_size}"
    elif scenario == "Server":
        pid += f"-load{round(load_fraction * 100):03d}"
    return pid


class StudyStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def begin(self, plan: StudyPlan) -> bool:
        """Create the folder, or check that it holds this same plan. True when resuming."""
        plan_path = self.root / "plan.json"
        if plan_path.exists():
            saved = _read(plan_path)
            if saved != plan.to_json():
                diff = sorted(k for k in set(saved) | set(plan.to_json()) if saved.get(k) != plan.to_json().get(k))
                raise ConfigError(f"{self.root} holds a different study (it differs in {', '.join(diff)}); "
                                  "rerun with its own settings to resume it, or choose another --study folder")
            return True
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_json_atomic(plan_path, plan.to_json())
        except OSError as exc:
            raise OutputError(f"cannot write the study to {self.root}: {exc.strerror or exc}") from None
        return False

    def slo_conf(self, slo: Slo) -> Path:
        path = self.root / "slo.user.conf"
        if not path.exists() or path.read_text() != slo.user_conf():
            path.write_text(slo.user_conf())
        return path

    def point_path(self, pid: str) -> Path:
        return self.root / "points" / f"{pid}.json"

    def run_root(self, pid: str, repeat: int) -> Path:
        return self.root / "runs" / pid / f"r{repeat}"

    def finished_point(self, pid: str) -> dict[str, Any] | None:
        path = self.point_path(pid)
        return _read(path) if path.exists() else None

    def save_point(self, point: dict[str, Any]) -> None:
        write_json_atomic(self.point_path(point["id"]), point)

    def search_path(self, key: str) -> Path:
        return self.root / "searches" / f"{key}.json"

    def search_state(self, key: str) -> dict[str, Any] | None:
        path = self.search_path(key)
        return _read(path) if path.exists() else None

    def save_search(self, key: str, state: dict[str, Any]) -> None:
        write_json_atomic(self.search_path(key), state)

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root.resolve()))

    def points(self) -> list[dict[str, Any]]:
        folder = self.root / "points"
        return [_read(p) for p in sorted(folder.glob("*.json"))] if folder.exists() else []

    def searches(self) -> list[dict[str, Any]]:
        folder = self.root / "searches"
        return [_read(p) for p in sorted(folder.glob("*.json"))] if folder.exists() else []


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise OutputError(f"{path} is not valid JSON ({exc}); move it aside to redo that part") from None


def point_stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def over(values: list[float | None]) -> dict[str, Any] | None:
        present = [v for v in values if v is not None]
        return spread(present) if present else None

    measured = [r.get("power") or {} for r in runs]
    measured = [p if p.get("source") == "nvml" else {} for p in measured]
    return {
        "samples_per_s": over([r["samples_per_s"] for r in runs]),
        "p50_ms": over([r["latency_ms"].get("p50") for r in runs]),
        "p90_ms": over([r["latency_ms"].get("p90") for r in runs]),
        "p99_ms": over([r["latency_ms"].get("p99") for r in runs]),
        "watts": over([p.get("avg_w") for p in measured]),
        "samples_per_joule": over([p.get("samples_per_joule") for p in measured]),
        "mj_per_query": over([p.get("mj_per_query") for p in measured]),
        "valid_runs": sum(1 for r in runs if r["valid"]),
    }


def curves(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Offline throughput against batch size per model, precision and backend."""
    groups: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
    for point in points:
        if point["scenario"] == "Offline" and point["stats"]["samples_per_s"]:
            key = (point["model"], point["precision"], point["backend"])
            groups.setdefault(key, {})[int(point["batch_size"])] = point
    out = []
    for (model, precision, backend), by_batch in sorted(groups.items()):
        rates = {b: by_batch[b]["stats"]["samples_per_s"]["mean"] for b in sorted(by_batch)}
        best_batch, best = peak(rates)
        out.append({
            "model": model, "precision": precision, "backend": backend,
            "points": rates,
            "std": {b: by_batch[b]["stats"]["samples_per_s"]["std"] for b in sorted(by_batch)},
            "batch_ms": {b: by_batch[b].get("batch_ms", {}).get("mean") for b in sorted(by_batch)},
            "knee_90": knee(rates, 0.90), "knee_95": knee(rates, 0.95),
            "peak": best, "peak_batch": best_batch,
        })
    return out


def build_study(store: StudyStore, plan: StudyPlan, command: str, system: dict[str, Any],
                created_utc: str | None = None) -> dict[str, Any]:
    points = store.points()
    searches = store.searches()
    study = {
        "schema": SCHEMA,
        "created_utc": created_utc or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "updated_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "plan": plan.to_json(),
        "system": system,
        "points": points,
        "curves": curves(points),
        "slo_searches": [s for s in searches if s.get("done")],
        "unfinished_searches": [s["key"] for s in searches if not s.get("done")],
    }
    write_json_atomic(store.root / "study.json", study)
    return _read(store.root / "study.json")  # as a reader sees it (batch sizes as string keys)
