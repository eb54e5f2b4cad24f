"""`deepgap SUBCOMMAND [flags]`: one console command for every tool, beside the module forms
(`python harness/run.py`, `python -m harness.sweep`, ...), which stay. Each subcommand is
that tool's own parser and main, unchanged; `deepgap --scenario ...` with no subcommand is a
run, as before this command had subcommands."""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Sequence

from plumbing.errors import BAD_INPUT_EXIT, OK_EXIT

# name -> (the module whose main(argv) it is, what it does). Imported only when chosen, so
# `deepgap -h` and a run never import the other tools (nor their heavy dependencies).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("harness.cli", "one LoadGen run: the flags of python harness/run.py"),
    "sweep": ("harness.sweep", "a study: batch sizes, precisions, backends, SLO searches (python -m harness.sweep)"),
    "compare": ("harness.compare", "a comparison report from saved studies (python -m harness.compare)"),
    "plan": ("harness.plan", "a capacity plan from saved studies (python -m harness.plan)"),
    "check": ("audit.check", "the results checker over a results folder (python -m audit.check)"),
    "calibrate": ("calibration.cli", "an INT8 calibration cache (python -m calibration)"),
    "bench": ("harness.bench", "the harness's own benchmark: eager against compiled, overhead (python -m harness.bench)"),
    "export-triton": ("harness.export_triton",
                      "a Triton model repository, batching from a study (python -m harness.export_triton)"),
    "serve-mlserver": ("serving.mlserver_launch", "serve the network from a local MLServer (KServe v2), for "
                       "--backend kserve (python -m serving.mlserver_launch)"),
    "serve-instant": ("serving.instant_grpc", "a KServe v2 gRPC server that answers at once: the client's ceiling "
                      "(python -m serving.instant_grpc)"),
    "verify-tensorrt": ("harness.verify_tensorrt", "the TensorRT path end to end on a GPU, for a report to send back "
                        "(python -m harness.verify_tensorrt)"),
}


def _main_of(name: str) -> Callable[[list[str]], int]:
    return importlib.import_module(SUBCOMMANDS[name][0]).main


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
        return _main_of(args[0])(args[1:])
    if args[0].startswith("-"):  # flags alone: a run, as the command was before it had subcommands
        return _main_of("run")(args)
    print(f"deepgap: error: unknown subcommand {args[0]!r}; choose from {', '.join(SUBCOMMANDS)} "
          "(deepgap -h lists them)", file=sys.stderr)
    return BAD_INPUT_EXIT


if __name__ == "__main__":
    sys.exit(main())
