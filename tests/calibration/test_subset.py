"""Calibration subsets: deterministic, disjoint from the synthetic performance set, and
ImageNet calibration lists checked against val_map.txt."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calibration.subset import (
    SYNTHETIC_SEED_OFFSET,
    imagenet_subset,
    synthetic_subset,
)
from harness.errors import ConfigError, DatasetError
from sut.data import DEFAULT_SYNTHETIC_SEED, SyntheticDataset
from sut.imagenet import VAL_MAP, ImageNetDataset

S = 32
FILES = [f"ILSVRC2012_val_{i:08d}.png" for i in range(1, 7)]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """A tiny ImageNet-like folder: six noise images of different sizes and a val_map."""
    root = tmp_path / "imagenet"
    root.mkdir()
    for index, name in enumerate(FILES):
        pixels = np.random.default_rng(index).integers(0, 256, (36 + index, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name, format="PNG")
    (root / VAL_MAP).write_text("".join(f"{name} {index}\n" for index, name in enumerate(FILES)))
    return root


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _write_list(path: Path, names: list[str]) -> Path:
    path.write_text("\n".join(names) + "\n")
    return path


# -- synthetic ----------------------------------------------------------------------------


def test_synthetic_subset_is_deterministic() -> None:
    first = synthetic_subset(count=6, image_size=S)
    again = synthetic_subset(count=6, image_size=S)
    np.testing.assert_array_equal(first.load(slice(None)), again.load(slice(None)))
    assert first.key == {
        "kind": "synthetic", "count": 6, "seed": DEFAULT_SYNTHETIC_SEED + SYNTHETIC_SEED_OFFSET,
    }
    assert first.count == 6 and "6 synthetic images" in first.description
    other = synthetic_subset(count=6, image_size=S, seed=1)
    assert other.key["seed"] == first.key["seed"] + 1
    assert not np.array_equal(other.load(slice(None)), first.load(slice(None)))


def test_synthetic_subset_is_disjoint_from_the_performance_set() -> None:
    # LoadGen's performance set is the whole default synthetic dataset.
    performance = SyntheticDataset(image_size=S)
    seen = {performance.load(np.array([i])).tobytes() for i in range(performance.count)}
    subset = synthetic_subset(count=16, image_size=S)
    images = subset.load(slice(None))
    assert images.shape == (16, 3, S, S) and images.dtype == np.float32
    assert not any(image.tobytes() in seen for image in images[:, None])


def test_batches_cover_the_subset_in_order() -> None:
    subset = synthetic_subset(count=11, image_size=S)
    batches = list(subset.batches(4))
    assert [len(b) for b in batches] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(batches), subset.load(slice(None)))
    with pytest.raises(ConfigError):
        next(subset.batches(0))


@pytest.mark.parametrize("kwargs", [{"count": 0}, {"seed": -1}])
def test_synthetic_subset_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        synthetic_subset(image_size=S, **kwargs)


# -- ImageNet: calibration list -----------------------------------------------------------


def test_calibration_list_selects_named_images(folder: Path, cache: Path, tmp_path: Path) -> None:
    listing = _write_list(tmp_path / "cal_list.txt", [FILES[4], "", FILES[1]])
    subset = imagenet_subset(folder, image_size=S, calibration_list=listing, cache_dir=cache)
    assert subset.names == (FILES[4], FILES[1])
    assert subset.indices == (4, 1)
    assert subset.key == {
        "kind": "imagenet-list",
        "count": 2,
        "list_file": "cal_list.txt",
        "list_sha256": hashlib.sha256(listing.read_bytes()).hexdigest(),
    }
    dataset = ImageNetDataset(folder, image_size=S, cache_dir=cache)
    np.testing.assert_array_equal(subset.load(slice(None)), dataset.load(np.array([4, 1])))


def test_calibration_list_names_missing_images(folder: Path, cache: Path, tmp_path: Path) -> None:
    listing = _write_list(tmp_path / "cal.txt", [FILES[0], "nope_1.JPEG", "nope_2.JPEG"])
    with pytest.raises(DatasetError) as info:
        imagenet_subset(folder, image_size=S, calibration_list=listing, cache_dir=cache)
    message = str(info.value)
    assert "2 of 3" in message and "'nope_1.JPEG'" in message and "cal.txt" in message
    assert "\n" not in message


@pytest.mark.parametrize("lines, words", [
    ([], ["names no images"]),
    ([FILES[0], FILES[0]], ["listed twice", ":2:"]),
    ([f"{FILES[0]} 65"], ["one image file name per line", ":1:"]),
])
def test_malformed_calibration_list(folder: Path, cache: Path, tmp_path: Path,
                                    lines: list[str], words: list[str]) -> None:
    listing = _write_list(tmp_path / "cal.txt", lines)
    with pytest.raises(DatasetError) as info:
        imagenet_subset(folder, image_size=S, calibration_list=listing, cache_dir=cache)
    for word in words:
        assert word in str(info.value)


def test_unreadable_calibration_list(folder: Path, cache: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        imagenet_subset(folder, image_size=S, calibration_list=tmp_path / "absent.txt", cache_dir=cache)


def test_count_takes_the_first_listed_names(folder: Path, cache: Path, tmp_path: Path) -> None:
    listing = _write_list(tmp_path / "cal.txt", FILES[::-1])
    subset = imagenet_subset(folder, image_size=S, calibration_list=listing, count=2, cache_dir=cache)
    assert subset.names == (FILES[5], FILES[4])
    with pytest.raises(DatasetError, match="exceeds the 6 names"):
        imagenet_subset(folder, image_size=S, calibration_list=listing, count=7, cache_dir=cache)


# -- ImageNet: seeded sample --------------------------------------------------------------


def test_seeded_imagenet_subset(folder: Path, cache: Path) -> None:
    first = imagenet_subset(folder, image_size=S, count=3, seed=0, cache_dir=cache)
    again = imagenet_subset(folder, image_size=S, count=3, seed=0, cache_dir=cache)
    assert first.indices == again.indices and len(set(first.indices)) == 3
    assert list(first.indices) == sorted(first.indices)
    assert first.names == tuple(FILES[i] for i in first.indices)
    assert first.key["kind"] == "imagenet-seeded" and first.key["seed"] == 0
    assert first.key["val_map_sha256"] == hashlib.sha256((folder / VAL_MAP).read_bytes()).hexdigest()
    others = {imagenet_subset(folder, image_size=S, count=3, seed=s, cache_dir=cache).indices
              for s in range(1, 6)}
    assert others - {first.indices}, "the seed should change the selection"


def test_seeded_imagenet_subset_larger_than_the_folder(folder: Path, cache: Path) -> None:
    with pytest.raises(DatasetError, match="calibration count 7 exceeds the 6 entries"):
        imagenet_subset(folder, image_size=S, count=7, cache_dir=cache)


def test_missing_imagenet_folder(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        imagenet_subset(tmp_path / "absent", image_size=S, cache_dir=cache)
