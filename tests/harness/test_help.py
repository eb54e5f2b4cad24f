"""Every command's --help states each option's real default and the one exit-code table."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from plumbing.errors import EXIT_CODES

ROOT = Path(__file__).resolve().parents[2]
# (the command line, the module whose build_parser() makes its parser)
COMMANDS = {
    "run": (["harness/run.py"], "harness.cli"),
    "sweep": (["-m", "harness.sweep"], "harness.sweep"),
    "compare": (["-m", "harness.compare"], "harness.compare"),
    "plan": (["-m", "harness.plan"], "harness.plan"),
    "verify-tensorrt": (["-m", "harness.verify_tensorrt"], "harness.verify_tensorrt"),
    "export-triton": (["-m", "harness.export_triton"], "harness.export_triton"),
    "mlserver-launch": (["-m", "serving.mlserver_launch"], "serving.mlserver_launch"),
    "instant-grpc": (["-m", "serving.instant_grpc"], "serving.instant_grpc"),
}


def help_of(command: str) -> str:
    argv, _ = COMMANDS[command]
    # Wide enough that no help line wraps: argparse breaks words at hyphens ("cliux- old").
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", COLUMNS="2000")
    proc = subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout


def option_blocks(text: str) -> dict[str, str]:
    """Option flag -> its help text (wrapped lines joined), from a --help screen."""
    blocks: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if re.match(r"^  -", line):
            current = line.split()[0].rstrip(",")
            blocks[current] = line
        elif line.startswith("   ") and current:
            blocks[current] += " " + line.strip()
        else:
            current = None
    return {flag: " ".join(body.split()) for flag, body in blocks.items()}


def parser_of(command: str) -> argparse.ArgumentParser:
    import importlib

    return importlib.import_module(COMMANDS[command][1]).build_parser()


def stated_default(block: str) -> str:
    found = re.findall(r"\(default: ([^()]*(?:\([^()]*\)[^()]*)*)\)", block)
    assert found, f"no (default: ...) in {block!r}"
    return found[-1]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_states_its_real_default(command: str) -> None:
    """A value default is shown as the parser holds it; a flag (store_true/store_false,
    absent unless given) says "off"; a computed default (None) says what it is in words,
    never "None", "True" or "False" (argparse's formatter printed "--no-progress ...
    (default: True)" and "--backend ... (default: None)"; the sweep's help showed none)."""
    blocks = option_blocks(help_of(command))
    for action in parser_of(command)._actions:
        if not action.option_strings or action.dest == "help" or action.required:
            continue
        flag = action.option_strings[0]
        block = blocks.get(flag) or blocks[action.option_strings[-1]]
        default = stated_default(block)
        assert default not in ("None", "True", "False"), f"{flag}: (default: {default})"
        if action.nargs == 0:
            assert default.startswith("off"), f"{flag} is off unless given, its help says (default: {default})"
        elif action.default is not None:
            value = action.default
            shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            assert default == shown, f"{flag}: help says {default!r}, the parser's default is {shown!r}"
        else:
            assert default.strip(), flag


def test_backend_default_in_the_help_is_the_one_rule() -> None:
    from runs.backend_choice import DEFAULT_BACKEND_RULE

    for command in ("run", "sweep"):
        flat = " ".join(help_of(command).split())
        assert DEFAULT_BACKEND_RULE in flat, command


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_ends_with_the_exit_code_table(command: str) -> None:
    text = help_of(command)
    epilog = text[text.index("exit codes:"):]
    for code, meaning in EXIT_CODES.items():
        assert f"  {code:<4} {meaning}" in epilog, (code, command)


def test_check_help_has_defaults_and_exit_codes() -> None:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", COLUMNS="2000")
    proc = subprocess.run([sys.executable, "-m", "audit.check", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    blocks = option_blocks(proc.stdout)
    assert stated_default(blocks["--strict"]).startswith("off")
    assert stated_default(blocks["--json"]) == "none"
    assert "  5    a compliance test or the results checker found a FAIL" in proc.stdout


def test_readme_exit_code_table_is_the_one_in_the_code() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", readme, re.M))
    assert {int(code) for code in rows} == set(EXIT_CODES)
    for code, meaning in EXIT_CODES.items():
        # The README may say more; it starts with the code's own words.
        assert rows[str(code)].startswith(meaning.split(" (")[0].split(";")[0]), (code, rows[str(code)])


# Run as `python harness/<tool>.py` from a checkout that is not installed: Python puts
# harness/ first on the path and the project root nowhere, so each script adds the root.
# `-S` keeps the editable install's path hook out; site-packages go on the path as plain
# folders (without their .pth files) for the third-party packages.
_AS_UNINSTALLED_SCRIPT = ("import runpy, site, sys; script = sys.argv[1]; sys.argv = sys.argv[1:]; "
                          "sys.path[:0] = [__import__('os').path.dirname(script)]; "
                          "sys.path += site.getsitepackages(); runpy.run_path(script, run_name='__main__')")


@pytest.mark.parametrize("script", ["bench", "compare", "export_triton", "plan", "run", "sweep", "trt_build",
                                    "verify_tensorrt"])
def test_each_tool_runs_as_a_script_from_a_checkout_that_is_not_installed(script, tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-S", "-c", _AS_UNINSTALLED_SCRIPT, str(ROOT / "harness" / f"{script}.py"),
                           "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-500:]
