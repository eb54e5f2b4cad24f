"""Triton model repository from a study: python -m harness.export_triton --output REPO ...

Writes REPO/<name>/config.pbtxt and REPO/<name>/1/model.onnx (serving/triton_repository.py)
for `tritonserver --model-repository REPO`: the ONNX export deepgap's onnxruntime backend
runs, dynamic batching whose max_batch_size and preferred batch size come from a study's
measured Offline knee and whose queue delay is the batch timeout its Server SLO search met
the bound with (`--study`), or from the flags. Each value's source is written at the top of
config.pbtxt and printed.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script (python harness/export_triton.py): the project root on the path
    import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import sys
from pathlib import Path
from typing import Sequence

from plumbing.argtypes import DefaultsHelpFormatter, OneLineParser, guarded, int_at_least
from plumbing.errors import ConfigError, exit_code_epilog
from sut.backends.base import MODELS

KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m harness.export_triton", formatter_class=DefaultsHelpFormatter,
                      epilog=exit_code_epilog(), description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--output", type=Path, required=True, metavar="REPO", help="the model repository folder")
    p.add_argument("--study", type=Path, default=None,
                   help="a saved study: batching from its Offline knee and Server search (default: none: the flags)")
    p.add_argument("--model", choices=MODELS, default="resnet50", help="network")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp16: ONNX Runtime's TensorRT execution provider in FP16 (GPU instances only)")
    p.add_argument("--study-backend", default=None, help="the study's backend to read (default: its only one)")
    p.add_argument("--knee", choices=("knee_90", "knee_95"), default="knee_90",
                   help="the study's knee: the smallest batch within 10%% (5%%) of the Offline peak")
    p.add_argument("--max-batch-size", type=int_at_least(1), default=None, help="overrides the study's (default: the study's, else 64)")
    p.add_argument("--preferred-batch-size", type=int_at_least(1), nargs="+", default=None,
                   help="overrides the study's (default: the study's, else none)")
    p.add_argument("--max-queue-delay-us", type=int_at_least(0), default=None,
                   help="overrides the study's (default: the study's, else 2000)")
    p.add_argument("--instances", type=int_at_least(1), default=1, help="instance_group count per device")
    p.add_argument("--kind", choices=sorted(KINDS), default="gpu", help="instance_group kind")
    p.add_argument("--image-size", type=int_at_least(32), default=224, help="input height and width")
    p.add_argument("--weights", default="seeded", help="seeded, torchvision, or a state-dict path")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed for seeded weights")
    p.add_argument("--name", default=None, help="the model's name in the repository (default: --model)")
    p.add_argument("--overwrite", action="store_true", help="replace the model folder if it exists (default: off)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        from serving.triton_repository import DEFAULT_QUEUE_DELAY_US, triton_settings_from_study, write_triton_repository

        args = build_parser().parse_args(argv)
        max_batch, preferred, delay, notes = 64, [], DEFAULT_QUEUE_DELAY_US, ["batching: the flags and defaults"]
        if args.study is not None:
            found = triton_settings_from_study(args.study, args.model, args.precision, args.study_backend, args.knee)
            max_batch, preferred, delay = found.max_batch_size, list(found.preferred_batch_sizes), found.max_queue_delay_us
            notes = [f"from study {args.study}", *found.notes()]
        overrides = {"max_batch_size": args.max_batch_size, "preferred_batch_size": args.preferred_batch_size,
                     "max_queue_delay_microseconds": args.max_queue_delay_us}
        for key, value in overrides.items():
            if value is not None:
                notes.append(f"{key}: {value} from --{key.replace('_', '-').replace('microseconds', 'us')}")
        max_batch = args.max_batch_size or max_batch
        preferred = args.preferred_batch_size if args.preferred_batch_size is not None else preferred
        delay = args.max_queue_delay_us if args.max_queue_delay_us is not None else delay
        if preferred and max(preferred) > max_batch:
            raise ConfigError(f"a preferred batch size ({max(preferred)}) above max_batch_size {max_batch}")
        model_dir = write_triton_repository(args.output, args.model, args.precision, args.image_size, max_batch,
                                            preferred, delay, args.instances, KINDS[args.kind], name=args.name or "",
                                            weights=args.weights, seed=args.seed, notes=notes,
                                            overwrite=args.overwrite)
        print(f"wrote {model_dir / 'config.pbtxt'} and {model_dir / '1' / 'model.onnx'}: max_batch_size {max_batch}, "
              f"preferred {preferred or 'none'}, max_queue_delay_microseconds {delay}, {args.instances} x "
              f"{KINDS[args.kind]}")
        for note in notes:
            print(f"  {note}")
        print(f"serve it with: tritonserver --model-repository {args.output}")
        return 0

    return guarded("export-triton", body)


if __name__ == "__main__":
    sys.exit(main())
