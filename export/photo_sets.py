"""The real photos an export is calibrated and verified on.

:func:`probe_images`: what :func:`export.verification.verify` runs every artifact and the Keras
model on (the bundled sample photo's LR, an odd crop of it, and held-out crops);
:func:`calibration_images`: LR crops that int8 quantization measures activation ranges on
(photos from given folders, or the bundled calibration set, never a probe image). All are
float32 NHWC batches of one on 0..255.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from drn_tf.bundled import CALIBRATION_SET, HELD_OUT_SET, SAMPLE_IMAGE
from drn_tf.degrade import imresize, modcrop
from drn_tf.images import find_images, read_image
from export import base


def probe_images(scale: int) -> list[tuple[str, np.ndarray]]:
    """Real-photo inputs for verification: ``(name, float32 (1, H, W, 3) on 0..255)``.

    The bundled sample photo downscaled ×``scale`` with MATLAB bicubic (as the demo does), an
    odd-height, even-width, non-square crop of it (a second size, so dynamic shapes are
    exercised), and the held-out LR crops (:data:`HELD_OUT_SET`). None of them is a
    calibration image (:func:`calibration_images`), so int8 is checked on photos it was not
    calibrated on.
    """
    hr = modcrop(read_rgb(SAMPLE_IMAGE), scale)
    lr = imresize(hr, 1 / scale)
    crop = lr[3:40, 5:57]  # 37 × 52
    held_out = [
        (f"held_out_{path.stem}_{image.shape[1]}x{image.shape[2]}", image)
        for path, image in bundled_images(HELD_OUT_SET)
    ]
    return [
        (f"sample_lr_{lr.shape[0]}x{lr.shape[1]}", lr[None].astype(np.float32)),
        (f"sample_crop_{crop.shape[0]}x{crop.shape[1]}", crop[None].astype(np.float32)),
        *held_out,
    ]


def bundled_images(folder: Path) -> list[tuple[Path, np.ndarray]]:
    """The PNGs of a bundled folder in name order: ``(path, float32 (1, h, w, 3) on 0..255)``."""
    paths = sorted(folder.glob("*.png"))
    return [(path, read_rgb(path)[None].astype(np.float32)) for path in paths]


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def calibration_images(
    folders: Sequence[str | os.PathLike], scale: int, count: int = 32, size: int = 48
) -> list[np.ndarray]:
    """Real LR inputs for int8 calibration: float32 ``(1, size, size, 3)`` on 0..255.

    Photos from ``folders`` (recursive) are downscaled ×``scale`` with MATLAB bicubic, like
    the LR images the model sees, and cut into up to ``count`` crops spread over the images.
    No folders: the bundled calibration set (:data:`CALIBRATION_SET`, 32 LR crops of 48×48
    from 32 varied photos) as it is, whatever ``scale``, ``count`` and ``size``. Photos under
    ``size * scale`` pixels on a side give no crop: they are named in one note line on stderr,
    or in the error when no photo is large enough.

    Why a varied set: int8 activation ranges come from what calibration sees. Calibrated on
    the one sample photo (LR peak 209), the packaged ×4 model's OpenVINO int8 lost 0.165 dB
    Set5 PSNR; on the bundled set 0.057 dB (AVX-512 VNNI EPYC, with NNCF's overflow fix).
    """
    if not folders:
        return [image for _, image in bundled_images(CALIBRATION_SET)]

    paths: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise base.ExportError(f"{folder}: calibration folder does not exist")
        found = find_images(folder)
        if not found:
            raise base.ExportError(f"{folder}: no images found for calibration")
        paths += found
    # Photos too small for one crop (a 1×1 image would not even survive modcrop) are told
    # from their headers first, so that the crops are spread over the photos that give some;
    # they are named below, so that a folder calibrating on fewer photos than it holds says why.
    sizes = {path: _header_size(path) for path in paths}
    too_small = [f"{p} ({w}x{h})" for p, (w, h) in sizes.items() if min(w, h) < size * scale]
    usable = [p for p, (w, h) in sizes.items() if min(w, h) >= size * scale]
    crops: list[np.ndarray] = []
    per_image = max(1, math.ceil(count / max(1, len(usable))))
    for path in usable:
        if len(crops) >= count:
            break
        lr = imresize(modcrop(read_image(path), scale), 1 / scale)  # names the file on error
        side = math.ceil(math.sqrt(per_image))
        rows = np.linspace(0, lr.shape[0] - size, num=side, dtype=int)
        cols = np.linspace(0, lr.shape[1] - size, num=side, dtype=int)
        corners = [(top, left) for top in rows for left in cols][:per_image]
        for top, left in corners[: count - len(crops)]:
            crops.append(lr[None, top : top + size, left : left + size].astype(np.float32))
    why = f"under {size * scale} pixels on a side ({size}-pixel LR crops at ×{scale})"
    if not crops:
        raise base.ExportError(
            f"no calibration image is large enough: all {why}: {_listed(too_small)}"
        )
    if too_small:
        print(
            f"note: calibration skipped {len(too_small)} image(s) {why}: {_listed(too_small)}",
            file=sys.stderr,
        )
    return crops


def _header_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of the image at ``path`` from its header, without decoding the
    pixels; a file PIL cannot open is decoded by :func:`drn_tf.images.read_image`, which reads
    what PIL alone does not or names the problem."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        height, width = read_image(path).shape[:2]  # raises, naming the file and the problem
        return width, height


def _listed(names: Sequence[str], shown: int = 3) -> str:
    """The first ``shown`` of ``names`` and how many more, for a one-line message."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
