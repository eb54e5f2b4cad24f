"""Command line: parse flags, resolve the configuration, run, print one screen.

Every DeepgapError becomes one line on stderr and a non-zero exit; no tracebacks for
anything a user can cause.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from plumbing import logs
from plumbing.argtypes import guarded
from runs.config import CliRequest
from plumbing.errors import ACCURACY_FAILED_EXIT, AUDIT_FAILED_EXIT, OK_EXIT
from plumbing.json_summary import SummaryTarget
from runs.run_flags import build_parser, command_for, request_from_args

__all__ = ["ACCURACY_FAILED_EXIT", "AUDIT_FAILED_EXIT", "build_parser", "command_for", "guarded", "main",
           "request_from_args"]

log = logging.getLogger("deepgap")


def _submission(request: CliRequest, args: argparse.Namespace, summary: SummaryTarget) -> int:
    from audit.submission import run_submission
    from runs.jsonsummary import submission_fields

    outcome = run_submission(request, show_progress=args.progress, alternate_seeds=args.alternate_seeds)
    code = OK_EXIT if outcome.passed else AUDIT_FAILED_EXIT
    print(outcome.render(verbose=args.verbose), file=summary.screen)
    summary.write(code, submission_fields(outcome.scenario_dir / "measurements.json"))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"]:  # `deepgap check OUT`: the results checker (audit/check.py)
        from audit.check import main as check_main

        return check_main(argv[1:])
    summary = SummaryTarget("run")

    def body() -> int:
        args = build_parser().parse_args(argv)
        summary.target = args.json
        logs.setup(verbose=args.verbose, quiet=args.quiet)
        request = request_from_args(args)
        from runs.config import resolve
        from runs.jsonsummary import exit_code_of, run_fields, run_paths, saved_run
        from reports.run_screen import render_run
        from runs.runner import execute

        if args.mode == "submission":
            return _submission(request, args, summary)
        outcome = execute(resolve(request), show_progress=args.progress)
        paths = outcome.paths
        result = saved_run(paths.measurements, paths.section)  # what was saved decides the code
        code = exit_code_of(result)
        print(render_run(result, str(paths.run_dir)), file=summary.screen)
        if code == ACCURACY_FAILED_EXIT:
            print("deepgap: error: accuracy below 99% of FP32's top-1 (MLPerf's rule); "
                  f"see {paths.run_dir / 'accuracy.txt'}", file=sys.stderr)
        summary.write(code, {**run_fields(result), "paths": run_paths(paths.measurements, paths.run_dir)})
        return code

    return guarded("deepgap", body, summary=summary)
