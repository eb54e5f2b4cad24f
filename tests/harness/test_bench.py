"""harness.bench's command line: bad input is one line and exit 2, before anything loads."""

from __future__ import annotations

import pytest

from harness.bench import Bench, main, server_grid_spec, table


@pytest.mark.parametrize("argv, words", [
    (["--server-grid", "64:2000"], "MAX_BATCH:TIMEOUT_US:IN_FLIGHT"),
    (["--server-grid", "0:2000:3"], "at least 1"),
    (["--repeats", "0"], "--repeats"),
    (["--models", "vgg16"], "invalid choice: 'vgg16'"),
    (["--precisions", "int8"], "invalid choice: 'int8'"),  # the bench times the torch backend
    (["--instances", "0"], "--instances"),
])
def test_bad_input_is_one_line_and_exit_2(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bench: error:") and words in err


def test_a_server_grid_setting_is_read_whole():
    assert server_grid_spec("64:2000:3") == {"max_batch": 64, "batch_timeout_us": 2000, "in_flight": 3}


def _row(instances: int, single: bool) -> dict:
    stat = {"mean": 10.0, "std": 1.0, "runs": [9.0, 11.0]}
    row = {"model": "resnet50", "precision": "fp16", "compile": "default", "instances": instances,
           "offline_batch": 256, "loads": [{"seconds": 3.0, "compile": {"compiled": True, "cache": "hit"}}],
           "tight_loop_qps": stat, "offline_qps": stat, "offline_vs_tight": 1.0, "server_target_qps": 9.0,
           "server_confirm_valid": [True, True], "server_vs_offline": 0.9, "server_p99_ms": stat,
           "server_bound_qps": 8.0}
    if single:
        row.update(backend_bs1_p90_ms=stat, singlestream_p90_ms=stat, singlestream_overhead_us=5.0)
    return row


def test_the_table_has_a_row_per_instance_count_and_no_single_stream_beyond_one():
    lines = table([_row(1, True), _row(2, False)]).splitlines()
    assert "| inst |" in lines[0] and len(lines) == 4
    assert "| 1 | 256 |" in lines[2] and lines[2].endswith("| 5 |")
    assert "| 2 | 256 |" in lines[3] and lines[3].endswith("- | - | - |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_every_bench_run_asks_for_its_instances(tmp_path):
    bench = Bench("resnet18", "fp32", tmp_path, 1, 100, 100, "cpu", "none", instances=3)
    assert bench.config("Offline").knobs["instances"] == 3
