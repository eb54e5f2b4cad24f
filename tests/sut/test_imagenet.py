"""ImageNetDataset on a tiny generated ImageNet-like folder."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from PIL import Image

from plumbing.errors import DatasetError
from sut.data import IMAGENET_MEAN, IMAGENET_STD, normalize_uint8_hwc
from sut.imagenet import CACHE_ENV, VAL_MAP, ImageNetDataset
from sut.preprocess import preprocess_image, resize_short_side, scaled_size

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GREEN = (0, 255, 0)
S = 32  # small crops keep the tests fast; the geometry is the same as at 224


def _normalised(rgb: tuple[int, int, int]) -> np.ndarray:
    return (np.array(rgb, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def _to_uint8(chw: np.ndarray) -> np.ndarray:
    """Undo normalisation: float32 (3, S, S) -> uint8 (S, S, 3)."""
    hwc = chw.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.rint(hwc * 255.0).astype(np.uint8)


def _noise(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _wide_split(width: int = 600, height: int = 200) -> np.ndarray:
    """Green outer thirds; centre third red on the left, blue on the right.

    After resize (short side 8S/7) and centre crop only the centre third survives, so any
    green in the result means the crop is off-centre or the image was squashed.
    """
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, :] = GREEN
    third = width // 3
    pixels[:, third : width // 2] = RED
    pixels[:, width // 2 : 2 * third] = BLUE
    return pixels


# (file, label, pixels, save kwargs). Sizes and aspect ratios all differ.
_IMAGES: list[tuple[str, int, np.ndarray | Image.Image, dict]] = [
    ("ILSVRC2012_val_00000001.JPEG", 65, _noise(500, 375, 1), {"format": "JPEG"}),
    ("ILSVRC2012_val_00000002.JPEG", 970, _noise(333, 500, 2), {"format": "JPEG"}),
    ("ILSVRC2012_val_00000003.png", 0, _wide_split(), {"format": "PNG"}),
    ("ILSVRC2012_val_00000004.png", 7, _wide_split().transpose(1, 0, 2), {"format": "PNG"}),
    ("gray_00000005.JPEG", 999, _noise(40, 30, 5)[:, :, 0], {"format": "JPEG"}),  # upscaled
    ("sub/ILSVRC2012_val_00000006.png", 3, _noise(S, S, 6), {"format": "PNG"}),  # no resize
]
LABELS = [label for _, label, _, _ in _IMAGES]


def _write_map(folder: Path, lines: list[str]) -> None:
    (folder / VAL_MAP).write_text("\n".join(lines) + "\n")


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    for file, _, pixels, kwargs in _IMAGES:
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / file, **kwargs)
    # Blank lines anywhere are skipped.
    lines = [f"{file} {label}" for file, label, _, _ in _IMAGES]
    _write_map(root, ["", *lines[:3], "   ", *lines[3:]])
    return root


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _dataset(folder: Path, cache: Path, **kwargs) -> ImageNetDataset:
    return ImageNetDataset(folder, image_size=S, cache_dir=cache, **kwargs)


# -- protocol ----------------------------------------------------------------------------


def test_shapes_dtype_and_labels(folder: Path, cache: Path) -> None:
    ds = _dataset(folder, cache)
    assert ds.name == "imagenet"
    assert ds.count == len(_IMAGES)
    assert ds.image_size == S
    batch = ds.load(np.arange(ds.count))
    assert batch.shape == (len(_IMAGES), 3, S, S)
    assert batch.dtype == np.float32
    assert batch.flags["C_CONTIGUOUS"]
    labels = ds.labels()
    assert labels.dtype == np.int64
    assert labels.tolist() == LABELS


def test_load_order_and_repeats(folder: Path, cache: Path) -> None:
    ds = _dataset(folder, cache)
    every = ds.load(np.arange(ds.count))
    picked = ds.load(np.array([4, 0, 4]))
    np.testing.assert_array_equal(picked, every[[4, 0, 4]])


def test_load_empty_and_out_of_range(folder: Path, cache: Path) -> None:
    ds = _dataset(folder, cache)
    assert ds.load(np.array([], dtype=np.int64)).shape == (0, 3, S, S)
    with pytest.raises(IndexError):
        ds.load(np.array([ds.count]))
    with pytest.raises(IndexError):
        ds.load(np.array([-1]))


def test_count_limits_to_first_entries(folder: Path, cache: Path) -> None:
    ds = _dataset(folder, cache, count=2)
    assert ds.count == 2
    assert ds.labels().tolist() == LABELS[:2]
    assert ds.load(np.arange(2)).shape == (2, 3, S, S)


def test_describe(folder: Path, cache: Path) -> None:
    ds = _dataset(folder, cache)
    info = ds.describe()
    assert info == {
        "name": "imagenet",
        "path": str(folder.resolve()),
        "count": len(_IMAGES),
        "image_size": S,
        "labels": True,
        "cache_dir": str(ds.cache_dir),
    }
    assert Path(info["cache_dir"]).parent == cache


# -- preprocessing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "image_size", "expected"),
    [
        # Expected values from the reference's resize_with_aspectratio.
        (500, 375, 224, (341, 256)),
        (375, 500, 224, (256, 341)),
        (500, 500, 224, (256, 256)),
        (640, 427, 224, (383, 256)),
        (500, 333, 299, (512, 341)),
    ],
)
def test_scaled_size_matches_reference(width, height, image_size, expected) -> None:
    assert scaled_size(width, height, image_size) == expected


def test_resize_short_side() -> None:
    assert resize_short_side(224) == 256
    for size in range(1, 600):
        assert resize_short_side(size) == int(100.0 * size / 87.5)


def _assert_colour(crop: np.ndarray, rows: slice, cols: slice, rgb: tuple[int, int, int]) -> None:
    """Every pixel of crop[:, rows, cols] (normalised CHW) is `rgb`, within resize blur."""
    region = crop[:, rows, cols].reshape(3, -1)
    expected = _normalised(rgb)[:, None]
    assert np.abs(region - expected).max() < 0.05, (rgb, region.min(1), region.max(1))


def test_center_crop_wide_image(folder: Path, cache: Path) -> None:
    crop = _dataset(folder, cache).load(np.array([2]))[0]
    # Centre third of the source is red on the left half, blue on the right half.
    _assert_colour(crop, slice(None), slice(0, S // 2 - 1), RED)
    _assert_colour(crop, slice(None), slice(S // 2 + 1, S), BLUE)
    green = _normalised(GREEN)[1]
    assert crop[1].max() < green - 1.0  # no trace of the green outer thirds


def test_center_crop_tall_image(folder: Path, cache: Path) -> None:
    crop = _dataset(folder, cache).load(np.array([3]))[0]
    _assert_colour(crop, slice(0, S // 2 - 1), slice(None), RED)
    _assert_colour(crop, slice(S // 2 + 1, S), slice(None), BLUE)


def test_crop_offsets_match_reference(tmp_path: Path) -> None:
    # Noise makes any shift of the crop, or a filter other than BOX, visible; compare with
    # a literal port of the reference's resize_with_aspectratio + center_crop geometry.
    width, height = 251, 72  # halved to 125x36: odd horizontal margin
    path = tmp_path / "noise.png"
    Image.fromarray(_noise(width, height, 7)).save(path)
    crop = preprocess_image(path, S)

    new_w, new_h = scaled_size(width, height, S)
    resized = np.asarray(
        Image.open(path).convert("RGB").resize((new_w, new_h), Image.Resampling.BOX)
    )
    left, right = int((new_w - S) / 2), int((new_w + S) / 2)
    top, bottom = int((new_h - S) / 2), int((new_h + S) / 2)
    np.testing.assert_array_equal(crop, resized[top:bottom, left:right])


def test_grayscale_becomes_rgb(folder: Path, cache: Path) -> None:
    crop = _to_uint8(_dataset(folder, cache).load(np.array([4]))[0])
    # Allow 1 for float round-trip through normalisation.
    assert np.abs(crop[..., 0].astype(int) - crop[..., 1]).max() <= 1
    assert np.abs(crop[..., 0].astype(int) - crop[..., 2]).max() <= 1


def test_small_image_is_upscaled_bilinear(folder: Path, cache: Path) -> None:
    # 32x32 is enlarged to 36x36 (short side 8S/7) before the centre crop.
    crop = _to_uint8(_dataset(folder, cache).load(np.array([5]))[0])
    source = Image.open(folder / _IMAGES[5][0]).convert("RGB")
    side = resize_short_side(S)
    expected = np.asarray(source.resize((side, side), Image.Resampling.BILINEAR))
    offset = (side - S) // 2
    np.testing.assert_array_equal(crop, expected[offset : offset + S, offset : offset + S])


def test_normalisation_matches_cached_uint8(folder: Path, cache: Path) -> None:
    ds = _dataset(folder, cache)
    batch = ds.load(np.arange(ds.count))
    for index in range(ds.count):
        cached = np.load(ds.cache_file(index))
        assert cached.dtype == np.uint8 and cached.shape == (S, S, 3)
        expected = ((cached.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD)
        np.testing.assert_array_equal(batch[index], expected.transpose(2, 0, 1))


# -- caching -----------------------------------------------------------------------------


def _forbid_image_open(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("image decoded although it was cached")

    monkeypatch.setattr(PIL.Image, "open", refuse)


def test_cache_reused_without_decoding(folder: Path, cache: Path, monkeypatch) -> None:
    first = _dataset(folder, cache)
    first.preprocess_all()
    expected = first.load(np.arange(first.count))
    _forbid_image_open(monkeypatch)
    second = _dataset(folder, cache)
    np.testing.assert_array_equal(second.load(np.arange(second.count)), expected)
    second.preprocess_all()  # nothing left to do, so nothing is opened


def test_load_fills_cache(folder: Path, cache: Path, monkeypatch) -> None:
    _dataset(folder, cache).load(np.array([1]))
    _forbid_image_open(monkeypatch)
    _dataset(folder, cache).load(np.array([1]))


def test_cache_files_written_atomically(folder: Path, cache: Path) -> None:
    ds = _dataset(folder, cache)
    ds.preprocess_all()
    names = sorted(p.name for p in ds.cache_dir.iterdir())
    assert len(names) == ds.count
    assert all(name.endswith(".npy") for name in names)  # no temporaries left behind


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_corrupt_cache_file_regenerated(folder: Path, cache: Path, damage: str, caplog) -> None:
    ds = _dataset(folder, cache)
    ds.preprocess_all()
    expected = ds.load(np.arange(ds.count))
    target = ds.cache_file(2)
    if damage == "garbage":
        target.write_bytes(b"not a numpy file at all")
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:200])
    else:
        np.save(target, np.zeros((4, 4, 3), dtype=np.uint8))
    with caplog.at_level(logging.WARNING, logger="sut.imagenet"):
        again = _dataset(folder, cache).load(np.arange(ds.count))
    np.testing.assert_array_equal(again, expected)
    assert "regenerating" in caplog.text
    assert np.load(target).shape == (S, S, 3)  # repaired on disk


def test_preprocess_all_repairs_truncated_file(folder: Path, cache: Path, monkeypatch) -> None:
    ds = _dataset(folder, cache)
    ds.preprocess_all()
    target = ds.cache_file(0)
    target.write_bytes(target.read_bytes()[:100])
    ds.preprocess_all()
    assert np.load(target).shape == (S, S, 3)


def test_preprocess_all_logs_progress(folder: Path, cache: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="sut.imagenet"):
        _dataset(folder, cache).preprocess_all(progress=True, workers=2)
    assert f"{len(_IMAGES)} of {len(_IMAGES)} images need preprocessing" in caplog.text
    assert f"preprocessed {len(_IMAGES)}/{len(_IMAGES)}" in caplog.text


def test_cache_key_depends_on_path_and_size(folder: Path, cache: Path, tmp_path: Path) -> None:
    base = _dataset(folder, cache).cache_dir
    assert _dataset(folder, cache, count=2).cache_dir == base  # count shares the cache
    assert ImageNetDataset(folder, image_size=S + 8, cache_dir=cache).cache_dir != base
    copy = shutil.copytree(folder, tmp_path / "copy")
    assert _dataset(copy, cache).cache_dir != base


def test_an_image_replaced_in_place_is_preprocessed_again(folder: Path, cache: Path, caplog) -> None:
    """The cache is keyed by the image file's size and mtime, not only by the folder's path:
    new pixels under an old name are decoded again, never served from the old crop."""
    ds = _dataset(folder, cache)
    ds.preprocess_all()
    old_crop, old_file = ds.load(np.array([0])), ds.cache_file(0)
    target = folder / _IMAGES[0][0]
    before = target.stat().st_mtime_ns
    Image.fromarray(_noise(480, 360, 99)).save(target, format="JPEG")
    os.utime(target, ns=(before + 10**9, before + 10**9))  # as a copy made a second later
    with caplog.at_level(logging.INFO, logger="sut.imagenet"):
        again = _dataset(folder, cache)
        again.preprocess_all(progress=True)
    assert f"1 of {len(_IMAGES)} images need preprocessing" in caplog.text
    fresh = normalize_uint8_hwc(preprocess_image(target, S)[None])
    np.testing.assert_array_equal(again.load(np.array([0])), fresh)
    assert not np.array_equal(fresh, old_crop)
    assert again.cache_file(0) != old_file and not old_file.exists()  # the old crop is gone
    assert len(list(again.cache_dir.iterdir())) == len(_IMAGES)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_cache_files_follow_the_umask(folder: Path, cache: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        ds = _dataset(folder, cache)
        ds.load(np.array([0]))
    finally:
        os.umask(old)
    assert stat.S_IMODE(ds.cache_file(0).stat().st_mode) == 0o666 & ~umask


def test_cache_location_env_and_default(folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "from_env"))
    assert ImageNetDataset(folder, image_size=S).cache_dir.parent == tmp_path / "from_env"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    default = ImageNetDataset(folder, image_size=S).cache_dir.parent
    assert default == tmp_path / "home" / ".cache" / "deepgap"


def test_unwritable_cache_is_dataset_error(folder: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file_not_dir"
    blocker.write_text("")
    ds = ImageNetDataset(folder, image_size=S, cache_dir=blocker)
    with pytest.raises(DatasetError, match="cannot write cache file"):
        ds.load(np.array([0]))


# -- errors ------------------------------------------------------------------------------


def _error(folder: Path, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        ImageNetDataset(folder, image_size=S, cache_dir=folder.parent / "cache", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_folder(tmp_path: Path) -> None:
    assert "does not exist" in _error(tmp_path / "nowhere")


def test_folder_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")
    assert "not a directory" in _error(file)


def test_missing_val_map(folder: Path) -> None:
    (folder / VAL_MAP).unlink()
    assert VAL_MAP in _error(folder)


def test_empty_val_map(folder: Path) -> None:
    _write_map(folder, ["", "  "])
    assert "no entries" in _error(folder)


def test_malformed_line_names_file_and_line(folder: Path) -> None:
    _write_map(folder, ["", f"{_IMAGES[0][0]} 1", "just_a_file.JPEG"])
    message = _error(folder)
    assert f"{VAL_MAP}:3: expected 'file label', got 'just_a_file.JPEG'" in message


def test_too_many_fields(folder: Path) -> None:
    _write_map(folder, [f"{_IMAGES[0][0]} 1 2"])
    assert f"{VAL_MAP}:1: expected 'file label'" in _error(folder)


@pytest.mark.parametrize("label", ["-1", "cat", "1.5", "+3"])
def test_bad_label(folder: Path, label: str) -> None:
    _write_map(folder, [f"{_IMAGES[0][0]} 1", f"{_IMAGES[1][0]} {label}"])
    message = _error(folder)
    assert f"{VAL_MAP}:2: label must be a non-negative integer, got '{label}'" in message


@pytest.mark.parametrize("label", ["1000", "12345"])
def test_label_outside_imagenet_classes(folder: Path, label: str) -> None:
    _write_map(folder, [f"{_IMAGES[0][0]} 999", f"{_IMAGES[1][0]} {label}"])
    assert f"{VAL_MAP}:2: label '{label}' is not an ImageNet class (0..999)" in _error(folder)


def test_an_image_listed_twice(folder: Path) -> None:
    _write_map(folder, [f"{_IMAGES[0][0]} 1", "", f"{_IMAGES[1][0]} 2", f"{_IMAGES[0][0]} 1"])
    assert f"{VAL_MAP}:4: '{_IMAGES[0][0]}' is listed again (first on line 1)" in _error(folder)


def test_missing_images_named_and_counted(folder: Path) -> None:
    (folder / _IMAGES[1][0]).unlink()
    (folder / _IMAGES[3][0]).unlink()
    message = _error(folder)
    assert "2 of 6 images" in message
    assert f"first: {folder.resolve() / _IMAGES[1][0]}" in message


def test_missing_image_beyond_count_is_ignored(folder: Path, cache: Path) -> None:
    (folder / _IMAGES[5][0]).unlink()
    assert _dataset(folder, cache, count=5).count == 5


@pytest.mark.parametrize("count", [7, 0])
def test_bad_count(folder: Path, count: int) -> None:
    message = _error(folder, count=count)
    assert str(count) in message


@pytest.mark.parametrize("content", [b"this is not an image", None])
def test_corrupt_image(folder: Path, cache: Path, content: bytes | None) -> None:
    target = folder / _IMAGES[0][0]
    if content is None:  # truncated JPEG: the header parses, decoding fails
        content = target.read_bytes()[:300]
    target.write_bytes(content)
    ds = _dataset(folder, cache)
    with pytest.raises(DatasetError) as info:
        ds.load(np.array([0]))
    message = str(info.value)
    assert _IMAGES[0][0] in message and "cannot read image" in message
    assert "\n" not in message
    with pytest.raises(DatasetError, match="cannot read image"):
        ds.preprocess_all()
