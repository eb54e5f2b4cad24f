"""The `deepgap` console command (deepgap/cli.py): --version, the subcommand list, one-line
errors, and that each subcommand reaches its tool's own parser."""

from __future__ import annotations

import pytest

from deepgap.cli import SUBCOMMANDS, main
from plumbing.version import __version__


def test_version_and_the_subcommand_list(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"deepgap {__version__}"
    assert main([]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name}" in listed for name in ("run", "sweep", "compare", "plan", "check", "calibrate", "bench"))


def test_an_unknown_subcommand_is_one_line_and_exit_2(capsys):
    assert main(["benchmark"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown subcommand 'benchmark'" in err and "run, sweep" in err


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_reaches_its_tools_parser(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_flags_alone_are_a_run_and_a_bad_flag_is_the_runs_one_line_error(capsys):
    assert main(["--scenario", "Turbo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Turbo" in err and err.startswith("deepgap: error:")
