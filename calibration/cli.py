"""`python -m calibration`: build (or reuse) an INT8 calibration cache and print its path.

Every DeepgapError, argparse's included, is one line on stderr ("calibration: error: ...")
and exit status 2; no tracebacks for anything a user can cause.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from calibration.api import (
    DATASETS,
    DEFAULT_ALGORITHM,
    DEFAULT_PERCENTILE,
    CalibrationConfig,
    CalibrationResult,
    calibrate_config,
)
from calibration.collect import ALGORITHMS, DEFAULT_BATCH_SIZE
from calibration.subset import DEFAULT_COUNT
from plumbing.argtypes import OneLineParser, float_in, int_at_least
from sut.backends.base import MODELS, ModelSpec

PROG = "calibration"


_Parser = OneLineParser
_int_at_least = int_at_least


_percentile = float_in(0.0, 100.0)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=f"python -m {PROG}",
        description="INT8 calibration: activation ranges and per-channel weight scales of the "
        "FP32 ONNX graph, cached as JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", choices=MODELS, default="resnet50", help="network")
    p.add_argument("--image-size", type=_int_at_least(32), default=224, help="input height and width")
    p.add_argument("--weights", default="seeded",
                   help="seeded (random init, not trained), torchvision (pretrained), or a state-dict path")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="seed for seeded weights")
    p.add_argument("--dataset", choices=DATASETS, default="synthetic",
                   help="synthetic: seeded images disjoint from the performance set; imagenet: a validation "
                        "folder (a seeded subset stays outside a default run's LoadGen performance set)")
    p.add_argument("--dataset-path", type=Path, default=None,
                   help="ImageNet validation folder with val_map.txt")
    p.add_argument("--calibration-list", type=Path, default=None,
                   help="ImageNet image names, one a line (like MLPerf's cal_image_list_option_1.txt)")
    p.add_argument("--calibration-count", type=_int_at_least(1), default=None,
                   help=f"images to calibrate on (default: {DEFAULT_COUNT}, or the whole list)")
    p.add_argument("--calibration-seed", type=_int_at_least(0), default=0,
                   help="picks the images: an ImageNet sample or the synthetic seed stream")
    p.add_argument("--algorithm", choices=ALGORITHMS, default=DEFAULT_ALGORITHM,
                   help="activation range: max |x|, a percentile of |x|, or TensorRT's entropy (KL)")
    p.add_argument("--percentile", type=_percentile, default=DEFAULT_PERCENTILE,
                   help="percentile of |x| kept (algorithm percentile)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=DEFAULT_BATCH_SIZE,
                   help="images per ONNX Runtime run (memory grows with it)")
    p.add_argument("--threads", type=_int_at_least(1), default=None, help="ONNX Runtime CPU threads")
    p.add_argument("--output", type=Path, default=None,
                   help="cache file (default: $DEEPGAP_CACHE or ~/.cache/deepgap, under calibration/)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    return p


def summary(result: CalibrationResult) -> str:
    """One line: what was calibrated, on what, and the cache's hash."""
    cache = result.cache
    key = cache.key
    algorithm = key["algorithm"] + (f" {key['percentile']:g}%" if key.get("percentile") is not None else "")
    clipped = sum(1 for r in cache.activations.values() if r.amax < r.max)
    state = "reused" if result.reused else f"built in {cache.info.get('seconds', 0):.1f} s"
    return (
        f"{key['model']} {key['image_size']}px weights {key['weights']}: {algorithm} over "
        f"{result.subset}; {len(cache.activations)} activation ranges ({clipped} clipped below "
        f"max), {len(cache.weights)} weight tensors; {state}; hash {cache.cache_hash[:12]}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    from plumbing.argtypes import guarded

    def body() -> int:
        args = build_parser().parse_args(argv)
        _setup_logging(args.verbose, args.quiet)
        config = CalibrationConfig(
            dataset=args.dataset,
            dataset_path=args.dataset_path,
            calibration_list=args.calibration_list,
            count=args.calibration_count,
            seed=args.calibration_seed,
            algorithm=args.algorithm,
            percentile=args.percentile,
            batch_size=args.batch_size,
            threads=args.threads,
        )
        spec = ModelSpec(args.model, "int8", args.weights, args.seed, args.image_size)
        result = calibrate_config(spec, config, output=args.output)
        print(result.path)
        print(summary(result))
        return 0

    return guarded(PROG, body)


def _setup_logging(verbose: bool, quiet: bool) -> None:
    from plumbing import logs  # deepgap's one logging setup; calibration's own progress lines stay on screen

    logs.setup(verbose=verbose, quiet=quiet, shown=("calibration",))
