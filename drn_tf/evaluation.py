"""Benchmark evaluation: Y-channel PSNR/SSIM of a DRN model (or bicubic) on test sets.

The protocol of ``docs/drn-reference.md`` §4: the whole LR image in one pass, the top output
clamped and rounded to 8 bits, HR cropped top-left to ``LR size × scale``, PSNR and SSIM on
MATLAB's uint8 Y with ``scale`` pixels shaved from every border, averaged over each set.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from drn_tf.degrade import imresize
from drn_tf.files import atomic_path
from drn_tf.image_sets import load_eval_pairs
from drn_tf.inference import upscale
from drn_tf.metrics import psnr_y, ssim_y
from drn_tf.models import DRN

__all__ = ["evaluate", "format_table", "smallest_measurable", "write_json"]

PathLike = str | os.PathLike[str]

# metrics.ssim_y slides an 11x11 window over the image left after shaving `scale` pixels per border.
_SSIM_WINDOW = 11


def smallest_measurable(scale: int) -> int:
    """The smallest HR side (after modcrop) that PSNR/SSIM can measure at ``scale``."""
    return 2 * scale + _SSIM_WINDOW


def evaluate(
    model: DRN | str, folders: PathLike | Iterable[PathLike], scale: int, progress: bool = True
) -> dict[str, dict[str, Any]]:
    """PSNR/SSIM of ``model`` on each folder.

    Args:
        model: a :class:`~drn_tf.models.DRN` whose ``scale`` equals ``scale`` (its top output
            is used), or ``"bicubic"`` for the MATLAB-bicubic baseline (``imresize(lr, scale)``).
        folders: one folder or several. Each is a benchmark set (``HR/`` and
            ``LR_bicubic/X{scale}/``) or a plain folder of HR images whose LR inputs are
            computed with MATLAB bicubic (see :func:`drn_tf.image_sets.load_eval_pairs`).
        scale: the upscaling factor; also the border shaved before the metrics.
        progress: show a tqdm progress bar per set (on stderr).

    Returns:
        ``{set_name: {"psnr": mean dB, "ssim": mean, "images": {name: {"psnr": dB,
        "ssim": …}}, "skipped": {path: reason}}}`` with Python floats, sets in the given order
        and images in file order. ``set_name`` is the folder's name (its full path when two
        folders share a name); an image's name is its file stem (relative path for nested
        plain folders). A PSNR is ``inf`` when SR equals HR. ``skipped`` names the files left
        out of the means: unreadable ones, and those smaller than
        :func:`smallest_measurable` (e.g. 6x5 at ×4).

    Raises:
        ValueError: ``model`` is neither a DRN nor ``"bicubic"``, its scale differs from
            ``scale``, or a folder has no image, or none that can be measured.
    """
    if isinstance(model, str):
        if model != "bicubic":
            raise ValueError(f"model must be a DRN or 'bicubic', got {model!r}")
    elif not isinstance(model, DRN):
        raise ValueError(f"model must be a DRN or 'bicubic', got a {type(model).__name__}")
    elif model.scale != scale:
        raise ValueError(f"the model upscales ×{model.scale}, but the evaluation scale is ×{scale}")
    folders = [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)
    if not folders:
        raise ValueError("no evaluation folder given")
    names = [Path(f).name or str(f) for f in folders]
    results: dict[str, dict[str, Any]] = {}
    for folder, name in zip(folders, names, strict=True):
        set_name = name if names.count(name) == 1 else str(folder)
        if set_name in results:
            raise ValueError(f"{folder}: given twice")
        skipped: list[tuple[Path, str]] = []
        pairs = load_eval_pairs(folder, scale, smallest_measurable(scale), skipped)
        images: dict[str, dict[str, float]] = {}
        for image_name, lr, hr in tqdm(pairs, desc=set_name, unit="image", disable=not progress):
            sr = imresize(lr, scale) if isinstance(model, str) else upscale(model, lr)
            if sr.shape != hr.shape:  # a model that does not upscale by `scale`
                raise ValueError(f"{folder}/{image_name}: SR {sr.shape} vs HR {hr.shape}")
            images[image_name] = {
                "psnr": psnr_y(sr, hr, shave=scale),
                "ssim": ssim_y(sr, hr, shave=scale),
            }
        results[set_name] = {
            "psnr": float(np.mean([v["psnr"] for v in images.values()])),
            "ssim": float(np.mean([v["ssim"] for v in images.values()])),
            "images": images,
            "skipped": {str(path): reason for path, reason in skipped},
        }
    return results


def format_table(results: dict[str, dict[str, Any]], per_image: bool = True) -> str:
    """A plain-text table of :func:`evaluate`'s results.

    One block per set (each image's PSNR in dB with 2 decimals and SSIM with 4, then the
    set's mean), a summary of the set means when there are several sets, then a line per
    skipped file with the reason.
    """
    width = (
        max(
            [
                len("mean"),
                len("set"),
                *(len(s) for s in results),
                *(len(n) for r in results.values() for n in r["images"]),
            ]
        )
        if results
        else 4
    )
    line = f"{{:<{width}}}  {{:>9}}  {{:>6}}"

    def row(name: str, psnr: float, ssim: float) -> str:
        psnr_text = f"{psnr:.2f}" if math.isfinite(psnr) else str(psnr)
        return line.format(name, psnr_text, f"{ssim:.4f}")

    blocks = []
    if per_image:
        for set_name, result in results.items():
            skipped = len(result.get("skipped", {}))
            lines = [
                f"{set_name} ({len(result['images'])} images"
                + (f", {skipped} skipped)" if skipped else ")"),
                line.format("image", "PSNR (dB)", "SSIM"),
            ]
            lines += [row(n, v["psnr"], v["ssim"]) for n, v in result["images"].items()]
            lines.append(row("mean", result["psnr"], result["ssim"]))
            blocks.append("\n".join(lines))
    if len(results) > 1 or not per_image:
        lines = [line.format("set", "PSNR (dB)", "SSIM")]
        lines += [row(s, r["psnr"], r["ssim"]) for s, r in results.items()]
        blocks.append("\n".join(lines))
    skipped_lines = [
        f"skipped {path}: {reason}"
        for result in results.values()
        for path, reason in result.get("skipped", {}).items()
    ]
    if skipped_lines:
        blocks.append("\n".join(skipped_lines))
    return "\n\n".join(blocks)


def write_json(path: PathLike, content: Any) -> Path:
    """Writes ``content`` as indented JSON through a temporary file in the same folder, so
    ``path`` is either the old file or the complete new one. Infinite PSNRs are written as
    ``Infinity`` (Python's ``json`` reads them back)."""
    path = Path(path)
    with atomic_path(path) as temp, open(temp, "x", encoding="utf-8") as stream:
        json.dump(content, stream, indent=2)
        stream.write("\n")
    return path
