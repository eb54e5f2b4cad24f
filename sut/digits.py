"""scikit-learn's bundled handwritten digits as a labelled Dataset.

1797 grey 8x8 images (values 0..16, ink bright on a dark background) in 10 classes,
shipped inside scikit-learn, so no download is needed. Each digit is scaled to uint8
0..255, upscaled bilinearly to the model's input size, repeated into three RGB channels
and normalised like ImageNet (`normalize_uint8_hwc`).

A seeded permutation splits the samples into a disjoint "train" part (fine-tuning and
calibration) and a held-out "check" part (the accuracy gate); "all" is every sample in
the original order. Indices passed to `load` are positions within the chosen split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plumbing.errors import DatasetError
from sut.data import normalize_uint8_hwc

SPLITS = ("all", "train", "check")
DEFAULT_CHECK_COUNT = 500
NUM_CLASSES = 10
_SOURCE_SIZE = 8
_SOURCE_MAX = 16.0

_ARRAYS: tuple[np.ndarray, np.ndarray] | None = None


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (1797, 8, 8) scaled to 0..255, int64 labels (1797,))."""
    global _ARRAYS
    # Import every time (cheap once imported) so a missing scikit-learn is always reported,
    # even after another dataset instance has filled the in-process copy.
    try:
        import sklearn  # noqa: F401  (checked first: a cached submodule would hide its absence)
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetError(
            "the digits dataset needs scikit-learn: pip install scikit-learn"
        ) from exc
    if _ARRAYS is None:
        bunch = load_digits()
        grey = np.asarray(bunch.images, dtype=np.float64)
        images = np.clip(np.rint(grey * (255.0 / _SOURCE_MAX)), 0, 255).astype(np.uint8)
        labels = np.asarray(bunch.target, dtype=np.int64)
        if images.shape[1:] != (_SOURCE_SIZE, _SOURCE_SIZE) or len(images) != len(labels):
            raise DatasetError(f"unexpected scikit-learn digits data of shape {images.shape}")
        images.setflags(write=False)
        labels.setflags(write=False)
        _ARRAYS = (images, labels)
    return _ARRAYS


def bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D bilinear resampling with half-pixel centres: (lo, hi, frac) per output pixel.

    Output pixel i is `src[lo[i]] * (1 - frac[i]) + src[hi[i]] * frac[i]`: the convention of
    torch's interpolate(mode="bilinear", align_corners=False) and PIL's BILINEAR when
    upscaling, with edge samples clamped.
    """
    centres = (np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5
    centres = np.clip(centres, 0.0, size_in - 1)
    lo = np.minimum(np.floor(centres).astype(np.int64), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    return lo, hi, centres - lo


def upscale_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (k, h, h) -> uint8 (k, size, size), rows then columns.

    Elementwise float64 arithmetic in a fixed order (no BLAS), so the pixels are the same
    on every machine.
    """
    lo, hi, frac = bilinear_taps(images.shape[1], size)
    grey = images.astype(np.float64)
    rows = grey[:, lo, :] * (1.0 - frac)[None, :, None] + grey[:, hi, :] * frac[None, :, None]
    out = rows[:, :, lo] * (1.0 - frac)[None, None, :] + rows[:, :, hi] * frac[None, None, :]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def split_indices(count: int, split: str, seed: int, check_count: int) -> np.ndarray:
    """Sorted sample ids of `split`: a seeded permutation's first `check_count` are "check"."""
    if split == "all":
        return np.arange(count, dtype=np.int64)
    order = np.random.default_rng([seed, 0x6469676974]).permutation(count)
    chosen = order[:check_count] if split == "check" else order[check_count:]
    return np.sort(chosen).astype(np.int64)


class DigitsDataset:
    """Handwritten digits (scikit-learn), labelled, served as normalised float32 NCHW."""

    name = "digits"

    def __init__(
        self,
        image_size: int = 224,
        split: str = "all",
        seed: int = 0,
        check_count: int = DEFAULT_CHECK_COUNT,
    ) -> None:
        if split not in SPLITS:
            raise DatasetError(f"digits split {split!r}: choose from {', '.join(SPLITS)}")
        if int(image_size) < 1:
            raise DatasetError(f"digits image size must be positive, not {image_size}")
        images, labels = _digits_arrays()
        if not 0 < int(check_count) < len(images):
            raise DatasetError(
                f"digits check_count must be between 1 and {len(images) - 1}, not {check_count}"
            )
        self.image_size = int(image_size)
        self.split = split
        self.seed = int(seed)
        self.check_count = int(check_count)
        self._ids = split_indices(len(images), split, self.seed, self.check_count)
        self._images = images
        self._labels = labels[self._ids]
        self._labels.setflags(write=False)
        self.count = len(self._ids)

    def sample_ids(self) -> np.ndarray:
        """Position of each sample of this split in scikit-learn's original order."""
        return self._ids.copy()

    def load_uint8(self, indices: np.ndarray) -> np.ndarray:
        """uint8 RGB images (k, S, S, 3) at `indices` (positions within the split)."""
        positions = np.asarray(indices, dtype=np.int64).ravel()
        if positions.size and (positions.min() < 0 or positions.max() >= self.count):
            raise IndexError(f"digits {self.split} index out of range 0..{self.count - 1}")
        grey = upscale_bilinear(self._images[self._ids[positions]], self.image_size)
        return np.repeat(grey[..., None], 3, axis=3)

    def load(self, indices: np.ndarray) -> np.ndarray:
        return normalize_uint8_hwc(self.load_uint8(indices))

    def labels(self) -> np.ndarray:
        return self._labels.copy()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": "scikit-learn load_digits (8x8 grey, upscaled bilinearly)",
            "split": self.split,
            "count": self.count,
            "check_count": self.check_count,
            "image_size": self.image_size,
            "seed": self.seed,
            "num_classes": NUM_CLASSES,
            "labels": True,
            "scikit_learn": _sklearn_version(),
        }


def _sklearn_version() -> str | None:
    try:
        import sklearn
    except ImportError:
        return None
    return str(sklearn.__version__)
