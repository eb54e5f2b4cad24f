"""The calibration subset: which images the activation statistics are collected on.

Synthetic: images from their own seed stream, never from the performance set. LoadGen's
performance set is the whole synthetic dataset (1024 images by default), so a subset of
it could not be disjoint; `SyntheticDataset` draws each image from (seed, index) alone, so
a different seed gives a different, equally deterministic set of images.

ImageNet: images named in a calibration list (one file name per line, like MLPerf's
cal_image_list_option_1.txt), or a seeded sample of val_map.txt. As in MLPerf, these are
validation images, so they may also be in the performance set: the list is the rule, not
disjointness.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.argtypes import file_sha256
from harness.errors import ConfigError, DatasetError
from sut.data import DEFAULT_SYNTHETIC_SEED, Dataset, SyntheticDataset

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
) -> CalibrationSubset:
    """Images of an ImageNet validation folder: those in `calibration_list`, else `count`
    (default 500) entries of val_map.txt sampled with `seed`.

    With a list, `count` (if given) takes its first `count` names.
    """
    from sut.imagenet import VAL_MAP, ImageNetDataset

    dataset = ImageNetDataset(dataset_path, image_size=image_size, cache_dir=cache_dir)
    files = _map_files(dataset.path / VAL_MAP)
    if calibration_list is not None:
        return _listed(dataset, files, Path(calibration_list).expanduser(), count)

    count = DEFAULT_COUNT if count is None else count
    _check_count(count)
    if seed < 0:
        raise ConfigError(f"calibration seed must be >= 0, got {seed}")
    if count > dataset.count:
        raise DatasetError(
            f"calibration count {count} exceeds the {dataset.count} entries in "
            f"{dataset.path / VAL_MAP}"
        )
    # Sorted so the crops are read in val_map order; the set, not the order, is chosen.
    indices = np.sort(np.random.default_rng(seed).choice(dataset.count, count, replace=False))
    return CalibrationSubset(
        description=f"{count} ImageNet images sampled from {VAL_MAP} with seed {seed}",
        key={
            "kind": "imagenet-seeded",
            "count": count,
            "seed": seed,
            "val_map_sha256": _sha256(dataset.path / VAL_MAP),
        },
        dataset=dataset,
        indices=tuple(int(i) for i in indices),
        names=tuple(files[i] for i in indices),
    )


def _listed(
    dataset: Dataset, files: list[str], list_path: Path, count: int | None
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
    return CalibrationSubset(
        description=f"{len(names)} ImageNet images listed in {list_path.name}",
        key={
            "kind": "imagenet-list",
            "count": len(names),
            "list_file": list_path.name,
            "list_sha256": _sha256(list_path),
        },
        dataset=dataset,
        indices=tuple(position[name] for name in names),
        names=tuple(names),
    )


def _read_list(list_path: Path) -> list[str]:
    try:
        text = list_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"calibration list {list_path}: cannot read ({_one_line(exc)})") from exc
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
        raise DatasetError(f"{path}: cannot read ({_one_line(exc)})") from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
