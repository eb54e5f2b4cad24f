"""Export the torchvision network to ONNX once and keep it in an on-disk cache.

The file is fp32 with a dynamic batch dimension (input "input" of shape (batch, 3, S, S),
output "logits"), so one export serves every batch size and every ONNX Runtime provider.
It is keyed by everything that changes its contents: model, image size, class count,
weights identity, and a short hash of the exporter toolchain and of this module's format.
Its sha256 is recorded beside it when it is written (`NAME.onnx.sha256`) and checked
before every reuse: a truncated, damaged or replaced file is exported again, with a
warning naming it, instead of failing in the runtime or benchmarking another network.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import warnings
from pathlib import Path

from plumbing.errors import BackendError, ConfigError
from plumbing.files import atomic_path, digest_matches, digest_path, file_sha256, write_digest
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
    damaged = _damaged(target)
    if target.is_file() and damaged is None:
        log.info("reusing cached ONNX export %s", target)
        return target
    if damaged is not None:
        log.warning("cached ONNX export %s is not the file deepgap wrote (%s); exporting it again",
                    target, damaged)

    if importlib.util.find_spec("onnx") is None:
        # torch's TorchScript exporter serialises through the onnx package.
        also = f"; or delete the damaged {target} and its {digest_path(target).name}" if damaged else ""
        raise BackendError(f"exporting to ONNX needs the onnx package: pip install onnx{also}")

    log.info(
        "exporting %s (%d px, weights %s) to ONNX opset %d: %s",
        spec.name,
        spec.image_size,
        weights_identity(spec),
        OPSET_VERSION,
        target,
    )
    try:
        # A unique temporary name in the same folder: concurrent exports never see each
        # other's partial files, and the final rename is atomic within one filesystem.
        with atomic_path(target) as tmp:
            _export_to(spec, tmp)
        write_digest(target)
    except OSError as exc:
        raise BackendError(f"cannot write the ONNX export {target}: {exc.strerror or exc}; delete what is "
                           "there or point DEEPGAP_CACHE at a writable folder") from None
    log.info("ONNX export written: %s (%.1f MB)", target, target.stat().st_size / 1e6)
    return target


def _damaged(target: Path) -> str | None:
    """Why the cached file at `target` cannot be trusted, or None (absent, or intact)."""
    if not target.exists():
        return None
    if not target.is_file():
        return "not a file"
    matches, why = digest_matches(target)
    return None if matches else why


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
