"""One run's saved record, read back typed: the one reader of a run in measurements.json.

The runner writes each run's record once (runs/runner.py, under measurements.json's "runs"
or "compliance"; its LoadGen figures as `LoadgenSummary.to_json`); every reader that needs its figures (the run screen, --json summaries
and exit codes, the submission screen, the sweep's study entries, the bench) takes them
from `SavedRun.from_record`, so a percentile, a rate or a verdict is read in one way
everywhere. A record without the fields it needs is an OutputError naming what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from plumbing.errors import (ACCURACY_FAILED_EXIT, INVALID_RESULT_EXIT, OK_EXIT, RUN_FAILED_EXIT, OutputError)

# The latency percentiles a study keeps, by their LoadGen summary keys.
STUDY_PERCENTILES = ("p50", "p90", "p99")
# LoadGen's MultiStream default when the record does not say.
DEFAULT_SAMPLES_PER_QUERY = 8


def percentile_key(name: str) -> str:
    """'p99' -> '99.00', 'p99.9' -> '99.90': the keys LoadGen's summary prints."""
    try:
        return f"{float(name.removeprefix('p')):.2f}"
    except ValueError:
        raise OutputError(f"{name!r} is not a latency percentile (p50, p90, p99, p99.9)") from None


@dataclass(frozen=True)
class LoadgenSummary:
    """What the runner saved of LoadGen's summary log (the stricter of its verdict and the
    detail log's)."""

    scenario: str
    valid: bool
    invalid_reasons: tuple[str, ...]
    metric: str
    value: float
    percentiles_ns: Mapping[str, float] = field(default_factory=dict)
    qps_with_loadgen_overhead: float | None = None
    min_duration_satisfied: bool | None = None
    mean_latency_ns: float | None = None
    early_stopping_satisfied: bool | None = None
    min_queries_satisfied: bool | None = None

    def latency_ms(self, name: str) -> float | None:
        """A latency percentile ('p50', 'p99', 'p99.9') in ms; None where LoadGen printed none."""
        value = self.percentiles_ns.get(percentile_key(name))
        return None if value is None else value / 1e6

    def to_json(self) -> dict[str, Any]:
        """What the runner saves under a run's "summary" (from_json reads it back)."""
        data = asdict(self)
        data["invalid_reasons"] = list(self.invalid_reasons)
        data["percentiles_ns"] = dict(self.percentiles_ns)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoadgenSummary:
        optional = {f.name: data.get(f.name) for f in fields(cls) if f.default is None}  # absent in older records
        return cls(scenario=str(data["scenario"]), valid=bool(data["valid"]),
                   invalid_reasons=tuple(data.get("invalid_reasons") or ()), metric=str(data["metric"]),
                   value=float(data["value"]), percentiles_ns=dict(data.get("percentiles_ns") or {}), **optional)


@dataclass(frozen=True)
class SavedRun:
    system: str
    model: str
    scenario: str
    mode: str
    precision: str
    backend: str
    run_profile: str
    status: str | None
    samples_per_query: int
    summary: LoadgenSummary | None
    harness: Mapping[str, Any]
    power: Mapping[str, Any] | None
    accuracy: Mapping[str, Any] | None
    accuracy_gate: Mapping[str, Any] | None
    # The record as saved, for the fields only one reader needs (the run screen's details).
    record: Mapping[str, Any]

    @classmethod
    def from_record(cls, record: Any, where: str = "a saved run") -> SavedRun:
        if not isinstance(record, Mapping):
            raise OutputError(f"{where} is not a run record (not a JSON object)")
        try:
            config = record["config"]
            request = config["request"]
            scenario = str(request["scenario"])
            per_query = (int(config["loadgen"].get("multi_stream_samples_per_query", DEFAULT_SAMPLES_PER_QUERY))
                         if scenario == "MultiStream" else 1)
            summary = record.get("summary")
            return cls(
                system=str(config["system_name"]), model=str(request["model"]), scenario=scenario,
                mode=str(request["mode"]), precision=str(request["precision"]), backend=str(config["backend"]),
                run_profile=str(request["run_profile"]), status=record.get("status"), samples_per_query=per_query,
                summary=None if summary is None else LoadgenSummary.from_json(summary),
                harness=record.get("harness") or {}, power=record.get("power"), accuracy=record.get("accuracy"),
                accuracy_gate=record.get("accuracy_gate"), record=record)
        except KeyError as exc:
            raise OutputError(f"{where} lacks {exc.args[0]!r}: it was not written by this deepgap; "
                              "run it again") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise OutputError(f"{where} is malformed ({exc}); run it again") from None

    @property
    def valid(self) -> bool:
        return self.summary is not None and self.summary.valid

    @property
    def samples_per_s(self) -> float:
        """Offline and Server: LoadGen's headline rate; the stream scenarios: queries/s
        times samples per query; a run without a summary: what the harness completed."""
        summary = self.summary
        if summary is not None:
            if summary.scenario in ("Offline", "Server"):
                return summary.value
            if summary.qps_with_loadgen_overhead is not None:
                return summary.qps_with_loadgen_overhead * self.samples_per_query
        wall = self.harness.get("wall_s")
        return float(self.harness.get("samples_completed", 0)) / wall if wall else 0.0

    @property
    def instances(self) -> list[dict[str, Any]]:
        """Each backend instance's device and share of the batches (--gpus, --instances);
        empty for a run of one instance."""
        return list(self.harness.get("instances") or [])

    def batch_time_ms(self, name: str) -> float | None:
        """A batch's launch-to-done time ('p50', 'p99', 'max') in ms; None in records that
        predate it or ran no batch."""
        value = (self.harness.get("batch_time_ms") or {}).get(name)
        return None if value is None else float(value)

    def latency_ms(self, names: tuple[str, ...] = STUDY_PERCENTILES) -> dict[str, float]:
        """The named percentiles LoadGen printed, in ms."""
        if self.summary is None:
            return {}
        found = {name: self.summary.latency_ms(name) for name in names}
        return {name: value for name, value in found.items() if value is not None}

    @property
    def exit_code(self) -> int:
        """3 failed, 4 accuracy below the rule, 6 INVALID, else 0 (plumbing/errors)."""
        if self.status == "failed":
            return RUN_FAILED_EXIT
        if (self.accuracy or {}).get("passed") is False:
            return ACCURACY_FAILED_EXIT
        if self.summary is not None and not self.summary.valid:
            return INVALID_RESULT_EXIT
        return OK_EXIT

    def study_entry(self, measurements: str) -> dict[str, Any]:
        """What study.json keeps of the run."""
        return {"measurements": measurements, "valid": self.valid, "status": self.status,
                "samples_per_s": float(self.samples_per_s), "latency_ms": self.latency_ms(), "power": self.power}
