"""TensorRT planning without TensorRT: engine cache keys and paths, optimization-profile
shapes, and the binding plan that checks an engine's inputs and outputs.

Everything here is plain Python on plain data, so it is unit-tested on machines where
TensorRT cannot be installed. `sut.backends.tensorrt_backend` turns the engine's own
description into `TensorDesc` values and lets this module decide whether it fits.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plumbing.errors import BackendError, ConfigError
from plumbing.files import file_sha256  # noqa: F401  (the engine cache keys on the ONNX file's hash)
from sut.onnx_export import INPUT_NAME, OUTPUT_NAME, cache_root

# Bump when anything that shapes a built engine changes outside the key's fields (builder
# settings chosen in code, the network-creation flags): older cached engines stop matching.
ENGINE_FORMAT_VERSION = 1
# Hex digits kept from the sha256 (96 bits: collisions are not a concern for a cache).
KEY_LENGTH = 24

SUPPORTED_PRECISIONS = ("fp32", "fp16", "int8")

# Which ONNX graph TensorRT parses for each precision. Strongly typed networks take their
# precision from the graph itself (TensorRT 11 has no FP16/INT8 builder flags).
FP32_EXPORT = "fp32-export"  # sut.onnx_export.export_onnx, as is
FP16_GRAPH = "fp16-graph"  # sut.onnx_fp16.make_fp16(fp32_path, out_path)
INT8_QDQ_GRAPH = "int8-qdq-graph"  # sut.onnx_precision.make_qdq_int8(fp32, amax, scales, out)
_GRAPH_FOR_PRECISION = {"fp32": FP32_EXPORT, "fp16": FP16_GRAPH, "int8": INT8_QDQ_GRAPH}

# Element sizes of the data types an engine's IO may carry (numpy-style names).
DTYPE_SIZES = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int64": 8,
    "int32": 4,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}
# Input and output types this harness can feed and read (fp16 graphs may keep fp32 IO).
INPUT_DTYPES = ("float32", "float16")
OUTPUT_DTYPES = ("float32", "float16")


def onnx_for_precision(precision: str) -> str:
    """The kind of ONNX graph a precision builds from: FP32_EXPORT, FP16_GRAPH or
    INT8_QDQ_GRAPH. Anything else is a BackendError naming the supported precisions."""
    try:
        return _GRAPH_FOR_PRECISION[precision]
    except KeyError:
        raise BackendError(
            f"tensorrt backend does not run {precision}; it supports "
            f"{', '.join(SUPPORTED_PRECISIONS)} (use --backend torch for bf16)"
        ) from None


def profile_shapes(
    image_size: int, min_batch: int, opt_batch: int, max_batch: int, channels: int = 3
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int], tuple[int, int, int, int]]:
    """(min, opt, max) NCHW shapes of the optimization profile for the input "input"."""
    for label, value in (
        ("image size", image_size),
        ("channels", channels),
        ("min batch", min_batch),
        ("opt batch", opt_batch),
        ("max batch", max_batch),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"TensorRT profile: {label} must be an integer, got {value!r}")
        if value < 1:
            raise ConfigError(f"TensorRT profile: {label} must be at least 1, got {value}")
    if not min_batch <= opt_batch <= max_batch:
        raise ConfigError(
            "TensorRT profile needs 1 <= min batch <= opt batch <= max batch; got "
            f"min {min_batch}, opt {opt_batch}, max {max_batch}"
        )
    return (
        (min_batch, channels, image_size, image_size),
        (opt_batch, channels, image_size, image_size),
        (max_batch, channels, image_size, image_size),
    )


def engine_cache_key(
    gpu_name: str,
    compute_capability: tuple[int, int],
    trt_version: str,
    model: str,
    precision: str,
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    image_size: int,
    onnx_sha256: str,
    calibration_hash: str | None,
    *,
    settings: Mapping[str, Any] | None = None,
) -> str:
    """A short sha256 hex digest of everything a built engine depends on.

    Engines are specific to the GPU model and compute capability, the TensorRT version,
    the graph (its file hash covers the weights and, for int8, the scales), the profile
    and any builder settings passed in `settings` (JSON-serialisable values).
    """
    if len(tuple(compute_capability)) != 2:
        raise ConfigError(f"compute capability must be (major, minor), got {compute_capability!r}")
    fields = {
        "format": ENGINE_FORMAT_VERSION,
        "gpu": gpu_name,
        "cc": [int(part) for part in compute_capability],
        "trt": str(trt_version),
        "model": model,
        "precision": precision,
        "batch": [int(min_batch), int(opt_batch), int(max_batch)],
        "image_size": int(image_size),
        "onnx_sha256": onnx_sha256,
        "calibration": calibration_hash,
        "settings": dict(settings or {}),
    }
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def engine_stem(
    model: str,
    image_size: int,
    precision: str,
    max_batch: int,
    gpu_name: str,
    compute_capability: tuple[int, int],
    trt_version: str,
) -> str:
    """Human-readable part of an engine's file name, e.g.
    resnet50-224px-int8-b256-nvidia-h100-80gb-hbm3-sm90-trt10.3.0."""
    major, minor = compute_capability
    return (
        f"{model}-{image_size}px-{precision}-b{max_batch}-{_slug(gpu_name)}"
        f"-sm{major}{minor}-trt{trt_version}"
    )


def engine_cache_path(cache_dir: Path | str | None, key: str, stem: str) -> Path:
    """<cache>/tensorrt/<stem>-<key>.engine, where <cache> is `cache_dir`, else
    $DEEPGAP_CACHE, else ~/.cache/deepgap."""
    if not re.fullmatch(r"[0-9a-f]+", key or ""):
        raise ConfigError(f"engine cache key must be lower-case hex, got {key!r}")
    return cache_root(cache_dir) / "tensorrt" / f"{_slug(stem)}-{key}.engine"


def timing_cache_path(cache_dir: Path | str | None, gpu: str, capability: tuple[int, ...], trt_version: str) -> Path:
    """<cache>/tensorrt/timing-<gpu>-sm<cc>-trt<version>.cache, beside the engines: a timing
    cache is valid for one GPU model and TensorRT version only."""
    token = _slug(f"{gpu}-sm{capability[0]}{capability[1]}-trt{trt_version}")
    return cache_root(cache_dir) / "tensorrt" / f"timing-{token}.cache"


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", text.strip().lower()).strip("-.")
    return slug or "unknown"


@dataclass(frozen=True)
class TensorDesc:
    """One engine IO tensor as plain data: mode "input" or "output", a numpy-style dtype
    name ("float32", "float16", ...) and the shape with -1 for dynamic dimensions."""

    name: str
    mode: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class BindingPlan:
    """The checked IO of an image classifier engine: one input "input" (N, C, S, S) with
    a dynamic batch, one output "logits" (N, num_classes)."""

    input: TensorDesc
    output: TensorDesc
    num_classes: int
    image_size: int
    channels: int = 3
    max_batch: int | None = None

    @classmethod
    def from_descriptions(
        cls,
        tensors: Iterable[TensorDesc],
        num_classes: int,
        image_size: int,
        channels: int = 3,
        max_batch: int | None = None,
    ) -> "BindingPlan":
        """Validate the engine's IO; any mismatch is a one-line BackendError."""
        tensors = [
            TensorDesc(t.name, t.mode, t.dtype, tuple(int(d) for d in t.shape)) for t in tensors
        ]
        odd = [t for t in tensors if t.mode not in ("input", "output")]
        if odd:
            raise BackendError(
                f"engine tensor {odd[0].name!r} has IO mode {odd[0].mode!r}; expected input or output"
            )
        inputs = [t for t in tensors if t.mode == "input"]
        outputs = [t for t in tensors if t.mode == "output"]
        hint = "rebuild the engine from sut.onnx_export's graph (delete the cached .engine)"
        if [t.name for t in inputs] != [INPUT_NAME]:
            raise BackendError(
                f"engine inputs are {[t.name for t in inputs]}; expected exactly one input "
                f"{INPUT_NAME!r} ({hint})"
            )
        if [t.name for t in outputs] != [OUTPUT_NAME]:
            raise BackendError(
                f"engine outputs are {[t.name for t in outputs]}; expected exactly one output "
                f"{OUTPUT_NAME!r} ({hint})"
            )
        (inp,), (out,) = inputs, outputs
        if inp.dtype not in INPUT_DTYPES:
            raise BackendError(
                f"engine input {inp.name!r} is {inp.dtype}; this harness feeds "
                f"{' or '.join(INPUT_DTYPES)}"
            )
        if out.dtype not in OUTPUT_DTYPES:
            raise BackendError(
                f"engine output {out.name!r} is {out.dtype}; this harness reads "
                f"{' or '.join(OUTPUT_DTYPES)}"
            )
        if len(inp.shape) != 4:
            raise BackendError(
                f"engine input {inp.name!r} has shape {list(inp.shape)}; expected 4 dimensions (N, C, H, W)"
            )
        if inp.shape[0] != -1:
            raise BackendError(
                f"engine input {inp.name!r} has a static batch of {inp.shape[0]} (shape "
                f"{list(inp.shape)}); expected a dynamic batch (-1)"
            )
        expected = (channels, image_size, image_size)
        if any(got not in (-1, want) for got, want in zip(inp.shape[1:], expected)):
            raise BackendError(
                f"engine input {inp.name!r} has shape {list(inp.shape)}; expected "
                f"[-1, {channels}, {image_size}, {image_size}]"
            )
        if len(out.shape) != 2 or out.shape[0] != -1:
            raise BackendError(
                f"engine output {out.name!r} has shape {list(out.shape)}; expected [-1, {num_classes}]"
            )
        if out.shape[1] != num_classes:
            raise BackendError(
                f"engine output {out.name!r} has {out.shape[1]} classes; the model has {num_classes}"
            )
        if max_batch is not None and max_batch < 1:
            raise BackendError(f"engine profile allows a max batch of {max_batch}")
        return cls(inp, out, num_classes, image_size, channels, max_batch)

    def _check_batch(self, batch: int) -> None:
        if batch < 1 or (self.max_batch is not None and batch > self.max_batch):
            limit = f"1..{self.max_batch}" if self.max_batch is not None else "at least 1"
            raise BackendError(f"batch of {batch} is outside the engine's profile ({limit})")

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        self._check_batch(batch)
        return (batch, self.channels, self.image_size, self.image_size)

    def output_shape(self, batch: int) -> tuple[int, int]:
        self._check_batch(batch)
        return (batch, self.num_classes)

    def input_nbytes(self, batch: int) -> int:
        return _volume(self.input_shape(batch)) * DTYPE_SIZES[self.input.dtype]

    def output_nbytes(self, batch: int) -> int:
        return _volume(self.output_shape(batch)) * DTYPE_SIZES[self.output.dtype]


def _volume(shape: Iterable[int]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total
