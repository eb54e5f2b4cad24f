"""`deepgap verify-tensorrt` (python -m harness.verify_tensorrt): the TensorRT path end to end
on an NVIDIA GPU with TensorRT, for a report to send back (issue 15).

Steps, each a subprocess under its own time limit (plumbing/steps.py), so that one that
fails or hangs never stops or hides the next:

  tests              the TensorRT backend's tests (tests/sut/test_tensorrt*.py), the
                     real-engine ones included; a TensorRT or GPU test that skips fails it
  build-fp16/int8    the engine an Offline run uses, built in a fresh cache, timed
                     (harness/trt_build.py; build_seconds from the engine's sidecar)
  fp16/int8-Offline  a quick Offline and Server run of each precision through LoadGen
  fp16/int8-Server   (harness/run.py --backend tensorrt --profile quick), each with its
                     accuracy gate figures read from its saved result

Everything goes under --output: tensorrt-verify.json (versions, and each step's status,
exit code, seconds and figures; rewritten after every step), logs/<step>.log, the runs'
results, and the cache (engines, ONNX graphs, calibrations) unless --cache names another.
Without TensorRT, or without a GPU, it stops at once with one line and exit 2.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script (python harness/verify_tensorrt.py): the project root on the path
    import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import datetime as dt
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO

from harness.verify_figures import build_figures, junit_figures, run_figures
from plumbing import logs
from plumbing.argtypes import DefaultsHelpFormatter, OneLineParser, add_verbose_flag, guarded, positive_float
from plumbing.errors import OK_EXIT, RUN_FAILED_EXIT, DeviceError, OutputError, exit_code_epilog, one_line
from plumbing.files import write_atomic
from plumbing.steps import Step, StepResult, run_step
from plumbing.version import __version__
from sut.backends.base import MODELS

log = logging.getLogger("deepgap.verify")

ROOT = Path(__file__).resolve().parent.parent  # the checkout: cwd of every step
REPORT_FILE = "tensorrt-verify.json"
REPORT_SCHEMA = "deepgap.verify-tensorrt/1"
TEST_PATTERN = "tests/sut/test_tensorrt*.py"  # the TensorRT backend's tests, real engines included
PRECISIONS = ("fp16", "int8")
SCENARIOS = ("Offline", "Server")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="deepgap verify-tensorrt", formatter_class=DefaultsHelpFormatter, description=__doc__,
                      epilog=exit_code_epilog() + f"\n\nA step failed: exit {RUN_FAILED_EXIT}; every step ran.")
    p.add_argument("--output", type=Path, default=Path("deepgap-verify-tensorrt"),
                   help=f"folder for {REPORT_FILE}, the step logs, the runs' results and the cache")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier verification in --output (its cached engines are reused: the build "
                   "steps then report the earlier build's seconds) (default: off: refused)")
    p.add_argument("--cache", type=Path, default=None,
                   help="deepgap cache for the builds and runs (default: OUTPUT/cache, empty the first time, so "
                   "the engines are built and timed)")
    p.add_argument("--model", choices=MODELS, default="resnet50", help="network of the builds and runs")
    p.add_argument("--gpu", default="auto", help="GPU profile of the builds and runs, as harness/run.py's --gpu")
    p.add_argument("--tests-timeout-s", type=positive_float, default=1200.0, help="time limit of the tests step")
    p.add_argument("--build-timeout-s", type=positive_float, default=1800.0,
                   help="time limit of each engine build step (int8 includes its calibration)")
    p.add_argument("--run-timeout-s", type=positive_float, default=1200.0,
                   help="time limit of each run step (its accuracy gate and any engine it builds included)")
    add_verbose_flag(p, console="one line per step")
    return p


def preflight() -> Any:
    """The tensorrt module, once it imports and a CUDA GPU is visible; else the one-line
    error, before anything is written."""
    from sut.trt_cuda import import_torch_and_tensorrt

    torch, trt = import_torch_and_tensorrt()  # the backend's own: torch first, one line if missing
    if not torch.cuda.is_available():
        raise DeviceError(f"verify-tensorrt needs an NVIDIA GPU and PyTorch sees none (torch {torch.__version__}, "
                          f"CUDA {torch.version.cuda or 'none: a CPU-only build'}); run it on the GPU machine")
    return trt


def versions(trt: Any) -> dict[str, Any]:
    """TensorRT, CUDA, the driver (NVML, where nvidia-ml-py imports), the GPU, torch and
    the deepgap commit, from the description every run saves (runs/system.py)."""
    import torch

    from runs.system import describe_system

    found = {"tensorrt": getattr(trt, "__version__", None), "cuda": torch.version.cuda, "torch": torch.__version__,
             "deepgap": __version__}
    try:
        system = describe_system("verify-tensorrt", "cuda:0", 1, {})
    except Exception as exc:  # noqa: BLE001 - the versions are figures: the steps still run without them
        log.warning("the system's description failed (%s); the report has the basic versions only", one_line(exc))
        return {**found, "error": one_line(exc)}
    nvml, source = system.get("nvml") or {}, system.get("deepgap_source") or {}
    software = system["software"]
    return {
        **found, "cudnn": system.get("cudnn"), "driver": nvml.get("driver"),
        "nvml": "available" if nvml.get("available") else nvml.get("reason"),
        "gpu": system.get("accelerator_model_name"), "onnxruntime": software["onnxruntime"],
        "mlcommons-loadgen": software["mlcommons-loadgen"], "python": system["python"],
        "deepgap_commit": source.get("commit"), "deepgap_modified": source.get("modified"),
        "host_cpu": system["host_processor_model_name"], "operating_system": system["operating_system"],
    }


def prepare_output(output: Path, overwrite: bool) -> Path:
    output = output.expanduser().resolve()
    if (output / REPORT_FILE).exists() and not overwrite:
        raise OutputError(f"{output} holds an earlier verification ({REPORT_FILE}); give another --output, "
                          "or --overwrite to replace it")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {output}: {exc.strerror or exc}") from None
    return output


def tensorrt_test_files(root: Path = ROOT) -> list[str]:
    """The TensorRT test files, relative to `root`; the pattern itself where none matches
    (an installed package without tests/), so that pytest says so instead of running
    every test it finds."""
    found = sorted(str(path.relative_to(root)) for path in root.glob(TEST_PATTERN))
    return found or [TEST_PATTERN]


def _run_flags(args: argparse.Namespace, precision: str, scenario: str, output: Path) -> list[str]:
    """harness/run.py's flags for one quick TensorRT run (harness/trt_build.py takes them too)."""
    flags = ["--backend", "tensorrt", "--precision", precision, "--scenario", scenario, "--model", args.model,
             "--gpu", args.gpu, "--profile", "quick", "--output", str(output), "--no-progress"]
    return flags + (["--overwrite"] if args.overwrite else [])


def plan_steps(args: argparse.Namespace, output: Path, python: str = sys.executable) -> list[Step]:
    """The verification's steps, in order, each writing under `output`."""
    cache = (args.cache.expanduser().resolve() if args.cache else output / "cache")
    env = {"DEEPGAP_CACHE": str(cache)}
    summaries, runs = output / "summaries", output / "runs"
    summaries.mkdir(parents=True, exist_ok=True)  # --json checks its folder when the step parses it
    junit = output / "tests.xml"
    # An earlier verification's (--overwrite) is never read as this one's: its summaries go,
    # and a saved run older than now is not this run.
    for stale in (junit, *summaries.glob("*.json")):
        stale.unlink(missing_ok=True)
    since = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    steps = [Step("tests", [python, "-m", "pytest", "-q", "-rs", *tensorrt_test_files(), f"--junitxml={junit}"],
                  args.tests_timeout_s, env, lambda: junit_figures(junit))]
    for precision in PRECISIONS:
        summary = summaries / f"build-{precision}.json"
        flags = _run_flags(args, precision, "Offline", runs / f"build-{precision}")
        steps.append(Step(f"build-{precision}", [python, "-m", "harness.trt_build", *flags, "--json", str(summary)],
                          args.build_timeout_s, env, lambda summary=summary: build_figures(summary)))
    for precision in PRECISIONS:
        for scenario in SCENARIOS:
            name = f"{precision}-{scenario}"
            summary, results = summaries / f"run-{name}.json", runs / name
            flags = _run_flags(args, precision, scenario, results)
            steps.append(Step(name, [python, "-m", "harness.run", *flags, "--json", str(summary)], args.run_timeout_s,
                              env, lambda summary=summary, results=results: run_figures(summary, results, since)))
    return steps


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_report(path: Path, header: dict[str, Any], results: Sequence[StepResult], started: str,
                 planned: Sequence[str], finished: bool) -> None:
    passed = finished and all(r.passed for r in results)
    report = {
        "schema": REPORT_SCHEMA, **header, "started_utc": started, "finished_utc": _now() if finished else None,
        "finished": finished, "passed": passed,
        "exit_code": (OK_EXIT if passed else RUN_FAILED_EXIT) if finished else None,
        "steps": [r.to_json() for r in results], "steps_not_run_yet": list(planned[len(results):]),
    }
    try:
        write_atomic(path, json.dumps(report, indent=2, default=str) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def verify(steps: Sequence[Step], output: Path, header: dict[str, Any], cwd: Path | None = ROOT,
           screen: TextIO | None = None) -> int:
    """Run every step, one line on `screen` each, the report rewritten after each (a
    verification cut short keeps what it found); 0 when all passed, else RUN_FAILED_EXIT."""
    screen = screen or sys.stdout
    report, started = output / REPORT_FILE, _now()
    names = [step.name for step in steps]
    width = max(map(len, names), default=0) + 1
    results: list[StepResult] = []
    write_report(report, header, results, started, names, finished=False)
    for step in steps:
        log.info("%s: %s (limit %g s)", step.name, shlex.join(step.argv), step.timeout_s)
        if screen.isatty():
            print(f"{step.name:<{width}} running ...", end="\r", file=screen, flush=True)
        result = run_step(step, output / "logs" / f"{step.name}.log", cwd=cwd)
        results.append(result)
        write_report(report, header, results, started, names, finished=False)
        print(result.line(width), file=screen, flush=True)
    write_report(report, header, results, started, names, finished=True)
    failed = [r.name for r in results if not r.passed]
    verdict = f"{len(failed)} of {len(results)} steps failed ({', '.join(failed)})" if failed else "every step passed"
    print(f"{verdict}; report: {report} (send it back, with logs/ for a failed step)", file=screen)
    return RUN_FAILED_EXIT if failed else OK_EXIT


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        logs.setup(verbose=args.verbose)
        trt = preflight()
        output = prepare_output(args.output, args.overwrite)
        steps = plan_steps(args, output)
        given = list(sys.argv[1:] if argv is None else argv)
        header = {"deepgap_version": __version__, "command": shlex.join(["deepgap", "verify-tensorrt", *given]),
                  "versions": versions(trt),
                  "settings": {"model": args.model, "gpu": args.gpu, "run_profile": "quick", "output": str(output),
                               "cache": steps[0].env["DEEPGAP_CACHE"]}}
        with logs.run_log(output / logs.LOG_FILE):
            return verify(steps, output, header)

    return guarded("deepgap", body)


if __name__ == "__main__":
    sys.exit(main())
