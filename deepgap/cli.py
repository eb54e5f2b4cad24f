"""`deepgap SUBCOMMAND [flags]`: one console command for every tool, beside the module forms
(`python harness/run.py`, `python -m harness.sweep`, ...), which stay. Each subcommand is
that tool's own parser and main, unchanged; `deepgap --scenario ...` with no subcommand is a
run, as before this command had subcommands."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from plumbing.errors import BAD_INPUT_EXIT, OK_EXIT

Main = Callable[[Sequence[str]], int]


def _run(argv: Sequence[str]) -> int:
    from harness.cli import main

    return main(argv)


def _sweep(argv: Sequence[str]) -> int:
    from harness.sweep import main

    return main(argv)


def _compare(argv: Sequence[str]) -> int:
    from harness.compare import main

    return main(argv)


def _plan(argv: Sequence[str]) -> int:
    from harness.plan import main

    return main(argv)


def _check(argv: Sequence[str]) -> int:
    from audit.check import main

    return main(list(argv))


def _calibrate(argv: Sequence[str]) -> int:
    from calibration.cli import main

    return main(argv)


def _bench(argv: Sequence[str]) -> int:
    from harness.bench import main

    return main(list(argv))


def _verify_tensorrt(argv: Sequence[str]) -> int:
    from harness.verify_tensorrt import main

    return main(argv)


SUBCOMMANDS: dict[str, tuple[Main, str]] = {
    "run": (_run, "one LoadGen run: the flags of python harness/run.py"),
    "sweep": (_sweep, "a study: batch sizes, precisions, backends, SLO searches (python -m harness.sweep)"),
    "compare": (_compare, "a comparison report from saved studies (python -m harness.compare)"),
    "plan": (_plan, "a capacity plan from saved studies (python -m harness.plan)"),
    "check": (_check, "the results checker over a results folder (python -m audit.check)"),
    "calibrate": (_calibrate, "an INT8 calibration cache (python -m calibration)"),
    "bench": (_bench, "the harness's own benchmark: eager against compiled, overhead (python -m harness.bench)"),
    "verify-tensorrt": (_verify_tensorrt, "the TensorRT path end to end on a GPU, for a report to send back "
                        "(python -m harness.verify_tensorrt)"),
}


def usage() -> str:
    from plumbing.version import __version__

    width = max(map(len, SUBCOMMANDS))
    lines = [f"usage: deepgap SUBCOMMAND [flags]   (deepgap {__version__}; deepgap SUBCOMMAND -h for its flags)", "",
             "subcommands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in SUBCOMMANDS.items()]
    lines += ["", "With no subcommand, `deepgap --scenario Server --gpu L4 --precision int8` is a run."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["--version"], ["-V"]):
        from plumbing.version import __version__

        print(f"deepgap {__version__}")
        return OK_EXIT
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return OK_EXIT
    if args[0] in SUBCOMMANDS:
        return SUBCOMMANDS[args[0]][0](args[1:])
    if args[0].startswith("-"):  # flags alone: a run, as the command was before it had subcommands
        return _run(args)
    print(f"deepgap: error: unknown subcommand {args[0]!r}; choose from {', '.join(SUBCOMMANDS)} "
          "(deepgap -h lists them)", file=sys.stderr)
    return BAD_INPUT_EXIT


if __name__ == "__main__":
    sys.exit(main())
