"""The one pixel path: a file, bytes or an array in, the uint8 image a model of a given size and channels sees.

Training (``core.data.pipeline``), the Predictor, Grad-CAM, the live webcam, exports and the data
checks all call ``to_model_pixels``, so a model sees the same pixels on the Classify page as it did
in training. Colour becomes grey with one formula, Pillow's ITU-R 601-2 luma (what decoding a colour
file straight to one channel gives), grey becomes colour by copying it to every channel, alpha is
dropped, and the size is reached with ``core.data.images.resize_image`` (area when shrinking,
bilinear when enlarging, no crop).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from core.data.images import decode_image, resize_image

ImageSource = np.ndarray | bytes | str | Path | BinaryIO


def as_uint8(image: np.ndarray) -> np.ndarray:
    """An H x W x C uint8 array (C = 1, 3 or 4) from H x W or H x W x C of any numeric type (clipped)."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"Expected an image array of height x width x channels, got shape {list(a.shape)}.")
    return a


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """The image with ``channels`` (1 or 3): alpha dropped, grey copied to RGB, RGB to grey by Pillow's luma."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels!r}")
    a = as_uint8(image)
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if a.shape[2] == channels:
        return np.ascontiguousarray(a)
    if channels == 3:
        return np.repeat(a, 3, axis=2)
    grey = Image.fromarray(np.ascontiguousarray(a)).convert("L")
    return np.asarray(grey, dtype=np.uint8)[:, :, None]


def to_model_pixels(image: ImageSource, size: int | tuple[int, int], channels: int) -> np.ndarray:
    """What a model of ``size`` and ``channels`` sees of ``image``: uint8 ``S x S x C``.

    ``image`` is a decoded array (H x W x C, RGB order) or anything ``decode_image`` reads (a path,
    bytes, an open file): files are decoded with EXIF rotation and transparency over white first.
    """
    if not isinstance(image, np.ndarray):
        image = decode_image(image, channels=None)
    return resize_image(to_channels(image, channels), size)
