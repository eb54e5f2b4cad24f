"""The calibration subset: which images the activation statistics are collected on.

Synthetic: images from their own seed stream, never from the performance set. LoadGen's
performance set is the whole synthetic dataset (1024 images by default), so a subset of
it could not be disjoint; `SyntheticDataset` draws each image from (seed, index) alone, so
a different seed gives a different, equally deterministic set of images.

ImageNet, seeded (the default): `count` entries of val_map.txt sampled with the seed from
those outside LoadGen's performance set, so no calibration image is ever timed. LoadGen
chooses that set itself (from the QSL's size, the performance sample count and
qsl_rng_seed); `PerformanceSetRule` names those three numbers as a run resolves them and
`sut.qsl.performance_sample_set` observes the set LoadGen picks from them. The set goes
into the subset's key, so a different performance set rebuilds the calibration. A folder
too small to hold both sets is an error, never a silent overlap.

ImageNet, listed: the images named in a calibration list (one file name per line, like
MLPerf's cal_image_list_option_1.txt), used as given: MLPerf's lists are validation
images and may be in the performance set; the list is the rule there. How many are is
computed and logged.

Either way, every run checks what LoadGen actually loaded against the calibration images
and records the overlap in measurements.json (runs/runner.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plumbing.files import file_sha256
from plumbing.errors import ConfigError, DatasetError, one_line
from sut.data import DEFAULT_SYNTHETIC_SEED, Dataset, SyntheticDataset

log = logging.getLogger(__name__)

DEFAULT_COUNT = 500  # MLPerf's ResNet50 calibration lists hold 500 images
# Added to the performance set's seed. Large and prime so it cannot collide with the small
# seeds people pick by hand, nor with the weights' batch-norm seeds (spec.seed + 1).
SYNTHETIC_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class CalibrationSubset:
    """Calibration images: `indices` into `dataset`, served as float32 NCHW batches.

    `key` identifies the selection exactly (it goes into the calibration cache's key);
    `description` is one line for logs and summaries.
    """

    description: str
    key: dict[str, Any]
    dataset: Dataset
    indices: tuple[int, ...]
    names: tuple[str, ...] = ()  # ImageNet file names, in `indices` order; empty for synthetic
    # ImageNet: how many of the images are in the probed performance set (0 for a seeded
    # subset, by construction); None where no performance set was given.
    performance_overlap: int | None = None

    @property
    def count(self) -> int:
        return len(self.indices)

    def load(self, positions: np.ndarray | slice) -> np.ndarray:
        """Images at `positions` of the subset (not dataset indices), float32 (k, 3, S, S)."""
        chosen = np.asarray(self.indices, dtype=np.int64)[positions]
        return self.dataset.load(chosen)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Every image once, in order, in batches of at most `batch_size`."""
        if batch_size < 1:
            raise ConfigError(f"calibration batch size must be positive, got {batch_size}")
        for start in range(0, self.count, batch_size):
            yield self.load(slice(start, start + batch_size))


@dataclass(frozen=True)
class PerformanceSet:
    """LoadGen's performance set over the first `total` dataset entries: the `count`
    samples LoadGen loads with `qsl_rng_seed`, as observed (sorted dataset indices)."""

    total: int
    count: int
    qsl_rng_seed: int
    indices: tuple[int, ...]

    @property
    def key(self) -> dict[str, Any]:
        """Goes into a seeded subset's cache key. The indices' hash as well as the numbers
        that chose them: a LoadGen that picks differently from the same numbers must
        rebuild the calibration too."""
        from sut.qsl import index_set_sha256

        return {"total": self.total, "count": self.count, "qsl_rng_seed": self.qsl_rng_seed,
                "indices_sha256": index_set_sha256(self.indices)}


@dataclass(frozen=True)
class PerformanceSetRule:
    """What chooses a run's performance set, as the run resolves it: LoadGen's qsl_rng_seed
    and performance_sample_count_override (0: the whole dataset, LoadGen's meaning), and
    the run's --dataset-count (its QSL holds the first N val_map.txt entries; None: all)."""

    qsl_rng_seed: int
    sample_count: int
    dataset_count: int | None = None

    def __post_init__(self) -> None:
        if self.sample_count < 0:
            raise ConfigError(f"performance sample count must be >= 0, got {self.sample_count}")
        if self.dataset_count is not None and self.dataset_count < 1:
            raise ConfigError(f"--dataset-count must be positive, got {self.dataset_count}")

    @classmethod
    def from_loadgen(cls, values: Mapping[str, Any], dataset_count: int | None = None) -> PerformanceSetRule:
        """The rule of a run whose resolved LoadGen settings are `values`; a setting the run
        leaves unset is LoadGen's own default, as in the run."""
        from sut.settings import loadgen_default

        seed = values.get("qsl_rng_seed")
        return cls(
            qsl_rng_seed=int(seed if seed is not None else loadgen_default("qsl_rng_seed")),
            sample_count=int(values.get("performance_sample_count_override") or 0),
            dataset_count=dataset_count,
        )

    def observe(self, entries: int, map_path: Path) -> PerformanceSet:
        """The set LoadGen picks over a val_map.txt (`map_path`) of `entries` lines."""
        from sut.qsl import performance_sample_set
        from sut.settings import performance_sample_count

        total = entries if self.dataset_count is None else self.dataset_count
        if total > entries:
            # The run itself would stop on this (ImageNetDataset); say it before calibrating.
            raise DatasetError(f"dataset count {total} exceeds the {entries} entries in {map_path}")
        count = performance_sample_count({"performance_sample_count_override": self.sample_count}, total)
        indices = performance_sample_set(total, count, self.qsl_rng_seed)
        return PerformanceSet(total, count, self.qsl_rng_seed, tuple(int(i) for i in indices))


def synthetic_subset(
    count: int = DEFAULT_COUNT,
    image_size: int = 224,
    dataset_seed: int = DEFAULT_SYNTHETIC_SEED,
    seed: int = 0,
) -> CalibrationSubset:
    """`count` synthetic images from the stream `dataset_seed + SYNTHETIC_SEED_OFFSET + seed`,
    disjoint from the performance set drawn with `dataset_seed`."""
    _check_count(count)
    if seed < 0:
        raise ConfigError(f"calibration seed must be >= 0, got {seed}")
    stream = dataset_seed + SYNTHETIC_SEED_OFFSET + seed
    dataset = SyntheticDataset(count=count, image_size=image_size, seed=stream)
    return CalibrationSubset(
        description=(
            f"{count} synthetic images (seed stream {stream}, disjoint from the performance "
            f"set's seed {dataset_seed})"
        ),
        key={"kind": "synthetic", "count": count, "seed": stream},
        dataset=dataset,
        indices=tuple(range(count)),
    )


def digits_subset(count: int = DEFAULT_COUNT, image_size: int = 224, seed: int = 0) -> CalibrationSubset:
    """The first `count` images of the digits train split (the accuracy gate's stand-in
    network is calibrated on it; the gate checks on the disjoint check split)."""
    from sut.digits import DigitsDataset

    _check_count(count)
    dataset = DigitsDataset(image_size=image_size, split="train", seed=seed)
    count = min(count, dataset.count)
    return CalibrationSubset(
        description=f"{count} digits train-split images (seed {seed}, disjoint from the check split)",
        key={"kind": "digits", "count": count, "seed": seed},
        dataset=dataset,
        indices=tuple(range(count)),
    )


def imagenet_subset(
    dataset_path: Path | str,
    image_size: int = 224,
    calibration_list: Path | str | None = None,
    count: int | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
    performance_set: PerformanceSetRule | None = None,
) -> CalibrationSubset:
    """Images of an ImageNet validation folder: those in `calibration_list`, else `count`
    (default 500) entries of val_map.txt sampled with `seed` from those outside the
    performance set `performance_set` chooses (None: from all entries).

    With a list, `count` (if given) takes its first `count` names, and the list's overlap
    with the performance set is logged, not refused.
    """
    from sut.imagenet import VAL_MAP, ImageNetDataset

    dataset = ImageNetDataset(dataset_path, image_size=image_size, cache_dir=cache_dir)
    map_path = dataset.path / VAL_MAP
    files = _map_files(map_path)
    excluded = performance_set.observe(dataset.count, map_path) if performance_set is not None else None
    if calibration_list is not None:
        return _listed(dataset, files, Path(calibration_list).expanduser(), count, excluded)

    count = DEFAULT_COUNT if count is None else count
    _check_count(count)
    if seed < 0:
        raise ConfigError(f"calibration seed must be >= 0, got {seed}")
    if count > dataset.count:
        raise DatasetError(
            f"calibration count {count} exceeds the {dataset.count} entries in {map_path}"
        )
    candidates = np.arange(dataset.count, dtype=np.int64)
    key: dict[str, Any] = {
        "kind": "imagenet-seeded",
        "count": count,
        "seed": seed,
        "val_map_sha256": _sha256(map_path),
    }
    description = f"{count} ImageNet images sampled from {VAL_MAP} with seed {seed}"
    if excluded is not None:
        candidates = np.setdiff1d(candidates, np.asarray(excluded.indices, dtype=np.int64))
        _check_room(count, len(candidates), excluded, map_path)
        key["performance_set"] = excluded.key
        description += (
            f", outside LoadGen's performance set ({excluded.count} of the first {excluded.total})"
        )
    # Sorted so the crops are read in val_map order; the set, not the order, is chosen.
    indices = np.sort(np.random.default_rng(seed).choice(candidates, count, replace=False))
    return CalibrationSubset(
        description=description,
        key=key,
        dataset=dataset,
        indices=tuple(int(i) for i in indices),
        names=tuple(files[i] for i in indices),
        performance_overlap=0 if excluded is not None else None,
    )


def _check_room(count: int, available: int, excluded: PerformanceSet, map_path: Path) -> None:
    """A seeded subset must fit beside the performance set: overlapping would time the very
    images the INT8 ranges were fitted to, so too small a folder is an error."""
    if count <= available:
        return
    remedy = (f"use --calibration-count {available} or fewer, or --calibration-list FILE"
              if available else "use --calibration-list FILE, or a folder with more images")
    raise DatasetError(
        f"{map_path} is too small for a calibration subset disjoint from LoadGen's performance "
        f"set: the performance set takes {excluded.count} of the {excluded.total} samples a run "
        f"loads from it, leaving {available} for the {count} calibration images; {remedy}"
    )


def _listed(
    dataset: Dataset, files: list[str], list_path: Path, count: int | None,
    excluded: PerformanceSet | None,
) -> CalibrationSubset:
    names = _read_list(list_path)
    position = {name: index for index, name in enumerate(files)}
    missing = [name for name in names if name not in position]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(names)} names in calibration list {list_path} are not "
            f"in val_map.txt, first: {missing[0]!r}"
        )
    if count is not None:
        _check_count(count)
        if count > len(names):
            raise DatasetError(
                f"calibration count {count} exceeds the {len(names)} names in {list_path}"
            )
        names = names[:count]
    indices = tuple(position[name] for name in names)
    overlap = None
    if excluded is not None:
        overlap = len(set(indices).intersection(excluded.indices))
        # MLPerf's lists are validation images and may be timed too: the list is the rule,
        # so this is reported, not refused.
        report = log.warning if overlap else log.info
        report("calibration list %s: %d of its %d images are in LoadGen's performance set "
               "(%d of the first %d samples, qsl_rng_seed %d); used as given",
               list_path.name, overlap, len(indices), excluded.count, excluded.total,
               excluded.qsl_rng_seed)
    return CalibrationSubset(
        description=f"{len(names)} ImageNet images listed in {list_path.name}",
        key={
            "kind": "imagenet-list",
            "count": len(names),
            "list_file": list_path.name,
            "list_sha256": _sha256(list_path),
        },
        dataset=dataset,
        indices=indices,
        names=tuple(names),
        performance_overlap=overlap,
    )


def _read_list(list_path: Path) -> list[str]:
    try:
        text = list_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"calibration list {list_path}: cannot read ({one_line(exc)})") from exc
    names: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(text.split("\n"), start=1):
        name = line.strip()
        if not name:
            continue
        if len(name.split()) != 1:
            raise DatasetError(
                f"{list_path}:{lineno}: expected one image file name per line, got {name[:60]!r}"
            )
        if name in seen:
            # Calibrating twice on one image would weight it double, silently.
            raise DatasetError(f"{list_path}:{lineno}: {name!r} is listed twice")
        seen.add(name)
        names.append(name)
    if not names:
        raise DatasetError(f"calibration list {list_path} names no images")
    return names


def _map_files(map_path: Path) -> list[str]:
    # The file column of val_map.txt, in the order (and with the validation) that
    # ImageNetDataset uses for its indices.
    from sut.imagenet import _parse_map

    return [file for file, _ in _parse_map(map_path)]


def _check_count(count: int) -> None:
    if count < 1:
        raise ConfigError(f"calibration count must be positive, got {count}")


def _sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({one_line(exc)})") from exc
