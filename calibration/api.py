"""`calibrate`: the one call the runner (and the CLI) make to get an INT8 calibration.

It picks the subset, exports (or reuses) the FP32 ONNX graph, and returns the calibration
cache for this model, weights, dataset, subset and algorithm, building it only when no
matching cache exists.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plumbing.files import file_sha256
from calibration.algorithms import DEFAULT_ALGORITHM, DEFAULT_PERCENTILE
from calibration.cache import CalibrationCache, load_or_build
from calibration.rules import check_calibration_list
from calibration.collect import ALGORITHMS, DEFAULT_BATCH_SIZE, CalibrationStats, collect_statistics
from calibration.subset import (
    DEFAULT_COUNT,
    CalibrationSubset,
    PerformanceSetRule,
    digits_subset,
    imagenet_subset,
    synthetic_subset,
)
from plumbing.errors import BackendError, ConfigError
from sut.backends.base import MODELS, ModelSpec
from sut.data import DEFAULT_SYNTHETIC_SEED

log = logging.getLogger(__name__)

DATASETS = ("synthetic", "imagenet", "digits")


@dataclass(frozen=True)
class CalibrationConfig:
    """How to calibrate. Validates itself, before any model or image is loaded."""

    dataset: str = "synthetic"
    dataset_path: Path | None = None  # ImageNet folder with val_map.txt
    calibration_list: Path | None = None  # ImageNet: file names, one a line
    count: int | None = None  # default: 500, or the whole calibration list
    seed: int = 0  # picks the subset (ImageNet sample, synthetic seed stream)
    dataset_seed: int = DEFAULT_SYNTHETIC_SEED  # the synthetic performance set's seed
    algorithm: str = DEFAULT_ALGORITHM
    percentile: float = DEFAULT_PERCENTILE  # used by algorithm "percentile" only
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int | None = None  # ONNX Runtime intra-op threads; None: its default
    # ImageNet: the run's LoadGen performance set, which a seeded subset stays out of (and
    # a list's overlap with it is logged). None: the set a default run of the model uses
    # (runs.config.performance_set_settings), so `python -m calibration` builds the
    # cache a default run reuses.
    performance_set: PerformanceSetRule | None = None

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(
                f"unknown calibration algorithm {self.algorithm!r}; choose from {', '.join(ALGORITHMS)}"
            )
        if not 0.0 < self.percentile <= 100.0:
            raise ConfigError(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.count is not None and self.count < 1:
            raise ConfigError(f"--calibration-count must be positive, got {self.count}")
        if self.seed < 0:
            raise ConfigError(f"--calibration-seed must be >= 0, got {self.seed}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be positive, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be positive, got {self.threads}")
        if self.dataset == "imagenet" and self.dataset_path is None:
            raise ConfigError("--dataset imagenet needs --dataset-path DIR (a folder with val_map.txt)")
        check_calibration_list(self.dataset, self.calibration_list)
        if self.dataset == "synthetic" and self.dataset_path is not None:
            raise ConfigError("--dataset-path is for --dataset imagenet")
        if self.dataset != "imagenet" and self.performance_set is not None:
            # Synthetic calibration images come from their own seed stream; digits from
            # their own split: no LoadGen set to stay out of.
            raise ConfigError(f"a performance-set rule applies to --dataset imagenet, not {self.dataset}")


@dataclass(frozen=True)
class CalibrationResult:
    path: Path  # the cache file
    cache: CalibrationCache
    subset: str  # one-line description of the calibration images
    reused: bool  # True when a matching cache was found, False when it was built now
    # Dataset indices of the calibration images (ImageNet: val_map.txt positions; synthetic:
    # positions in its own seed stream), so a run can check them against what LoadGen loads.
    indices: tuple[int, ...] = ()


def calibrate(
    spec: ModelSpec,
    dataset_kind: str = "synthetic",
    *,
    dataset_path: Path | str | None = None,
    calibration_list: Path | str | None = None,
    count: int | None = None,
    seed: int = 0,
    algorithm: str = DEFAULT_ALGORITHM,
    percentile: float = DEFAULT_PERCENTILE,
    output: Path | str | None = None,
    cache_dir: Path | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    performance_set: PerformanceSetRule | None = None,
) -> CalibrationResult:
    """Calibration of `spec`'s FP32 graph (its precision is ignored), from the cache at
    `output` (default: `default_cache_path`) when every key field matches, else built now.

    Raises ConfigError, DatasetError, BackendError or OutputError.
    """
    config = CalibrationConfig(
        dataset=dataset_kind,
        dataset_path=Path(dataset_path).expanduser() if dataset_path is not None else None,
        calibration_list=Path(calibration_list).expanduser() if calibration_list is not None else None,
        count=count,
        seed=seed,
        algorithm=algorithm,
        percentile=percentile,
        batch_size=batch_size,
        threads=threads,
        performance_set=performance_set,
    )
    return calibrate_config(spec, config, output=output, cache_dir=cache_dir)


def calibrate_config(
    spec: ModelSpec,
    config: CalibrationConfig,
    output: Path | str | None = None,
    cache_dir: Path | str | None = None,
) -> CalibrationResult:
    """`calibrate` with a ready CalibrationConfig."""
    from sut.onnx_export import export_onnx, weights_identity

    _check_spec(spec)
    # The subset first: a bad list or folder fails in a second, before any export.
    subset = make_subset(spec, config, cache_dir)
    path = Path(output).expanduser() if output is not None else default_cache_path(spec, config, cache_dir)
    onnx_file = export_onnx(spec, cache_dir)
    key = cache_key(spec, config, subset, weights_identity(spec), _file_sha256(onnx_file))

    built = False

    def build() -> CalibrationStats:
        nonlocal built
        built = True
        return collect_statistics(
            onnx_file, subset, config.algorithm, config.percentile, config.batch_size, config.threads
        )

    cache = load_or_build(key, build, path, info=_provenance(config, subset, onnx_file))
    return CalibrationResult(path=path, cache=cache, subset=subset.description, reused=not built,
                             indices=subset.indices)


def make_subset(
    spec: ModelSpec, config: CalibrationConfig, cache_dir: Path | str | None = None
) -> CalibrationSubset:
    """The calibration images `config` asks for, at `spec`'s image size. ImageNet crops are
    cached under `cache_dir` (default $DEEPGAP_CACHE) like the benchmark's own."""
    if config.dataset == "imagenet":
        if config.dataset_path is None:  # CalibrationConfig already refuses this
            raise ConfigError("--dataset imagenet needs --dataset-path DIR")
        return imagenet_subset(
            config.dataset_path,
            image_size=spec.image_size,
            calibration_list=config.calibration_list,
            count=config.count,
            seed=config.seed,
            cache_dir=Path(cache_dir).expanduser() if cache_dir is not None else None,
            performance_set=config.performance_set or default_performance_set(spec),
        )
    if config.dataset == "digits":
        return digits_subset(count=config.count or DEFAULT_COUNT, image_size=spec.image_size, seed=config.seed)
    return synthetic_subset(
        count=config.count or DEFAULT_COUNT,
        image_size=spec.image_size,
        dataset_seed=config.dataset_seed,
        seed=config.seed,
    )


def default_performance_set(spec: ModelSpec) -> PerformanceSetRule:
    """The performance set of a default run of `spec`'s model (no user.conf, no flags): the
    layers a run resolves (runs.config) reduce to mlperf.conf's rules under the default run
    profile, for any model; tests/calibration/test_subset.py holds the two together."""
    from scenarios.profiles import DEFAULT_RUN_PROFILE, load_run_profile
    from sut.settings import DEFAULT_SCENARIO, PERFORMANCE_SET_SETTINGS, mlperf_rules

    layers = {**mlperf_rules(DEFAULT_SCENARIO), **load_run_profile(DEFAULT_RUN_PROFILE).settings_for(DEFAULT_SCENARIO)}
    values = {k: v for k, v in layers.items() if v is not None}
    return PerformanceSetRule.from_loadgen({k: values[k] for k in PERFORMANCE_SET_SETTINGS if k in values})


def cache_key(
    spec: ModelSpec,
    config: CalibrationConfig,
    subset: CalibrationSubset,
    weights: str,
    onnx_sha256: str,
) -> dict[str, Any]:
    """Every field the calibrated values depend on; a change in any one rebuilds."""
    if config.dataset in ("imagenet", "digits"):
        dataset: dict[str, Any] = {"name": config.dataset}  # the subset key names the images
    else:
        dataset = {"name": "synthetic", "seed": config.dataset_seed}
    return {
        "model": spec.name,
        "num_classes": spec.num_classes,
        "weights": weights,
        "image_size": spec.image_size,
        "dataset": dataset,
        "subset": subset.key,
        "algorithm": config.algorithm,
        "percentile": config.percentile if config.algorithm == "percentile" else None,
        "onnx_sha256": onnx_sha256,
    }


def default_cache_path(
    spec: ModelSpec, config: CalibrationConfig, cache_dir: Path | str | None = None
) -> Path:
    """<cache>/calibration/<model>-<S>px-<weights>-<dataset>-<algorithm>.json.

    One file per model, weights, dataset and algorithm: a changed subset or ONNX export
    rebuilds it in place (and the log says which field changed) rather than piling up.
    """
    from sut.onnx_export import cache_root, weights_identity

    algorithm = config.algorithm
    if algorithm == "percentile":
        algorithm += f"{config.percentile:g}"
    name = f"{spec.name}-{spec.image_size}px-{weights_identity(spec)}-{config.dataset}-{algorithm}.json"
    return cache_root(cache_dir) / "calibration" / name


def _provenance(config: CalibrationConfig, subset: CalibrationSubset, onnx_file: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"subset": subset.description, "onnx_file": str(onnx_file)}
    if config.dataset_path is not None:
        info["dataset_path"] = str(config.dataset_path)
    if config.calibration_list is not None:
        info["calibration_list"] = str(config.calibration_list)
    for package in ("onnxruntime", "onnx", "numpy", "torch"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "unknown"
    return info


def _check_spec(spec: ModelSpec) -> None:
    if spec.name not in MODELS:
        raise ConfigError(f"unknown model {spec.name!r}; choose from {', '.join(MODELS)}")
    if spec.image_size < 32:
        raise ConfigError(f"--image-size must be at least 32 (ResNet downsamples 32x), got {spec.image_size}")


def _file_sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as exc:
        raise BackendError(f"{path}: cannot read the ONNX export ({exc})") from exc
