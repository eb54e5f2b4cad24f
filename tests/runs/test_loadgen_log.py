"""Tests for runs.loadgen_log against real LoadGen output and hand-written edge cases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from plumbing.errors import OutputError
from runs.loadgen_log import parse_detail, parse_summary
from runs.accuracy_log import AccuracyEntry, decode_int32, deduplicate_by_qsl_idx, parse_accuracy_log

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
PERCENTILE_KEYS = ["50.00", "90.00", "95.00", "97.00", "99.00", "99.90"]
TOTAL_SAMPLES = 16
PERF_SAMPLES = 8
MIN_DURATION_MS = 300
MIN_QUERY_COUNT = 10
OFFLINE_QPS = 100
SERVER_QPS = 2000


def response_value(qsl_idx: int) -> int:
    # Distinct per sample and not symmetric in byte order, so an endianness slip shows.
    return qsl_idx * 3 + 1


# --------------------------------------------------------------------------- real runs


@dataclass
class Run:
    outdir: Path

    @property
    def summary(self) -> Path:
        return self.outdir / "mlperf_log_summary.txt"

    @property
    def detail(self) -> Path:
        return self.outdir / "mlperf_log_detail.txt"

    @property
    def accuracy(self) -> Path:
        return self.outdir / "mlperf_log_accuracy.json"


@pytest.fixture(scope="session")
def loadgen_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    lg = pytest.importorskip("mlperf_loadgen")

    def issue(query_samples: list[Any]) -> None:
        for qs in query_samples:
            arr = np.array([response_value(qs.index)], dtype=np.int32)
            # arr must outlive QuerySamplesComplete: LoadGen copies the bytes inside it.
            lg.QuerySamplesComplete([lg.QuerySampleResponse(qs.id, arr.ctypes.data, arr.nbytes)])

    def flush() -> None:
        pass

    def no_op(_indices: list[int]) -> None:
        pass

    sut = lg.ConstructSUT(issue, flush)
    qsl = lg.ConstructQSL(TOTAL_SAMPLES, PERF_SAMPLES, no_op, no_op)
    base = tmp_path_factory.mktemp("loadgen")
    # A path that cannot exist, so no stray audit.config in the CWD alters the runs.
    no_audit = str(base / "no-such-dir" / "audit.config")
    runs: dict[str, Run] = {}
    plans = [
        ("offline", lg.TestScenario.Offline, lg.TestMode.PerformanceOnly),
        # Default 1 ms expected latency: LoadGen pre-generates ~600 queries, which the
        # instant SUT drains long before 300 ms, so this run reliably logs an error.
        ("singlestream", lg.TestScenario.SingleStream, lg.TestMode.PerformanceOnly),
        ("server", lg.TestScenario.Server, lg.TestMode.PerformanceOnly),
        ("accuracy", lg.TestScenario.Offline, lg.TestMode.AccuracyOnly),
    ]
    try:
        for name, scenario, mode in plans:
            settings = lg.TestSettings()
            settings.scenario = scenario
            settings.mode = mode
            settings.min_duration_ms = MIN_DURATION_MS
            settings.min_query_count = MIN_QUERY_COUNT
            settings.offline_expected_qps = OFFLINE_QPS
            settings.server_target_qps = SERVER_QPS
            log_settings = lg.LogSettings()
            log_settings.log_output.outdir = str(base / name)
            log_settings.enable_trace = False
            (base / name).mkdir()
            lg.StartTestWithLogSettings(sut, qsl, settings, log_settings, no_audit)
            runs[name] = Run(base / name)
        yield runs
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)


def test_real_offline_summary(loadgen_runs: dict[str, Run]) -> None:
    s = parse_summary(loadgen_runs["offline"].summary)
    assert s.scenario == "Offline"
    assert s.mode == "PerformanceOnly"
    assert s.headline_metric_name == "Samples per second"
    assert s.headline_value > 0
    # 33 samples answered instantly cannot fill 300 ms: INVALID every time.
    assert s.result_valid is False
    assert s.min_duration_satisfied is False
    assert s.min_queries_satisfied is True
    assert s.early_stopping_satisfied is True
    assert "Min duration satisfied: NO" in s.invalid_reasons
    assert any("Increase expected QPS" in r for r in s.invalid_reasons)
    assert list(s.percentiles_ns) == PERCENTILE_KEYS
    values = [s.percentiles_ns[k] for k in PERCENTILE_KEYS]
    assert values == sorted(values)
    assert s.min_latency_ns is not None and s.max_latency_ns is not None
    assert s.min_latency_ns <= values[0] <= values[-1] <= s.max_latency_ns
    assert s.mean_latency_ns is not None and s.mean_latency_ns > 0
    assert s.scheduled_samples_per_second is None
    assert s.early_stopping_result == []  # Offline prints no early-stopping section
    assert s.raw["min_duration (ms)"] == str(MIN_DURATION_MS)
    assert s.num_errors == 0


def test_real_offline_detail(loadgen_runs: dict[str, Run]) -> None:
    s = parse_summary(loadgen_runs["offline"].summary)
    d = parse_detail(loadgen_runs["offline"].detail)
    assert d.malformed_lines == 0
    assert d.errors == []
    assert d.effective["scenario"] == "Offline"
    assert d.effective["test_mode"] == "PerformanceOnly"
    assert d.effective["min_duration_ms"] == MIN_DURATION_MS
    assert d.requested["min_query_count"] == MIN_QUERY_COUNT
    assert d.requested["offline_expected_qps"] == OFFLINE_QPS
    # Offline: samples per query = 1.1 x min duration x expected QPS.
    assert d.effective["samples_per_query"] == 33
    assert d.result["validity"] == "INVALID"
    assert d.get("result_validity") == "INVALID"
    assert d.result["min_duration_met"] is False
    assert d.early_stopping["met"] is True
    assert d.result["samples_per_second"] == pytest.approx(s.headline_value, rel=1e-5)
    for k in PERCENTILE_KEYS:
        assert d.result[f"{k}_percentile_latency_ns"] == s.percentiles_ns[k]
    assert d.get("no_such_key", "absent") == "absent"


def test_real_singlestream(loadgen_runs: dict[str, Run]) -> None:
    s = parse_summary(loadgen_runs["singlestream"].summary)
    d = parse_detail(loadgen_runs["singlestream"].detail)
    assert s.scenario == "SingleStream"
    assert s.headline_metric_name == "90.0th percentile latency (ns)"
    assert s.headline_value > 0
    # The headline is the plain percentile, not the early-stopping estimate.
    assert s.headline_value == s.percentiles_ns["90.00"]
    assert s.result_valid is False
    assert s.qps_with_loadgen_overhead is not None and s.qps_with_loadgen_overhead > 0
    assert s.qps_without_loadgen_overhead is not None and s.qps_without_loadgen_overhead > 0
    assert s.early_stopping_result, "SingleStream always prints an early-stopping section"
    assert s.early_stopping_estimates_ns["90.0"] == d.early_stopping["latency_ss"]
    assert d.effective["min_duration_ms"] == MIN_DURATION_MS
    assert d.effective["min_query_count"] == MIN_QUERY_COUNT
    # Running out of pre-generated queries is a LoadGen error; the footer counts it.
    assert [k for k, _ in d.errors] == ["error_runtime"]
    assert "Ending early" in d.errors[0][1]
    assert s.num_errors == len(d.errors)
    assert d.get("num_errors") == len(d.errors)


def test_real_server(loadgen_runs: dict[str, Run]) -> None:
    s = parse_summary(loadgen_runs["server"].summary)
    d = parse_detail(loadgen_runs["server"].detail)
    assert s.scenario == "Server"
    assert s.headline_metric_name == "Completed samples per second"
    assert s.headline_value > 0
    assert s.scheduled_samples_per_second is not None and s.scheduled_samples_per_second > 0
    assert s.perf_constraints_satisfied is not None
    assert d.effective["target_qps"] == SERVER_QPS
    assert d.result["completed_samples_per_sec"] == pytest.approx(s.headline_value, rel=1e-3)
    # Validity depends on machine timing; what must hold is that both files agree.
    assert s.result_valid == (d.result["validity"] == "VALID")
    assert (s.invalid_reasons == []) == bool(s.result_valid)
    assert s.early_stopping_result


def test_real_accuracy_run(loadgen_runs: dict[str, Run]) -> None:
    run = loadgen_runs["accuracy"]
    entries = parse_accuracy_log(run.accuracy)
    assert len(entries) == TOTAL_SAMPLES  # AccuracyOnly covers the whole QSL once
    responses = deduplicate_by_qsl_idx(entries)
    assert sorted(responses) == list(range(TOTAL_SAMPLES))
    for idx, data in responses.items():
        assert decode_int32(data).tolist() == [response_value(idx)]
    for e in entries:
        assert decode_int32(e).dtype == np.int32
        assert decode_int32(e).tolist() == [response_value(e.qsl_idx)]
    assert sorted(e.seq_id for e in entries) == list(range(TOTAL_SAMPLES))

    d = parse_detail(run.detail)
    assert d.effective["test_mode"] == "AccuracyOnly"
    assert d.result == {}  # no performance result in accuracy mode
    # LoadGen writes no results summary in AccuracyOnly mode, only the footer.
    with pytest.raises(OutputError, match="AccuracyOnly"):
        parse_summary(run.summary)


def test_real_performance_run_has_empty_accuracy_log(loadgen_runs: dict[str, Run]) -> None:
    assert parse_accuracy_log(loadgen_runs["offline"].accuracy) == []


# --------------------------------------------------------------------------- golden files


def test_golden_server_valid() -> None:
    s = parse_summary(GOLDEN / "loadgen-6.0.17_server_valid_summary.txt")
    assert (s.scenario, s.mode, s.sut_name) == ("Server", "PerformanceOnly", "PySUT")
    assert s.headline_metric_name == "Completed samples per second"
    assert s.headline_value == 1978.67
    assert s.result_valid is True
    assert s.perf_constraints_satisfied is True
    assert s.min_duration_satisfied and s.min_queries_satisfied and s.early_stopping_satisfied
    assert s.invalid_reasons == []
    assert s.scheduled_samples_per_second == 1979.09
    assert s.percentiles_ns == {
        "50.00": 67922, "90.00": 90203, "95.00": 178815,
        "97.00": 264222, "99.00": 514558, "99.90": 647814,
    }
    assert (s.min_latency_ns, s.max_latency_ns, s.mean_latency_ns) == (4042, 647814, 82687)
    assert s.early_stopping_result == ["Run successful."]
    assert (s.num_warnings, s.num_errors) == (0, 0)
    assert s.raw["target_latency (ns)"] == "100000000"
    assert s.raw["Result is"] == "VALID"


def test_golden_singlestream_invalid() -> None:
    s = parse_summary(GOLDEN / "loadgen-6.0.17_singlestream_invalid_summary.txt")
    assert s.scenario == "SingleStream"
    assert (s.headline_metric_name, s.headline_value) == ("90.0th percentile latency (ns)", 6835)
    assert s.result_valid is False
    assert s.invalid_reasons == [
        "Min duration satisfied: NO",
        "Decrease the expected latency so the loadgen pre-generates more queries.",
    ]
    assert s.early_stopping_result == [
        "Processed at least 64 queries (601).",
        "Would discard 42 highest latency queries.",
        "Early stopping 90.0th percentile estimate: 7080",
        "Not enough queries processed for 99.0th percentile early stopping estimate "
        "(would need to process at least 662 total queries).",
    ]
    assert s.early_stopping_estimates_ns == {"90.0": 7080}
    assert (s.qps_with_loadgen_overhead, s.qps_without_loadgen_overhead) == (112959.65, 149857.64)
    assert (s.num_warnings, s.num_errors) == (1, 1)


# --------------------------------------------------------------------------- hand-written


INVALID_SERVER = """\
================================================
MLPerf Results Summary
================================================
SUT name : my: sut
Scenario: Server
Mode : PerformanceOnly
Completed samples per second: 1.23457e+06
Result is: INVALID
  Performance constraints satisfied: NO
  Min duration satisfied : Yes
  Min queries satisfied : Skipped
  Early stopping satisfied:   NO
Recommendations:
 * Reduce target QPS to improve latency.
 * The test exited early, before enough queries were issued.
   See the detailed log for why this may have occurred.
Early Stopping Result:
 * Run unsuccessful.
 * Processed 31 queries.
 * Would need to run at least 428 more queries,
 with the run being successful if every additional
 query were under latency.

================================================
Additional Stats
================================================
Scheduled samples per second : 1.3e+06
Min latency (ns)   :   10
Max latency (ns):90
50.00 percentile latency (ns)   : 50

2 warnings encountered. See detailed log.

3 ERRORS encountered. See detailed log.
"""


def test_handwritten_invalid_summary(tmp_path: Path) -> None:
    p = tmp_path / "summary.txt"
    p.write_text(INVALID_SERVER)
    s = parse_summary(p)
    assert s.sut_name == "my: sut"  # only the first colon separates key from value
    assert (s.scenario, s.mode) == ("Server", "PerformanceOnly")
    assert s.headline_metric_name == "Completed samples per second"
    assert s.headline_value == 1234570.0
    assert s.result_valid is False
    assert s.perf_constraints_satisfied is False
    assert s.min_duration_satisfied is True
    assert s.min_queries_satisfied is None  # "Skipped"
    assert s.early_stopping_satisfied is False
    assert s.invalid_reasons == [
        "Performance constraints satisfied: NO",
        "Early stopping satisfied: NO",
        "Reduce target QPS to improve latency.",
        "The test exited early, before enough queries were issued. "
        "See the detailed log for why this may have occurred.",
        "Run unsuccessful.",
        "Processed 31 queries.",
        "Would need to run at least 428 more queries, with the run being successful "
        "if every additional query were under latency.",
    ]
    assert s.scheduled_samples_per_second == 1.3e6
    assert (s.min_latency_ns, s.max_latency_ns, s.mean_latency_ns) == (10, 90, None)
    assert s.percentiles_ns == {"50.00": 50}
    assert (s.num_warnings, s.num_errors) == (2, 3)


def test_summary_offline_headline_with_odd_spacing(tmp_path: Path) -> None:
    p = tmp_path / "summary.txt"
    p.write_text("Scenario : Offline\nMode     : PerformanceOnly\nSamples per second: 123.4\n"
                 "Result is : VALID\n")
    s = parse_summary(p)
    assert (s.headline_metric_name, s.headline_value) == ("Samples per second", 123.4)
    assert s.result_valid is True
    assert s.invalid_reasons == []
    assert s.percentiles_ns == {}
    assert s.min_latency_ns is None and s.num_errors is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("\nNo warnings encountered during test.\n\nNo errors encountered during test.\n",
         "AccuracyOnly"),
        ("hello : world\n", "no 'Scenario' line"),
        ("Scenario : Offline\nMode     : PerformanceOnly\n", "no headline"),
    ],
)
def test_summary_without_result_raises(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "summary.txt"
    p.write_text(text)
    with pytest.raises(OutputError, match=match) as err:
        parse_summary(p)
    assert "\n" not in str(err.value)


DETAIL = "\n".join([
    ':::MLLOG {"key": "requested_min_duration_ms", "value": 600000, "time_ms": 0.1, '
    '"namespace": "mlperf::logging", "event_type": "POINT_IN_TIME", "metadata": '
    '{"is_error": false, "is_warning": false, "file": "loadgen.cc", "line_no": 1, "pid": 1, "tid": 1}}',
    ':::MLLOG {"key": "effective_min_duration_ms", "value": 600000, "time_ms": 0.1, '
    '"namespace": "mlperf::logging", "event_type": "POINT_IN_TIME", "metadata": '
    '{"is_error": false, "is_warning": false, "file": "loadgen.cc", "line_no": 2, "pid": 1, "tid": 1}}',
    ':::MLLOG {"key": "loaded_qsl_set", "value": [0, 1], "time_ms": 1.0, '
    '"namespace": "mlperf::logging", "event_type": "POINT_IN_TIME", "metadata": '
    '{"is_error": false, "is_warning": false, "file": "loadgen.cc", "line_no": 3, "pid": 1, "tid": 1}}',
    ':::MLLOG {"key": "error_runtime", "value": "Ending early: Ran out of generated queries", '
    '"time_ms": 2.0, "namespace": "mlperf::logging", "event_type": "POINT_IN_TIME", "metadata": '
    '{"is_error": true, "is_warning": false, "file": "loadgen.cc", "line_no": 4, "pid": 1, "tid": 2}}',
    ':::MLLOG {"key": "warning_generic_message", "value": "CAS failed.", "time_ms": 2.0, '
    '"namespace": "mlperf::logging", "event_type": "POINT_IN_TIME", "metadata": '
    '{"is_error": false, "is_warning": true, "file": "logging.cc", "line_no": 5, "pid": 1, "tid": 2}}',
    ':::MLLOG {"key": "loaded_qsl_set", "value": [2, 3], "time_ms": 3.0, '
    '"namespace": "mlperf::logging", "event_type": "POINT_IN_TIME", "metadata": '
    '{"is_error": false, "is_warning": false, "file": "loadgen.cc", "line_no": 3, "pid": 1, "tid": 1}}',
    ':::MLLOG {"key": "result_validity", "value": "INVALID", "time_ms": 4.0, '
    '"namespace": "mlperf::logging", "event_type": "POINT_IN_TIME", "metadata": '
    '{"is_error": false, "is_warning": false, "file": "results.cc", "line_no": 6, "pid": 1, "tid": 1}}',
    ':::MLLOG {"key": "result_50.00_percentile_latency_ns", "value": 1.5e+06, "time_ms": 4.0, '
    '"namespace": "mlperf::logging", "event_type": "POINT_IN_TIME", "metadata": '
    '{"is_error": false, "is_warning": false, "file": "results.cc", "line_no": 7, "pid": 1, "tid": 1}}',
    ':::MLLOG {"key": "early_stopping_latency_ss", "value": 7080, "time_ms": 4.0, '
    '"namespace": "mlperf::logging", "event_type": "POINT_IN_TIME", "metadata": '
    '{"is_error": false, "is_warning": false, "file": "results.cc", "line_no": 8, "pid": 1, "tid": 1}}',
    ':::MLLOG {"key": "num_errors", "value": 1, "time_ms": 4.0, ',  # cut mid-line
    "garbage that is not an MLLOG line",
    ':::MLLOG ["not", "an", "object"]',
    "",
])


def test_detail_with_error_and_malformed_lines(tmp_path: Path) -> None:
    p = tmp_path / "detail.txt"
    p.write_text(DETAIL)
    d = parse_detail(p)
    assert len(d.entries) == 9
    assert d.malformed_lines == 3
    assert d.errors == [("error_runtime", "Ending early: Ran out of generated queries")]
    assert d.warnings == [("warning_generic_message", "CAS failed.")]
    assert d.requested == {"min_duration_ms": 600000}
    assert d.effective == {"min_duration_ms": 600000}
    assert d.result == {"validity": "INVALID", "50.00_percentile_latency_ns": 1.5e6}
    assert d.early_stopping == {"latency_ss": 7080}
    assert d.get("loaded_qsl_set") == [2, 3]  # the last value wins
    assert d.get("num_errors") is None  # its line was cut, so it never parsed


def test_detail_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "detail.txt"
    p.write_text("")
    d = parse_detail(p)
    assert d.entries == [] and d.malformed_lines == 0


@pytest.mark.parametrize("parser", [parse_summary, parse_detail, parse_accuracy_log])
def test_missing_file_raises(tmp_path: Path, parser: Any) -> None:
    with pytest.raises(OutputError, match="not found") as err:
        parser(tmp_path / "nope.txt")
    assert "\n" not in str(err.value)


# What a run killed mid-way leaves: entries flushed so far, no closing bracket.
TRUNCATED = """[
{ "seq_id" : 0, "qsl_idx" : 5, "data" : "10000000" },
{ "seq_id" : 1, "qsl_idx" : 2, "data" : "07000000" },
{ "seq_id" : 2, "qsl_idx" : 5, "data" : "FFFFFFFF" }"""


def test_truncated_accuracy_log_raises(tmp_path: Path) -> None:
    p = tmp_path / "acc.json"
    p.write_text(TRUNCATED)
    with pytest.raises(OutputError, match="truncated .*3 complete entries") as err:
        parse_accuracy_log(p)
    assert "\n" not in str(err.value)


def test_truncated_accuracy_log_salvage(tmp_path: Path) -> None:
    p = tmp_path / "acc.json"
    p.write_text(TRUNCATED + ',\n{ "seq_id" : 3, "qsl_i')  # cut mid-entry as well
    entries = parse_accuracy_log(p, allow_truncated=True)
    assert [e.seq_id for e in entries] == [0, 1, 2]
    assert entries[0] == AccuracyEntry(seq_id=0, qsl_idx=5, data=bytes([16, 0, 0, 0]))
    # Repeats of a qsl_idx keep the first response, as MLPerf's accuracy scripts do.
    dedup = deduplicate_by_qsl_idx(entries)
    assert {k: decode_int32(v).tolist() for k, v in dedup.items()} == {5: [16], 2: [7]}
    assert decode_int32(entries[2]).tolist() == [-1]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("{}", "not a JSON list"),
        ('[{"seq_id": 0, "qsl_idx": 1, "data": "XYZ"}]', "entry 0"),
        ('[{"seq_id": 0, "data": "00"}]', "entry 0"),
        ("[\n]garbage", "not valid JSON"),
    ],
)
def test_bad_accuracy_logs(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "acc.json"
    p.write_text(text)
    with pytest.raises(OutputError, match=match):
        parse_accuracy_log(p)


def test_empty_accuracy_array(tmp_path: Path) -> None:
    p = tmp_path / "acc.json"
    p.write_text("[\n]\n")  # exactly what a performance run writes
    assert parse_accuracy_log(p) == []
    assert deduplicate_by_qsl_idx([]) == {}


def test_decode_int32_multi_value_and_bad_length() -> None:
    values = np.array([1, -2, 70000], dtype="<i4")
    entry = AccuracyEntry(seq_id=0, qsl_idx=0, data=values.tobytes())
    out = decode_int32(entry)
    assert out.tolist() == [1, -2, 70000]
    out[0] = 5  # a writable copy, not a view on the entry's bytes
    with pytest.raises(OutputError, match="int32"):
        decode_int32(b"\x00\x01\x02")
