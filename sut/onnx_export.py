"""Export the torchvision network to ONNX once and keep it in an on-disk cache.

The file is fp32 with a dynamic batch dimension (input "input" of shape (batch, 3, S, S),
output "logits"), so one export serves every batch size and every ONNX Runtime provider.
It is keyed by everything that changes its contents: model, image size, class count,
weights identity, and a short hash of the exporter toolchain and of this module's format.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import tempfile
import warnings
from pathlib import Path

from harness.argtypes import file_sha256
from harness.errors import BackendError, ConfigError
from sut.backends.base import ModelSpec

log = logging.getLogger(__name__)

# Bump when anything that shapes the exported file changes (export arguments, input/output
# names, how sut.models builds seeded weights): older cached files then stop matching.
EXPORT_FORMAT_VERSION = 1
OPSET_VERSION = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# Tracing with batch 1 can let size-1 broadcasting specialise a shape; 2 keeps it symbolic.
_TRACE_BATCH = 2


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """The deepgap cache folder: `cache_dir`, else $DEEPGAP_CACHE, else ~/.cache/deepgap."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DEEPGAP_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "deepgap"


def weights_identity(spec: ModelSpec) -> str:
    """A file-name-safe token that changes whenever the weights do."""
    if spec.weights == "seeded":
        return f"seed{spec.seed}"
    if spec.weights == "torchvision":
        return "torchvision"
    return "sha256-" + _file_sha256(Path(spec.weights))[:16]


def toolchain_tag() -> str:
    """Short hash of what produced the file, so a torch upgrade re-exports."""
    parts = [
        f"torch={_package_version('torch')}",
        # torchvision's initialisers define the seeded weights, so it is part of the key.
        f"torchvision={_package_version('torchvision')}",
        f"opset={OPSET_VERSION}",
        f"format={EXPORT_FORMAT_VERSION}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:10]


def onnx_path(spec: ModelSpec, cache_dir: Path | str | None = None) -> Path:
    """Where the export of `spec` lives (whether or not it exists yet)."""
    name = (
        f"{spec.name}-{spec.image_size}px-{spec.num_classes}c-"
        f"{weights_identity(spec)}-{toolchain_tag()}.onnx"
    )
    return cache_root(cache_dir) / "onnx" / name


def export_onnx(spec: ModelSpec, cache_dir: Path | str | None = None) -> Path:
    """Path to the fp32 ONNX export of `spec`, exporting it first if it is not cached.

    Raises BackendError when the export toolchain is missing or the export fails, and
    ConfigError for unusable weights.
    """
    target = onnx_path(spec, cache_dir)
    if target.is_file():
        log.info("reusing cached ONNX export %s", target)
        return target

    if importlib.util.find_spec("onnx") is None:
        # torch's TorchScript exporter serialises through the onnx package.
        raise BackendError("exporting to ONNX needs the onnx package: pip install onnx")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError(f"cannot create the ONNX cache folder {target.parent}: {exc}") from exc

    log.info(
        "exporting %s (%d px, weights %s) to ONNX opset %d: %s",
        spec.name,
        spec.image_size,
        weights_identity(spec),
        OPSET_VERSION,
        target,
    )
    # A unique temporary name in the same folder: concurrent exports never see each
    # other's partial files, and os.replace is atomic within one filesystem.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _export_to(spec, tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    log.info("ONNX export written: %s (%.1f MB)", target, target.stat().st_size / 1e6)
    return target


def _export_to(spec: ModelSpec, path: Path) -> None:
    import torch

    from sut.models import build_model

    model = build_model(spec)  # fp32, eval mode, on the CPU
    example = torch.zeros(_TRACE_BATCH, 3, spec.image_size, spec.image_size, dtype=torch.float32)
    kwargs: dict[str, object] = {
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "opset_version": OPSET_VERSION,
        "dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        "do_constant_folding": True,
    }
    # torch >= 2.9 defaults to the dynamo exporter, which needs onnxscript; the TorchScript
    # exporter needs only onnx and handles these CNNs fully. Older torch has no parameter
    # and is TorchScript-only.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # Choosing the legacy exporter is deliberate; its deprecation notice is noise.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (example,), str(path), **kwargs)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackendError(
            f"ONNX export of {spec.name} failed with torch {torch.__version__}: {first}"
        ) from exc


def _package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        pass
    # Source builds and vendored copies carry no distribution metadata.
    try:
        return str(importlib.import_module(package).__version__)
    except (ImportError, AttributeError):
        return "unknown"


def _file_sha256(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(
            f"--weights {path}: no such file (use 'seeded', 'torchvision' or a path)"
        )
    return file_sha256(path)
