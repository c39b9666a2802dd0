"""Small synthetic images and the shared test sets, for the image-reading tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SET5 = SHARED_DATA / "benchmark" / "Set5"


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth(height: int, width: int) -> np.ndarray:
    """A gradient image: lossy codecs keep it within a few levels."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), 128 + 0 * x], -1)
    return image.astype(np.uint8)


def save(image: np.ndarray | Image.Image, path: Path, **options) -> Path:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8))
    image.save(path, **options)
    return path
