"""harness.bench's command line: bad input is one line and exit 2, before anything loads."""

from __future__ import annotations

import pytest

from harness.bench import main, server_grid_spec


@pytest.mark.parametrize("argv, words", [
    (["--server-grid", "64:2000"], "MAX_BATCH:TIMEOUT_US:IN_FLIGHT"),
    (["--server-grid", "0:2000:3"], "at least 1"),
    (["--repeats", "0"], "--repeats"),
    (["--models", "vgg16"], "invalid choice: 'vgg16'"),
    (["--precisions", "int8"], "invalid choice: 'int8'"),  # the bench times the torch backend
])
def test_bad_input_is_one_line_and_exit_2(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bench: error:") and words in err


def test_a_server_grid_setting_is_read_whole():
    assert server_grid_spec("64:2000:3") == {"max_batch": 64, "batch_timeout_us": 2000, "in_flight": 3}
