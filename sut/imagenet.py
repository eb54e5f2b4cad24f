"""An ImageNet validation folder as a Dataset, preprocessed like the MLPerf ResNet50 reference.

Layout: `<path>/val_map.txt` holds lines `<file> <label>` (e.g.
`ILSVRC2012_val_00000001.JPEG 65`); image files are relative to `<path>`.

Decoding and resizing JPEGs is far slower than inference, so each sample's uint8 crop is
cached as one `.npy` file and normalised on load. Normalising a cached uint8 crop gives
exactly the float32 values a fresh decode would, at a quarter of float32's size.

A cache file is keyed by its image's content as the file system reports it: the file's
name, size and modification time (nanoseconds) are part of the cache file's name, so an
image replaced in place (a new mtime) is preprocessed again, never served from the old
pixels. The folder path, image size and PREPROCESS_VERSION key the cache folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from sut.preprocess import preprocess_image
from plumbing.errors import DatasetError, one_line
from plumbing.files import atomic_path
from sut.data import normalize_uint8_hwc

log = logging.getLogger(__name__)

VAL_MAP = "val_map.txt"
IMAGENET_CLASSES = 1000  # labels are 0..999, the classifiers' output indices
CACHE_ENV = "DEEPGAP_CACHE"
DEFAULT_CACHE_ROOT = Path("~/.cache/deepgap")
# Part of the cache key: bump it whenever the pixels produced for a file change, so stale
# caches are ignored instead of silently reused.
PREPROCESS_VERSION = "mlperf-resnet50-v1:exif,rgb,box|bilinear,short=8S/7,center-crop,uint8"

_LABEL = re.compile(r"[0-9]+")
_SNIPPET_CHARS = 60
_PROGRESS_STEPS = 20
_DEFAULT_MAX_WORKERS = 8
# Errors np.load raises for truncated or garbage files.
_NPY_ERRORS = (OSError, ValueError, EOFError, SyntaxError)


class ImageNetDataset:
    """ImageNet validation images with labels, served as normalised float32 NCHW."""

    name = "imagenet"

    def __init__(
        self,
        path: str | Path,
        image_size: int = 224,
        count: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.path = Path(path).expanduser().resolve()
        self.image_size = image_size
        _check_folder(self.path)
        entries = _parse_map(self.path / VAL_MAP)
        entries = _limit(entries, count, self.path / VAL_MAP)
        stats = _stat_images(self.path, [file for file, _ in entries])
        self._files = [file for file, _ in entries]
        self._versions = [_version_token(st) for st in stats]
        self._labels = np.array([label for _, label in entries], dtype=np.int64)
        self.count = len(entries)
        self.cache_dir = _cache_root(cache_dir) / _cache_key(self.path, image_size)
        self._cache_bytes = _npy_size((image_size, image_size, 3))

    # -- Dataset protocol ---------------------------------------------------------------

    def load(self, indices: np.ndarray) -> np.ndarray:
        """Normalised float32 (k, 3, S, S) for `indices`, decoding only uncached images."""
        idx = np.asarray(indices, dtype=np.int64).ravel()
        if idx.size == 0:
            return np.empty((0, 3, self.image_size, self.image_size), dtype=np.float32)
        out_of_range = idx[(idx < 0) | (idx >= self.count)]
        if out_of_range.size:
            raise IndexError(
                f"index {int(out_of_range[0])} out of range for {self.count} samples"
            )
        return normalize_uint8_hwc(np.stack([self._crop(int(i)) for i in idx]))

    def labels(self) -> np.ndarray:
        return self._labels.copy()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "count": self.count,
            "image_size": self.image_size,
            "labels": True,
            "cache_dir": str(self.cache_dir),
        }

    # -- cache ----------------------------------------------------------------------------

    def preprocess_all(self, progress: bool = False, workers: int | None = None) -> None:
        """Fill the cache for every sample, so timed runs never decode JPEGs.

        Files whose size matches a complete crop are trusted here (re-reading 50 000 files
        would cost more than it saves); `load` still regenerates any that fail to parse.
        """
        todo = [i for i in range(self.count) if not self._looks_cached(i)]
        if progress:
            log.info(
                "imagenet: %d of %d images need preprocessing into %s",
                len(todo), self.count, self.cache_dir,
            )
        if not todo:
            return
        self._remove_stale()
        workers = workers or min(_DEFAULT_MAX_WORKERS, os.cpu_count() or 1)
        started = time.monotonic()
        step = max(1, len(todo) // _PROGRESS_STEPS)
        # Threads suffice: PIL releases the GIL while decoding and resizing.
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imagenet-prep")
        try:
            for done, _ in enumerate(pool.map(self._fill, todo), start=1):
                if progress and (done % step == 0 or done == len(todo)):
                    rate = done / max(time.monotonic() - started, 1e-9)
                    log.info("imagenet: preprocessed %d/%d (%.0f images/s)", done, len(todo), rate)
        except BaseException:
            # Without cancelling, the pool would finish every queued image before raising.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def cache_file(self, index: int) -> Path:
        """Where sample `index`'s uint8 crop is cached: named by the image file and the
        version of it on disk (size and mtime), so a replaced image misses the cache."""
        # Quoting keeps map entries with subfolders flat and collision-free (and glob-safe).
        return self.cache_dir / f"{quote(self._files[index], safe='')}.{self._versions[index]}.npy"

    def _crop(self, index: int) -> np.ndarray:
        cached = self._read_cached(index)
        if cached is not None:
            return cached
        return self._fill(index)

    def _fill(self, index: int) -> np.ndarray:
        crop = preprocess_image(self.path / self._files[index], self.image_size)
        _write_atomic(self.cache_file(index), crop)
        return crop

    def _remove_stale(self) -> None:
        """Delete the crops of earlier versions of this dataset's images (replaced files):
        no run can read them again. One listing of the folder, not one per image."""
        current = {self.cache_file(i).name for i in range(self.count)}
        ours = {quote(file, safe="") for file in self._files}
        try:
            entries = list(os.scandir(self.cache_dir))
        except OSError:
            return
        for entry in entries:
            parts = entry.name.rsplit(".", 2)
            versioned = len(parts) == 3 and parts[2] == "npy" and parts[0] in ours
            unversioned = entry.name.endswith(".npy") and entry.name[:-4] in ours  # before versions
            if (versioned or unversioned) and entry.name not in current:
                log.info("imagenet: removing %s, the crop of an image since replaced", entry.path)
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    def _looks_cached(self, index: int) -> bool:
        try:
            return self.cache_file(index).stat().st_size == self._cache_bytes
        except OSError:
            return False

    def _read_cached(self, index: int) -> np.ndarray | None:
        path = self.cache_file(index)
        try:
            crop = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except _NPY_ERRORS as exc:
            log.warning(
                "imagenet: regenerating unreadable cache file %s (%s)", path, one_line(exc)
            )
            return None
        expected = (self.image_size, self.image_size, 3)
        if crop.shape != expected or crop.dtype != np.uint8:
            log.warning(
                "imagenet: regenerating cache file %s (%s %s, expected uint8 %s)",
                path, crop.dtype, crop.shape, expected,
            )
            return None
        return crop


# -- val_map.txt and folder validation ------------------------------------------------------


def _check_folder(path: Path) -> None:
    if not path.exists():
        raise DatasetError(f"dataset folder {path} does not exist")
    if not path.is_dir():
        raise DatasetError(f"dataset path {path} is not a directory")
    if not (path / VAL_MAP).is_file():
        raise DatasetError(f"{path} has no {VAL_MAP} (expected lines 'file label')")


def _parse_map(map_path: Path) -> list[tuple[str, int]]:
    try:
        text = map_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{map_path}: cannot read ({one_line(exc)})") from exc
    entries: list[tuple[str, int]] = []
    first_line: dict[str, int] = {}
    # split("\n") rather than splitlines(), which also breaks on form feeds and other
    # separators and would make reported line numbers disagree with editors.
    for lineno, line in enumerate(text.split("\n"), start=1):
        entry = _parse_line(line, map_path, lineno)
        if entry is None:
            continue
        if entry[0] in first_line:
            # A repeated image would be scored, and weigh in the accuracy, twice.
            raise DatasetError(f"{map_path}:{lineno}: {_snippet(entry[0])} is listed again "
                               f"(first on line {first_line[entry[0]]})")
        first_line[entry[0]] = lineno
        entries.append(entry)
    if not entries:
        raise DatasetError(f"{map_path} has no entries (expected lines 'file label')")
    return entries


def _parse_line(line: str, map_path: Path, lineno: int) -> tuple[str, int] | None:
    fields = line.split()
    if not fields:
        return None
    where = f"{map_path}:{lineno}"
    if len(fields) != 2:
        raise DatasetError(f"{where}: expected 'file label', got {_snippet(line)}")
    file, label = fields
    if not _LABEL.fullmatch(label):
        raise DatasetError(f"{where}: label must be a non-negative integer, got {_snippet(label)}")
    if int(label) >= IMAGENET_CLASSES:
        raise DatasetError(f"{where}: label {_snippet(label)} is not an ImageNet class "
                           f"(0..{IMAGENET_CLASSES - 1})")
    return file, int(label)


def _limit(
    entries: list[tuple[str, int]], count: int | None, map_path: Path
) -> list[tuple[str, int]]:
    if count is None:
        return entries
    if count < 1:
        raise DatasetError(f"dataset count must be at least 1, got {count}")
    if count > len(entries):
        raise DatasetError(
            f"dataset count {count} exceeds the {len(entries)} entries in {map_path}"
        )
    return entries[:count]


def _stat_images(root: Path, files: list[str]) -> list[os.stat_result]:
    """Each listed image's stat; a DatasetError counting and naming the missing ones."""
    stats: list[os.stat_result] = []
    missing: list[str] = []
    for file in files:
        try:
            st = (root / file).stat()
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            missing.append(file)
        else:
            stats.append(st)
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(files)} images listed in {root / VAL_MAP} are missing,"
            f" first: {root / missing[0]}"
        )
    return stats


def _version_token(st: os.stat_result) -> str:
    """A short token that changes when the file is replaced or rewritten: its size and
    modification time. (Hashing 6 GB of JPEGs on every run would cost more than a decode.)"""
    return hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


# -- cache files ----------------------------------------------------------------------------


def _cache_root(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get(CACHE_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return DEFAULT_CACHE_ROOT.expanduser()


def _cache_key(path: Path, image_size: int) -> str:
    digest = hashlib.sha256(f"{path}\0{image_size}\0{PREPROCESS_VERSION}".encode()).hexdigest()
    # The size in the name only helps people browsing the cache; the hash is the key.
    return f"imagenet-{image_size}-{digest[:16]}"


def _npy_size(shape: tuple[int, ...]) -> int:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(shape, dtype=np.uint8), allow_pickle=False)
    return buffer.tell()


def _write_atomic(path: Path, array: np.ndarray) -> None:
    """Readers (other threads, processes, a later run) never see a partly written file."""
    try:
        # The temporary name ends in .tmp, so it is never mistaken for an entry.
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
    except OSError as exc:
        raise _cache_write_error(path, exc) from exc


def _cache_write_error(path: Path, exc: OSError) -> DatasetError:
    return DatasetError(
        f"cannot write cache file {path} ({one_line(exc)}); "
        f"point {CACHE_ENV} or the cache directory at a writable folder"
    )


def _snippet(text: str) -> str:
    # repr() escapes control characters, keeping the message on one line.
    text = text.strip()
    if len(text) > _SNIPPET_CHARS:
        text = text[:_SNIPPET_CHARS] + "..."
    return repr(text)
