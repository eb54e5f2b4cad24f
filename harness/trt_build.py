"""Build (or find in the cache) the TensorRT engine a run with these flags would use, and
say how long it took: `python -m harness.trt_build --backend tensorrt --precision int8`.

It takes harness/run.py's flags and does what a run does before it is timed, up to the
engine: the run's configuration, the INT8 calibration (int8), and the backend's load,
which builds the engine on first use and caches it with a JSON sidecar
(sut/trt_engine.py: build_seconds, engine_bytes). Nothing is timed through LoadGen and no
result is written. The screen is one line; --json writes the engine's description, its
sidecar and the seconds of each part (deepgap.summary/1, command "build-engine").
`deepgap verify-tensorrt` runs it once for fp16 and once for int8.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script (python harness/trt_build.py): the project root on the path
    import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from plumbing import logs
from plumbing.argtypes import guarded
from plumbing.errors import OK_EXIT, ConfigError
from plumbing.json_summary import SummaryTarget
from runs.run_flags import build_parser as run_parser
from runs.run_flags import request_from_args

COMMAND = "build-engine"


def build_parser() -> argparse.ArgumentParser:
    parser = run_parser()
    parser.prog = "python -m harness.trt_build"
    parser.description = ("Build, or find in the cache, the TensorRT engine a run with these flags would use "
                          "(harness/run.py's flags; --backend tensorrt), and time it. Nothing is run through LoadGen.")
    return parser


def read_sidecar(engine_path: str | None) -> dict[str, Any]:
    """The engine's JSON sidecar (written when it was built); {} where there is none."""
    if not engine_path:
        return {}
    try:
        data = json.loads(Path(engine_path).with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def build_engine(args: argparse.Namespace) -> dict[str, Any]:
    """Calibrate (int8) and load the backend as a run would; what it built, and how long."""
    from runs.config import model_spec, resolve
    from runs.gating import calibrate_for
    from runs.runner import load_backend

    request = request_from_args(args)
    if request.backend != "tensorrt":
        raise ConfigError("harness.trt_build builds TensorRT engines: give --backend tensorrt")
    if request.mode != "performance":
        raise ConfigError("harness.trt_build builds the engine of a performance run: leave --mode out")
    config = resolve(request)
    extra: dict[str, Any] = {}
    started = time.perf_counter()
    if request.precision == "int8":
        kind = "imagenet" if request.dataset == "imagenet" else "synthetic"
        extra["calibration"] = calibrate_for(config, model_spec(config), kind).cache
    calibrated = time.perf_counter()
    backend = load_backend(config, extra)
    try:
        info = backend.describe()
    finally:
        backend.close()
    loaded = time.perf_counter()
    sidecar = read_sidecar(info.get("engine_path"))
    return {"precision": request.precision, "model": request.model, "max_batch": int(config.knobs["max_batch"]),
            "engine_cache": info.get("engine_cache"), "engine_path": info.get("engine_path"),
            "build_seconds": sidecar.get("build_seconds"), "engine_bytes": sidecar.get("engine_bytes"),
            "calibration_seconds": round(calibrated - started, 2) if request.precision == "int8" else None,
            "load_seconds": round(loaded - calibrated, 2), "backend": info, "sidecar": sidecar}


def main(argv: Sequence[str] | None = None) -> int:
    summary = SummaryTarget(COMMAND)

    def body() -> int:
        args = build_parser().parse_args(argv)
        summary.target = args.json
        logs.setup(verbose=args.verbose, quiet=args.quiet)
        built = build_engine(args)
        seconds = built["build_seconds"]
        took = f"built in {seconds} s"
        if built["engine_cache"] == "hit":
            took = f"found in the cache ({took} earlier)"
        print(f"{built['model']} {built['precision']} engine, batches up to {built['max_batch']}: {took}; "
              f"{built['engine_path']}", file=summary.screen)
        summary.write(OK_EXIT, built)
        return OK_EXIT

    return guarded("deepgap", body, summary=summary)


if __name__ == "__main__":
    sys.exit(main())
