"""Sizing a run from its warm-up: LoadGen's schedule and the query count early stopping needs.

LoadGen pre-generates its whole schedule from expected throughput or latency; too slow an
estimate makes it run out of queries or end Offline before its minimum duration, too fast
a one (a backend loop far quicker than the harness) fills memory. The warm-up measurement
replaces a conservative profile value, within runs/limits.py's bounds.
"""

from __future__ import annotations

import logging
import math

from runs import limits
from runs.config import RunConfig
from scenarios.profiles import load_run_profile
from sut.backends.base import Backend
from sut.settings import early_stopping_min_queries, latency_percentile, setting

log = logging.getLogger(__name__)


# Expected latency / throughput only size LoadGen's query schedule. Set too slow, LoadGen
# runs out of queries ("Ending early", an error) or ends Offline before min duration.
SIZING_ATTRS = {
    "SingleStream": "single_stream_expected_latency_ns",
    "MultiStream": "multi_stream_expected_latency_ns",
    "Offline": "offline_expected_qps",
}
# A measurement from a full run of the same system (set by audit/ for compliance runs).
MEASURED_SOURCE = "measured by the performance run"
# A warm-up on a busy or still-warming host underestimates the rate; LoadGen's own 10%
# Offline margin was not enough on the 2-core CPU (runs ended at 4.6-4.8 s of 5 s). Too high
# costs only a longer run; too low makes the run INVALID.
OFFLINE_WARMUP_HEADROOM = 1.25
# Sources a warm-up never replaces: the user's own values and a real run's measurement.
_KEPT_SOURCES = ("user.conf", "CLI", MEASURED_SOURCE)


def size_run_from_warmup(config: RunConfig, backend: Backend, budget_s: float = 0.5) -> None:
    """Replace a too-conservative profile or mlperf.conf sizing value by a warm-up
    measurement, within what the harness can reach and LoadGen's schedule can hold in
    memory (runs/limits.py); values the user set (user.conf, CLI) or a full run measured
    are left alone. Then give the run enough queries for LoadGen's early stopping where the
    run profile asks for it (size_for_early_stopping)."""
    attr = SIZING_ATTRS.get(config.scenario)
    per_batch: float | None = None
    host = limits.available_memory()  # one reading: the cap and the check must agree
    if attr is not None and not config.provenance.get(f"loadgen.{attr}", "").startswith(_KEPT_SOURCES):
        per_batch = warmup_batch_seconds(backend, int(config.knobs["max_batch"]), budget_s)
        _apply_warmup(config, attr, per_batch, host)
    size_for_early_stopping(config, per_batch)
    # What LoadGen is about to pre-generate, against the memory left now that the backend
    # is loaded (the values the user set were checked before the run started).
    limits.check_fits(config, limits.dataset_count_hint(config.request), host)


def _apply_warmup(config: RunConfig, attr: str, per_batch: float, host: limits.Memory | None) -> None:
    batch = int(config.knobs["max_batch"])
    source = config.provenance.get(f"loadgen.{attr}", "")
    current = config.loadgen.get(attr)
    seconds = float(setting(config.loadgen, "min_duration_ms")) / 1e3
    room = None if host is None else limits.schedule_room(config, limits.dataset_count_hint(config.request), host)
    capped = []
    if attr == "offline_expected_qps":
        measured: float = OFFLINE_WARMUP_HEADROOM * batch / per_batch
        if measured > limits.HARNESS_MAX_SAMPLES_PER_S:
            measured, capped = limits.HARNESS_MAX_SAMPLES_PER_S, ["the harness's own ceiling"]
        # LoadGen's one Offline query holds 1.1 x min duration x this rate samples.
        most = None if room is None else (room - limits.SCHEDULE_BYTES_PER_QUERY) // limits.SCHEDULE_BYTES_PER_SAMPLE
        if most is not None and 1.1 * seconds * measured > most:
            measured, capped = most / (1.1 * seconds), ["memory"]
        better = current is None or measured > current
    else:
        # Half the warm-up time: a run that turns out faster than its warm-up (a busy host
        # during the warm-up) must still not run out of queries; the only cost of a low
        # expected latency is a longer pre-generated schedule, which is bounded here.
        measured = int(per_batch * 1e9 / 2)
        if measured < limits.HARNESS_MIN_QUERY_S * 1e9:
            measured, capped = int(limits.HARNESS_MIN_QUERY_S * 1e9), ["the harness's own ceiling"]
        per_query = (int(setting(config.loadgen, "multi_stream_samples_per_query"))
                     if config.scenario == "MultiStream" else 1)
        query_bytes = limits.SCHEDULE_BYTES_PER_QUERY + per_query * limits.SCHEDULE_BYTES_PER_SAMPLE
        # LoadGen schedules one query per expected latency over twice the minimum duration.
        if room is not None and 2 * seconds * 1e9 / measured * query_bytes > room:
            measured, capped = math.ceil(2 * seconds * 1e9 * query_bytes / max(room, 1)), ["memory"]
        better = current is None or measured < current
    if not better:
        return
    note = f", capped by {capped[0]}" if capped else ""
    before = "LoadGen's default" if current is None else f"{_shown(current)} from {source or 'a default'}"
    log.info("sizing: %s %s from a warm-up measurement%s (before: %s)", attr, _shown(measured), note, before)
    if capped == ["memory"]:
        log.warning("LoadGen's schedule was sized down to fit memory: this run may end before its minimum duration")
    config.loadgen[attr] = measured
    config.provenance[f"loadgen.{attr}"] = f"warm-up measurement{note} (replaced {before})"


def _shown(value: float) -> str:
    """A sizing value in a log line: whole nanoseconds as they are, a rate to 4 digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# The most Server queries over the latency bound the early-stopping sizing tolerates, where
# the profile's time bound affords them: the run takes as many queries as that time allows
# at the scheduled load, up to this allowance. p99 needs 459 queries with none over, 1001
# with 3 (0.30%), 1157 with 4, 2277 with 12, 2669 with 15 (0.56%). On a shared 2-core CPU
# host a stall of a few ms hits 0.2-1% of batch-1 queries (BENCHMARKS.md, 2026-12-03):
# with 3 allowed, runs whose p99 was well under the bound (12.9 ms of 15) still failed.
# Fast devices are not affected: their minimum duration already brings more queries.
SERVER_OVERLATENCY_ALLOWANCE = 15


def size_for_early_stopping(config: RunConfig, per_batch: float | None) -> None:
    """Where the run profile has `early_stopping_within_s`, raise its min_query_count to
    the fewest queries LoadGen's early stopping accepts for the scenario's percentile, if
    the device gets there within that time (SingleStream/MultiStream: the warm-up's time
    per query; Server: the scheduled load); else say now that the run will be INVALID."""
    scenario, values = config.scenario, config.loadgen
    within = load_run_profile(config.request.run_profile).early_stopping_within_s
    percentile = latency_percentile(scenario, values)
    if config.request.mode != "performance" or percentile is None or within is None:
        return
    minimum = early_stopping_min_queries(scenario, percentile)  # Server: none over the bound
    target = minimum
    if scenario == "Server":
        per_query = 1.0 / float(setting(values, "server_target_qps"))
        basis = f"at the scheduled {1 / per_query:g} QPS"
        # The most over-latency queries tolerated within the time bound (none at the least).
        for allowance in range(SERVER_OVERLATENCY_ALLOWANCE, 0, -1):
            if early_stopping_min_queries(scenario, percentile, allowance) * per_query <= within:
                target = early_stopping_min_queries(scenario, percentile, allowance)
                break
    else:
        expected = float(setting(values, SIZING_ATTRS[scenario])) / 1e9
        per_query = per_batch if per_batch is not None else expected
        basis = f"at {per_query * 1e3:.3g} ms a query ({'warm-up' if per_batch is not None else 'expected latency'})"
    count = int(setting(values, "min_query_count"))
    have = max(count, float(setting(values, "min_duration_ms")) / 1e3 / per_query)
    # Server's queries over the minimum duration are its schedule's; a stream's are only
    # the warm-up's pace, and a run slower than its warm-up (a busy host) would fall short:
    # its count is raised even where the duration alone would do, which then costs no time.
    if (have if scenario == "Server" else count) >= target:
        return
    source = config.provenance.get("loadgen.min_query_count", "LoadGen default")
    kept = source.startswith(_KEPT_SOURCES)
    rule = f"LoadGen's early stopping needs {minimum} queries for p{percentile * 100:g}"
    if not kept and minimum * per_query <= within:
        if target > minimum:
            rule += f", {target} to allow {_allowance(scenario, percentile, target)} over the latency bound"
        log.info("sizing: min_query_count %d -> %d (%s; %.0f s %s)", count, target, rule, target * per_query, basis)
        values["min_query_count"] = target
        config.provenance["loadgen.min_query_count"] = f"early stopping ({rule}; replaced {count} from {source})"
    elif have < minimum:
        why = (f"min_query_count {count} is from {source}" if kept else
               f"{basis} that takes {minimum * per_query:.0f} s, over the {config.request.run_profile} profile's "
               f"{within:g} s")
        log.warning("this run will be INVALID: %s and it will run about %d; %s. Run them anyway with "
                    "--min-query-count %d, or use --profile submission", rule, int(have), why, minimum)


def _allowance(scenario: str, percentile: float, target: int) -> int:
    return next(t for t in range(SERVER_OVERLATENCY_ALLOWANCE + 1)
                if early_stopping_min_queries(scenario, percentile, t) == target)


def warmup_batch_seconds(backend: Backend, batch: int, budget_s: float = 0.5, most: int = 50) -> float:
    """Seconds per batch of `batch` staged rows in the backend's own loop, over about
    `budget_s` (at least one, at most `most` batches per batch in flight; at most
    in-flight x `budget_s` where batches in flight do not overlap)."""
    per_batch = backend.time_tight_loop(batch, 1)
    # A loop with k batches in flight needs many more than k batches to reach its steady
    # rate: 50 requests with 8 in flight to an instant KServe server measured 780 a second
    # against the run's 1,460, and the run ended before its minimum duration.
    # `per_batch` here is one batch's latency: with k in flight about k of them fit in the budget.
    in_flight = max(1, int(backend.options.in_flight))
    iterations = max(1, min(most * in_flight, int(budget_s * in_flight / max(per_batch, 1e-6))))
    return backend.time_tight_loop(batch, iterations) / iterations
