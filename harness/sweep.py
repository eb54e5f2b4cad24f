"""The sweep's command line: `python -m harness.sweep` (studies/sweeper.py and studies/group.py run the study).

Without --backends each precision gets the backend harness/run.py would choose
(runs.backend_choice.default_backend); --dry-run resolves every group first, refusing in the sweep's own
flag names what the real run would refuse; --json summarises the saved study.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script (python harness/sweep.py): the project root on the path
    import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from plumbing import logs
from plumbing.argtypes import (DefaultsHelpFormatter, OneLineParser, add_json_flag, add_verbose_flag, float_in,
                              int_at_least)
from runs.backend_choice import DEFAULT_BACKEND_RULE, choose_backend
from runs.config import COMPILE_DEFAULT_RULE, CliRequest
from sut.backends import BACKENDS
from studies.curves import DEFAULT_LADDER
from runs.device import GPUS_HELP, resolve_device
from runs.endpoint import ENDPOINT_FLAGS, REMOTE_BACKEND, add_endpoint_flags
from plumbing.errors import ConfigError, DeepgapError, RunFailed, exit_code_epilog
from studies.slo import parse_slo
from studies.study import DEFAULT_BATCH_SIZES, StudyPlan
from studies.sweeper import Sweep, estimated_seconds, in_sweep_words, planned_runs
from sut.backends.base import MODELS, PRECISIONS
from sut.compiling import COMPILE_MODES
from sut.settings import SCENARIOS


_fraction = float_in(0.0, 1.0)


def _sweep_doc() -> str:
    import harness.sweep

    return harness.sweep.__doc__ or ""


def build_parser() -> OneLineParser:
    positive = int_at_least(1)
    p = OneLineParser(prog="python -m harness.sweep", description=_sweep_doc(), formatter_class=DefaultsHelpFormatter,
                      epilog=exit_code_epilog() + "\n  (INVALID runs are a study's data: a finished study exits 0)")
    p.add_argument("--study", type=Path, required=True,
                   help="study folder: created, or resumed when it holds the same plan")
    p.add_argument("--models", nargs="+", choices=MODELS, default=["resnet50"], help="networks")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=["fp32"], help="numeric precisions")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=None,
                   help=f"inference runtimes (default: as harness/run.py chooses: {DEFAULT_BACKEND_RULE})")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=["Offline", "Server", "SingleStream"],
                   help="LoadGen scenarios")
    p.add_argument("--batch-sizes", nargs="+", type=positive, default=list(DEFAULT_BATCH_SIZES),
                   help="Offline max batch of each curve point")
    p.add_argument("--repeats", type=positive, default=3, help="runs per point (mean and std over them)")
    p.add_argument("--duration-ms", type=positive, default=2000, help="minimum duration of every measured run")
    p.add_argument("--search-ms", type=positive, default=1000, help="minimum duration of Server search runs")
    p.add_argument("--confirm-ms", type=positive, default=5000,
                   help="minimum duration of the full-length run that confirms the Server answer")
    p.add_argument("--slo", default="p99:15ms",
                   help="Server latency objective PERCENTILE:BOUND, the bound in us, ms (no unit: ms) or s, "
                   "e.g. p99:15ms, p90:5ms")
    p.add_argument("--ladder", nargs="+", type=_fraction, default=list(DEFAULT_LADDER),
                   help="fractions of the max Server QPS measured for the latency-throughput curve")
    p.add_argument("--search-tolerance", type=_fraction, default=0.03,
                   help="stop bisecting when the bracket is this fraction of its upper end")
    p.add_argument("--server-max-batch", type=positive, default=None,
                   help="Server batching (default: the GPU profile's)")
    p.add_argument("--batch-timeout-us", type=int_at_least(0), default=None,
                   help="Server: longest wait for a batch to fill (default: the GPU profile's)")
    p.add_argument("--in-flight", type=positive, default=None,
                   help="Offline and Server batches in flight (default: the GPU profile's)")
    p.add_argument("--gpu", default="auto", help="GPU profile, cpu, or auto (match the visible device)")
    p.add_argument("--gpus", default=None, help=f"CUDA devices each run spans: {GPUS_HELP} (default: 1)")
    p.add_argument("--instances", type=positive, default=None,
                   help="backend instances per device in every run (default: the GPU profile's, else 1)")
    p.add_argument("--image-size", type=positive, default=None, help="input height and width (default: 224)")
    p.add_argument("--dataset-count", type=positive, default=None,
                   help="synthetic samples (default: 1024, as harness/run.py)")
    p.add_argument("--weights", default=None,
                   help="seeded, torchvision, or a state-dict path (default: seeded)")
    p.add_argument("--min-query-count", type=positive, default=None,
                   help="minimum query count of every run (default: the run profile's)")
    p.add_argument("--compile", choices=COMPILE_MODES, default=None,
                   help=f"TorchInductor compilation of the torch runs, once per group (default: {COMPILE_DEFAULT_RULE})")
    p.add_argument("--skip-accuracy-gate", action="store_true",
                   help="do not check fp16/bf16/int8 or a compiled network against FP32 before each group (default: off: the gate runs)")
    p.add_argument("--dry-run", action="store_true",
                   help="resolve every group's configuration (device, precision, backend), print the plan's size "
                   "and a time estimate, run nothing (default: off)")
    add_endpoint_flags(p)
    add_json_flag(p)
    add_verbose_flag(p, "warnings and a line per run")
    p.add_argument("--progress", action="store_true", help="a progress bar during each run (default: off)")
    return p


def default_backends(precisions: Sequence[str], gpu: str, gpus: str = "1") -> tuple[str, ...]:
    """The backend harness/run.py would choose for each precision on this device
    (backend_choice.default_backend, through choose_backend and its checks): a study with no
    --backends uses it, so a sweep and a run of the same precision measure the same thing."""
    device = resolve_device(gpu, gpus)
    chosen: dict[str, str] = {}
    for precision in precisions:
        try:
            chosen[precision] = choose_backend(CliRequest(precision=precision, gpu=gpu, gpus=gpus), device)
        except DeepgapError as exc:
            raise in_sweep_words(exc)
    backends = tuple(dict.fromkeys(chosen.values()))
    if len(backends) > 1:
        which = ", ".join(f"{p}: {b}" for p, b in chosen.items())
        raise ConfigError(f"--precisions {' '.join(precisions)} have different default backends here ({which}) and "
                          "a study runs each precision on each of its backends: give --backends, or make one "
                          "study per backend")
    return backends


def plan_from_args(args: Any) -> StudyPlan:
    base = {k: getattr(args, k) for k in ("gpu", "gpus", "image_size", "dataset_count", "weights", "min_query_count",
                                          "compile", "instances")
            if getattr(args, k) is not None}
    if args.skip_accuracy_gate:
        base["skip_accuracy_gate"] = True
    # Saved in study.json: a TLS file's path as text.
    base.update({k: v if isinstance(v, (str, int, float, bool)) else str(v)
                 for k, unset in ENDPOINT_FLAGS.items() if (v := getattr(args, k)) != unset})
    if args.backends:
        backends = tuple(args.backends)
    elif args.endpoint is not None:  # a study of a remote server, as harness/run.py --endpoint alone
        backends = (REMOTE_BACKEND,)
    else:
        backends = default_backends(args.precisions, args.gpu, args.gpus or "1")
    return StudyPlan(
        models=tuple(args.models), precisions=tuple(args.precisions), backends=backends,
        scenarios=tuple(args.scenarios), batch_sizes=tuple(args.batch_sizes), repeats=args.repeats,
        duration_ms=args.duration_ms, search_ms=args.search_ms, confirm_ms=args.confirm_ms,
        slo=parse_slo(args.slo), ladder=tuple(args.ladder), server_max_batch=args.server_max_batch,
        batch_timeout_us=args.batch_timeout_us, in_flight=args.in_flight,
        search_tolerance=args.search_tolerance, base=base,
    )


def main(argv: Sequence[str] | None = None) -> int:
    from plumbing.argtypes import guarded
    from runs.jsonsummary import study_fields
    from plumbing.json_summary import SummaryTarget

    argv = list(sys.argv[1:] if argv is None else argv)
    summary = SummaryTarget("sweep")

    def body() -> int:
        args = build_parser().parse_args(argv)
        summary.target = args.json
        # The sweep's own lines (one per run) are its screen; the runs' details go to their logs.
        logs.setup(verbose=args.verbose, shown=("deepgap.sweep",), timestamps=True)
        plan = plan_from_args(args)
        command = shlex.join(["python", "-m", "harness.sweep", *argv])
        sweep = Sweep(plan, args.study, command, show_progress=args.progress)
        if args.dry_run:
            groups = sweep.groups()  # what the real run would refuse, refused now
            runs, seconds = planned_runs(plan), estimated_seconds(plan)
            print(f"{len(groups)} group(s) ({', '.join(g.key for g in groups)}) on {groups[0].load_config.device.name}, "
                  f"about {runs} runs, at least {seconds / 60:.1f} min plus backend loading", file=summary.screen)
            summary.write(0, {"dry_run": True, "groups": [g.key for g in groups], "runs": runs,
                              "min_seconds": round(seconds, 1)})
            return 0
        study_json = args.study / "study.json"
        try:
            study = sweep.run()
        except RunFailed as exc:  # the finished points are saved: say which, with the error
            if study_json.is_file():
                summary.write(exc.exit_code, {**study_fields(study_json), "error": str(exc)})
            raise
        print(f"study: {len(study['points'])} points, {len(study['curves'])} curve(s), "
              f"{len(study['slo_searches'])} SLO search(es): {study_json}", file=summary.screen)
        summary.write(0, study_fields(study_json))
        return 0

    return guarded("sweep", body, "interrupted; rerun the same command to resume", summary=summary)


if __name__ == "__main__":
    sys.exit(main())
