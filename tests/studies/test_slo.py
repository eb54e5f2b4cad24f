"""The SLO parser and the max-QPS search, on trials whose verdict is known."""

from __future__ import annotations

import pytest

from plumbing.errors import ConfigError
from studies.slo import LATENCY, MLPERF_SLO, Attempt, SearchSettings, Slo, failed_rule, parse_slo, search_max_qps


@pytest.mark.parametrize("text, percentile, ms", [
    ("p99:15ms", 99.0, 15.0), ("p90:5ms", 90.0, 5.0), ("P99.9:20ms", 99.9, 20.0),
    ("p95:800us", 95.0, 0.8), ("p99:0.02s", 99.0, 20.0), ("p99:15", 99.0, 15.0),  # no unit: ms, as the plan reads it
])
def test_parse_slo(text, percentile, ms):
    slo = parse_slo(text)
    assert slo.percentile == pytest.approx(percentile) and slo.latency_ms == pytest.approx(ms)


@pytest.mark.parametrize("text", ["p99", "99:15ms", "p99:15h", "p100:15ms", "p0:1ms", "p99:0ms", "p99:15min"])
def test_bad_slo_is_a_config_error(text):
    with pytest.raises(ConfigError):
        parse_slo(text)


def test_slo_as_user_conf_lines():
    conf = Slo(90.0, 5.0).user_conf()
    assert "*.Server.target_latency = 5\n" in conf
    assert "*.Server.target_latency_percentile = 90\n" in conf
    assert MLPERF_SLO == Slo(99.0, 15.0)


class System:
    """Short runs pass up to `short_limit` QPS, full-length ones only up to `long_limit`
    (a long run sees rarer latency spikes)."""

    def __init__(self, short_limit: float, long_limit: float) -> None:
        self.short_limit, self.long_limit = short_limit, long_limit

    def __call__(self, qps: float, duration_ms: int, phase: str) -> Attempt:
        limit = self.long_limit if phase == "confirm" else self.short_limit
        return Attempt(qps, duration_ms, phase, valid=qps <= limit, latency_ms={"p99": 1.0})


def settings(start: float, **kw) -> SearchSettings:
    return SearchSettings(start_qps=start, search_ms=100, confirm_ms=1000, **kw)


def check_monotone(attempts: list[Attempt]) -> None:
    """Within the search phase, the bracket only narrows: every attempt after the first
    lies between the highest valid and lowest invalid loads seen before it."""
    lo, hi = 0.0, float("inf")
    for a in [a for a in attempts if a.phase == "search"]:
        assert lo <= a.target_qps <= hi
        if a.valid:
            lo = max(lo, a.target_qps)
        else:
            hi = min(hi, a.target_qps)
    assert lo <= hi


@pytest.mark.parametrize("start", [100.0, 900.0, 5000.0, 40_000.0])
def test_search_finds_the_capacity_from_below_and_above(start):
    result = search_max_qps(System(1000.0, 1000.0), settings(start))
    assert result.confirmed and result.bracketed
    assert 1000.0 * 0.97 <= result.max_qps <= 1000.0
    check_monotone(result.attempts)
    assert [a.phase for a in result.attempts][-1] == "confirm"
    assert sum(a.phase == "confirm" for a in result.attempts) == 1
    assert all(a.duration_ms == 100 for a in result.attempts if a.phase == "search")


def test_failed_confirmation_steps_down_and_confirms_again():
    result = search_max_qps(System(1000.0, 900.0), settings(500.0, step_down=0.05))
    confirms = [a for a in result.attempts if a.phase == "confirm"]
    assert len(confirms) >= 2 and not confirms[0].valid and confirms[-1].valid
    for before, after in zip(confirms, confirms[1:]):
        assert after.target_qps == pytest.approx(before.target_qps * 0.95)
    assert result.confirmed and 900.0 * 0.95 <= result.max_qps <= 900.0
    assert all(a.duration_ms == 1000 for a in confirms)


def test_unconfirmed_answer_is_reported_as_such():
    result = search_max_qps(System(1000.0, 10.0), settings(500.0, max_step_downs=2))
    assert not result.confirmed
    confirms = [a for a in result.attempts if a.phase == "confirm"]
    assert len(confirms) == 3 and not any(a.valid for a in confirms)
    assert result.max_qps == pytest.approx(confirms[-1].target_qps)


def test_no_valid_load_at_all():
    result = search_max_qps(System(0.1, 0.1), settings(64.0, floor_qps=1.0))
    assert result.max_qps is None and not result.confirmed
    assert [a.target_qps for a in result.attempts] == [64.0, 32.0, 16.0, 8.0, 4.0, 2.0, 1.0]


def test_search_stops_at_its_expansion_limit_unbracketed():
    result = search_max_qps(System(1e12, 1e12), settings(10.0, growth=2.0, max_expansions=3))
    assert not result.bracketed and result.max_qps == pytest.approx(80.0) and result.confirmed


# -- which rule failed, and when to stop stepping down (issue 11, item 14) ----------------------


class CountLimited:
    """Latency always within the bound (p99 30 ms under 100 ms); a run fails LoadGen's early
    stopping when the load gives it fewer than `queries` in its duration, as a fixed
    service-time system does at low loads."""

    def __init__(self, queries: int, capacity: float = float("inf")) -> None:
        self.queries, self.capacity = queries, capacity

    def __call__(self, qps: float, duration_ms: int, phase: str) -> Attempt:
        if qps > self.capacity:
            return Attempt(qps, duration_ms, phase, valid=False, latency_ms={"p99": 250.0},
                           failed_rule=LATENCY, invalid_reasons=["Performance constraints satisfied: NO"])
        ran = int(qps * duration_ms / 1e3)
        if ran < self.queries:
            return Attempt(qps, duration_ms, phase, valid=False, latency_ms={"p99": 30.0}, failed_rule="early stopping",
                           invalid_reasons=["Early stopping satisfied: NO", f"Processed {ran} queries.",
                                            f"Would need to run at least {self.queries - ran} more queries"])
        return Attempt(qps, duration_ms, phase, valid=True, latency_ms={"p99": 30.0})


def test_early_stopping_failure_stops_the_search_at_once() -> None:
    result = search_max_qps(CountLimited(459), settings(27.2, floor_qps=1.0))  # 2 queries in 100 ms
    assert [a.target_qps for a in result.attempts] == [27.2]  # no halving down to 1.7 QPS
    assert result.max_qps is None and not result.confirmed
    assert "early stopping" in result.stopped and "p99 was 30.0 ms" in result.stopped
    assert "Would need to run at least 457 more queries" in result.stopped
    assert "a lower load would only run fewer queries" in result.stopped


def test_latency_failures_still_step_down_to_a_valid_load() -> None:
    result = search_max_qps(CountLimited(1, capacity=500.0), settings(4000.0))
    assert result.confirmed and 500 * 0.97 <= result.max_qps <= 500
    assert result.stopped is None


def test_a_confirmation_that_fails_early_stopping_is_not_stepped_down() -> None:
    # Short runs of 100 ms pass at 1000 QPS; the confirmation's count rule is not met by less load.
    system = CountLimited(1)
    result = search_max_qps(lambda q, d, p: system(q, d, p) if p == "search" else
                            Attempt(q, d, p, valid=False, latency_ms={"p99": 30.0}, failed_rule="min queries"),
                            settings(500.0, max_expansions=1))
    confirms = [a for a in result.attempts if a.phase == "confirm"]
    assert len(confirms) == 1 and not result.confirmed
    assert "min queries" in result.stopped


def test_no_valid_load_down_to_the_floor_says_so() -> None:
    result = search_max_qps(System(0.1, 0.1), settings(8.0, floor_qps=1.0))
    assert result.max_qps is None and "floor of 1 QPS" in result.stopped


@pytest.mark.parametrize("flags, rule", [
    ((False, False, True, True), LATENCY),  # over-latency queries also fail early stopping
    ((True, False, True, True), "early stopping"),
    ((True, True, False, True), "min queries"),
    ((None, True, True, False), "min duration"),
    ((True, True, True, True), None),
])
def test_failed_rule(flags: tuple, rule: str | None) -> None:
    assert failed_rule(*flags) == rule


def test_attempts_from_older_studies_have_no_rule() -> None:
    old = {"target_qps": 5.0, "duration_ms": 100, "phase": "search", "valid": False}
    assert Attempt.from_json(old).failed_rule is None
    assert search_max_qps(lambda q, d, p: Attempt(q, d, p, valid=False), settings(4.0)).stopped.endswith("1 QPS")


def test_early_stopping_failed_by_over_latency_queries_is_the_latency_bound() -> None:
    # Near the capacity p99 can sit under the bound while the over-latency queries still
    # fail early stopping; with the queries a clean run needs, a lower load fixes that, so
    # it must not stop the search as a count short of early stopping does.
    assert failed_rule(True, False, True, True, clean_count_met=True) == LATENCY
    assert failed_rule(True, False, True, True, clean_count_met=False) == "early stopping"
    assert failed_rule(True, False, True, True) == "early stopping"


def test_the_plan_reads_the_same_grammar_and_type():
    from reports.constraints import parse_slo as plan_slo

    for text in ("p99:15ms", "p90:0.005s", "p50:800us", "p99:15"):
        assert plan_slo(text) == parse_slo(text) and type(plan_slo(text)) is Slo
