"""harness/run.py's flags: the parser, the request it yields, and the command line that asks
for a request again (recorded with every result, so the runner needs it below the CLI)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from calibration.algorithms import DEFAULT_ALGORITHM, DEFAULT_PERCENTILE
from plumbing.argtypes import (DefaultsHelpFormatter, OneLineParser, add_json_flag, add_verbose_flag,
                              int_at_least, positive_float)
from runs.backend_choice import DEFAULT_BACKEND_RULE
from runs.device import GPUS_HELP
from runs.endpoint import add_endpoint_flags
from runs.config import CALIBRATION_ALGORITHMS, COMPILE_DEFAULT_RULE, DATASETS, CliRequest
from plumbing.errors import ConfigError, exit_code_epilog
from sut.backends import BACKENDS
from sut.backends.base import MODELS, PRECISIONS
from sut.compiling import COMPILE_MODES
from sut.cpu_isa import AUTO, INT8_CPU_PATHS
from sut.settings import SCENARIOS

_Parser = OneLineParser
_positive_int = int_at_least(1)
_non_negative_int = int_at_least(0)
_positive_float = positive_float
# What the batching and LoadGen options default to: the layers below the CLI (runs/config.py).
_FROM_PROFILE = "(default: the GPU profile's)"
_FROM_LAYERS = "(default: the run profile, GPU profile and user.conf)"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="deepgap",
        description="MLPerf LoadGen benchmark of ResNet inference on a GPU or the CPU.",
        formatter_class=DefaultsHelpFormatter,
        epilog=exit_code_epilog(),
    )
    p.add_argument("--scenario", choices=SCENARIOS, default="Offline", help="LoadGen scenario")
    p.add_argument("--model", choices=MODELS, default="resnet50", help="network")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="numeric precision (fp16/bf16: CUDA GPUs; int8: ONNX Runtime on the CPU, TensorRT on GPUs)")
    p.add_argument("--gpu", default="auto",
                   help="GPU profile: T4, L4, A10, A100, H100, H200, cpu, or auto (match the visible device)")
    p.add_argument("--gpus", default="1",
                   help=f"which CUDA devices one SUT runs across: {GPUS_HELP}; each gets its own backend instances")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="inference runtime; null answers instantly with pixel checksums, measuring the "
                   f"harness's own ceiling (default: {DEFAULT_BACKEND_RULE})")
    p.add_argument("--mode", choices=("performance", "accuracy", "submission"), default="performance",
                   help="performance: timed run; accuracy: every sample once, scored; submission: accuracy, "
                   "performance, compliance TEST01 and TEST04, then the results checker (audit/)")
    p.add_argument("--alternate-seeds", action="store_true",
                   help="with --mode submission: also rerun with other seeds (MLPerf's retired TEST05, "
                   "within 5%%) (default: off)")
    p.add_argument("--profile", dest="run_profile", default="quick",
                   help="run profile: quick (seconds, indicative) or submission (MLPerf's full rules)")
    p.add_argument("--user-conf", type=Path, default=None,
                   help="MLPerf user.conf (model.scenario.key = value) layered over the profiles (default: none)")
    p.add_argument("--output", type=Path, default=Path("deepgap-results"),
                   help="output root: results/<system>/<model>/<scenario>/ and systems/ go under it")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier result of the same run (default: off: such a run is refused)")
    p.add_argument("--dataset", choices=DATASETS, default="synthetic",
                   help="synthetic: seeded images, no download; imagenet: a validation folder")
    p.add_argument("--dataset-path", type=Path, default=None,
                   help="ImageNet validation folder with val_map.txt ('file label' lines) "
                   "(default: none; --dataset imagenet needs it)")
    p.add_argument("--dataset-count", type=_positive_int, default=None,
                   help="use the first N samples (default: 1024 synthetic, all of ImageNet)")
    p.add_argument("--image-size", type=_positive_int, default=224, help="input height and width")
    p.add_argument("--weights", default="seeded",
                   help="seeded (random init, not trained), torchvision (pretrained), or a state-dict path")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed for seeded weights")
    batching = p.add_argument_group("batching")
    batching.add_argument("--max-batch", type=_positive_int, default=None, help=f"largest batch {_FROM_PROFILE}")
    batching.add_argument("--batch-timeout-us", type=_non_negative_int, default=None,
                          help=f"longest wait for a batch to fill, counted from its oldest sample (Server) "
                          f"{_FROM_PROFILE}")
    batching.add_argument("--in-flight", type=_positive_int, default=None,
                          help=f"batches in flight at once on CUDA (one stream each) {_FROM_PROFILE}")
    batching.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_const", const=False,
                          default=None, help="run eagerly instead of replaying CUDA graphs (default: off: graphs "
                          "on CUDA unless the GPU profile turns them off; never on the CPU)")
    batching.add_argument("--staging", choices=("device", "host"), default=None,
                          help="where the performance set lives on CUDA runs: GPU memory or pinned host memory "
                          "(default: the GPU profile's, else device)")
    batching.add_argument("--threads", type=_positive_int, default=None,
                          help="CPU threads for each backend instance (default: the GPU profile's, else the "
                          "runtime's own; with --instances on the CPU, an equal share of the physical cores)")
    batching.add_argument("--instances", type=_positive_int, default=None,
                          help="backend instances per device, each with its own network, staging and streams "
                          "(Triton's instance groups); batches go to the least loaded (default: the GPU profile's, "
                          "else 1)")
    batching.add_argument("--compile", choices=COMPILE_MODES, default=None,
                          help="TorchInductor compilation of the torch backend's network: none (eager), default "
                          "(BatchNorm folded, Inductor's default mode: tens of seconds the first time, seconds once "
                          "cached), max-autotune (benchmarks kernel choices: minutes the first time) "
                          f"(default: {COMPILE_DEFAULT_RULE})")
    batching.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                          help="keep NCHW memory layout (default: off: channels_last)")
    quant = p.add_argument_group("INT8 calibration and the accuracy gate")
    quant.add_argument("--calibration-algorithm", choices=CALIBRATION_ALGORITHMS, default=DEFAULT_ALGORITHM,
                       help="activation range: percentile, entropy (KL, as TensorRT), or max")
    quant.add_argument("--calibration-percentile", type=_positive_float, default=DEFAULT_PERCENTILE,
                       help="percentile of |activation| kept by --calibration-algorithm percentile")
    quant.add_argument("--calibration-count", type=_positive_int, default=500,
                       help="calibration images, chosen by seed outside LoadGen's performance set "
                            "(ImageNet; synthetic ones come from their own seed stream)")
    quant.add_argument("--calibration-seed", type=_non_negative_int, default=0,
                       help="picks the calibration images (the same seed as python -m calibration's)")
    quant.add_argument("--calibration-list", type=Path, default=None,
                       help="ImageNet image names to calibrate on (e.g. MLPerf's cal_image_list_option_1.txt) "
                       "(default: none: a seeded subset)")
    quant.add_argument("--int8-cpu-path", choices=INT8_CPU_PATHS, default=AUTO,
                       help="ONNX Runtime INT8 on the CPU: vnni (full-range weights, exact with VNNI/AMX only), "
                       "reduce-range (7-bit weights, exact on any CPU), u8u8 (full-range weights through "
                       "slower U8U8 kernels, x86), or auto (vnni where the CPU has VNNI or AMX, else reduce-range)")
    quant.add_argument("--skip-accuracy-gate", action="store_true",
                       help="benchmark fp16/bf16/int8 even if they fail the check against FP32 "
                       "(default: off: the gate runs)")
    quant.add_argument("--gate-samples", type=_positive_int, default=500,
                       help="held-out samples the accuracy gate compares against FP32")
    quant.add_argument("--gate-min-agreement", type=_positive_float, default=0.99,
                       help="without labels: the top-1 agreement with FP32 the gate requires")
    add_endpoint_flags(p)
    lg_group = p.add_argument_group("LoadGen overrides")
    lg_group.add_argument("--target-qps", type=_positive_float, default=None,
                          help=f"Server: scheduled load; Offline: expected throughput {_FROM_LAYERS}")
    lg_group.add_argument("--target-latency-ms", type=_positive_float, default=None,
                          help=f"Server: latency bound; SingleStream/MultiStream: expected latency {_FROM_LAYERS}")
    lg_group.add_argument("--min-duration-ms", type=_positive_int, default=None,
                          help=f"minimum run duration {_FROM_LAYERS}")
    lg_group.add_argument("--min-query-count", type=_positive_int, default=None,
                          help=f"minimum query count {_FROM_LAYERS}")
    out = p.add_argument_group("output")
    add_json_flag(out)
    add_verbose_flag(out)
    out.add_argument("-q", "--quiet", action="store_true",
                     help="the result screen and errors only, no warnings (default: off)")
    out.add_argument("--no-progress", dest="progress", action="store_false",
                     help="no progress bar (default: off: a bar while a run is timed, where stderr is a terminal)")
    return p


# Flags of the command line itself, not of the run it asks for.
_NOT_REQUEST = ("verbose", "quiet", "progress", "alternate_seeds", "json")


def request_from_args(args: argparse.Namespace) -> CliRequest:
    fields = {k: v for k, v in vars(args).items() if k not in _NOT_REQUEST}
    if args.alternate_seeds and fields["mode"] != "submission":
        raise ConfigError("--alternate-seeds needs --mode submission")
    if fields["mode"] == "submission":  # a sequence of runs (audit/); each run sets its own mode
        fields["mode"] = "performance"
    return CliRequest(**fields)


def command_for(request: CliRequest) -> str:
    """A `python harness/run.py ...` line that asks for `request` again: every value that
    differs from the parser's default, as its flag."""
    args = ["python", "harness/run.py"]
    for action in build_parser()._actions:
        if not action.option_strings or not hasattr(request, action.dest):
            continue
        value, flag = getattr(request, action.dest), action.option_strings[-1]
        if value == action.default:
            continue
        if action.nargs == 0:  # store_true / store_false / store_const
            if value == action.const:
                args.append(flag)
            continue
        args += [flag, str(value)]
    return shlex.join(args)
