"""MLPerf's ResNet50 reference preprocessing, in PIL and numpy: decode with EXIF orientation,
RGB, an aspect-preserving resize of the short side to 8S/7 (256 for 224; INTER_AREA as PIL's
BOX when shrinking), a centre crop to S x S, uint8 HWC. sut/imagenet.py applies it to a
dataset folder and caches the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from plumbing.errors import DatasetError, one_line

_EXIF_ORIENTATION = 0x0112
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def resize_short_side(image_size: int) -> int:
    """Shorter side before cropping: the reference's int(100 * S / 87.5), i.e. 256 for 224.

    Integer arithmetic gives the same value as the reference's float expression for every S
    (87.5 is exact in binary) without depending on float rounding.
    """
    return (8 * image_size) // 7


def scaled_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """(width, height) after the aspect-preserving resize, truncated as the reference does."""
    short = resize_short_side(image_size)
    if height > width:
        return short, int(short * height / width)
    return int(short * width / height), short


def preprocess_image(path: Path, image_size: int) -> np.ndarray:
    """uint8 (S, S, 3) RGB centre crop of the resized image at `path`."""
    image = _read_rgb(path)
    size = scaled_size(image.width, image.height, image_size)
    resized = _resize(image, size)
    return _center_crop(np.asarray(resized), image_size)


def _read_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            # The reference decodes with cv2.imread, which applies EXIF orientation.
            if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                image = ImageOps.exif_transpose(image)
            # Grayscale, CMYK, palette and RGBA files all become plain RGB, as with cv2.
            return image.convert("RGB")
    except _IMAGE_ERRORS as exc:
        raise DatasetError(f"{path}: cannot read image ({one_line(exc)})") from exc


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    # The reference resizes with cv2 INTER_AREA. When shrinking (almost every ImageNet
    # val image) that is an average over each output pixel's source area, which is exactly
    # PIL's BOX filter. When enlarging, INTER_AREA degenerates to a bilinear-like
    # interpolation; PIL's BILINEAR is the closest match.
    shrinking = size[0] * size[1] < image.width * image.height
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return image.resize(size, resample=resample)


def _center_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    # Same offsets as the reference's int((width - size) / 2) for non-negative margins.
    top = (pixels.shape[0] - size) // 2
    left = (pixels.shape[1] - size) // 2
    return np.ascontiguousarray(pixels[top : top + size, left : left + size])
