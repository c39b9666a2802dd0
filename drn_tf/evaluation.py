"""Benchmark evaluation: Y-channel PSNR/SSIM of a DRN model (or bicubic) on test sets.

The protocol of ``docs/drn-reference.md`` §4: the whole LR image in one pass, the top output
clamped and rounded to 8 bits, HR cropped top-left to ``LR size × scale``, PSNR and SSIM on
MATLAB's uint8 Y with ``scale`` pixels shaved from every border, averaged over each set.

Sets of LR images without HR (a user's own photos, DRN-Adapt's unpaired data) get a
no-reference readout instead, :func:`evaluate_closed_loop`: the closed-loop error
``|D(P(x)) − x|`` of every image, the top SR output taken back to the input size by the dual
networks and compared with the input (mean absolute error on 0..255). Adaptation lowers it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from drn_tf.degrade import imresize
from drn_tf.dual_regression import closed_loop
from drn_tf.files import atomic_path
from drn_tf.image_sets import ImageSet, load_eval_pairs
from drn_tf.inference import upscale
from drn_tf.metrics import psnr_y, ssim_y
from drn_tf.models import DRN
from drn_tf.progress import Bar
from drn_tf.training_images import load_lr_images

__all__ = [
    "closed_loop_error",
    "evaluate",
    "evaluate_closed_loop",
    "format_loop_table",
    "format_table",
    "smallest_measurable",
    "write_json",
]

PathLike = str | os.PathLike[str]

# metrics.ssim_y slides an 11x11 window over the image left after shaving `scale` pixels per border.
_SSIM_WINDOW = 11


def smallest_measurable(scale: int) -> int:
    """The smallest HR side (after modcrop) that PSNR/SSIM can measure at ``scale``."""
    return 2 * scale + _SSIM_WINDOW


def evaluate(
    model: DRN | str,
    folders: PathLike | Iterable[PathLike],
    scale: int,
    progress: bool = True,
    lr_kind: str = "bicubic",
    self_ensemble: bool = False,
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
        lr_kind: the LR the model gets: a benchmark set's ``LR_<lr_kind>/X{scale}`` files
            (``nearest`` etc., written by ``drn-tf degrade``); only ``bicubic`` is computed
            where there are none.
        self_ensemble: the model's output is the mean over the 8 flips and rotations of the
            input (8× the time); a result to report apart from the plain model's.

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
            ``scale``, or a folder has no image, or none that can be measured, or
            ``self_ensemble`` with bicubic.
    """
    if isinstance(model, str):
        if model != "bicubic":
            raise ValueError(f"model must be a DRN or 'bicubic', got {model!r}")
        if self_ensemble:
            raise ValueError("self-ensemble needs a DRN model: bicubic is the same under flips")
    elif not isinstance(model, DRN):
        raise ValueError(f"model must be a DRN or 'bicubic', got a {type(model).__name__}")
    elif model.scale != scale:
        raise ValueError(f"the model upscales ×{model.scale}, but the evaluation scale is ×{scale}")
    results: dict[str, dict[str, Any]] = {}
    for folder, set_name in _set_names(folders):
        skipped: list[tuple[Path, str]] = []
        pairs = load_eval_pairs(folder, scale, smallest_measurable(scale), skipped, lr_kind)
        images: dict[str, dict[str, float]] = {}
        for image_name, lr, hr in Bar(pairs, desc=set_name, unit="image", disable=not progress):
            if isinstance(model, str):
                sr = imresize(lr, scale)
            else:  # one pass in float32: the protocol measures the network, not tiles or bf16
                sr = upscale(lr, model, tile=None, precision="float32", self_ensemble=self_ensemble)
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


def _set_names(folders: PathLike | Iterable[PathLike]) -> list[tuple[PathLike, str]]:
    """``(folder, set name)``: the folder's name, its full path when two share a name."""
    folders = [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)
    if not folders:
        raise ValueError("no evaluation folder given")
    names = [Path(f).name or str(f) for f in folders]
    named = [(f, n if names.count(n) == 1 else str(f)) for f, n in zip(folders, names, strict=True)]
    if len({n for _, n in named}) != len(named):
        duplicate = next(f for f, n in named if [m for _, m in named].count(n) > 1)
        raise ValueError(f"{duplicate}: given twice")
    return named


def closed_loop_error(model: DRN, lr: np.ndarray) -> float:
    """The closed-loop error ``mean |D(P(x)) − x|`` of one LR image: the float top output
    of ``model`` taken back to the LR size by all its dual networks
    (:func:`drn_tf.dual_regression.closed_loop`), against ``lr``.

    Args:
        model: a :class:`~drn_tf.models.DRN` with trained dual networks.
        lr: uint8 ``(h, w, 3)``, any size.

    Returns:
        The mean absolute difference over pixels and channels, on 0..255 (0 = a perfect loop).
    """
    x = np.asarray(lr, dtype=np.float32)[None]
    loop = closed_loop(model.duals, model.primal(x, training=False)[-1])
    return float(np.mean(np.abs(np.asarray(loop, dtype=np.float32) - x)))


def evaluate_closed_loop(
    model: DRN,
    folders: PathLike | Iterable[PathLike],
    scale: int,
    lr_kind: str = "bicubic",
    progress: bool = True,
    frames_per_video: int = 16,
) -> dict[str, dict[str, Any]]:
    """The no-reference readout of LR images without HR: :func:`closed_loop_error` per image.

    Args:
        model: a :class:`~drn_tf.models.DRN` of factor ``scale``.
        folders: each a benchmark set (its ``LR_<lr_kind>/X{scale}`` images are read), a
            plain folder whose images (recursively, any format and size) are all LR inputs,
            or a video file; videos, given or in a plain folder, give ``frames_per_video``
            frames spread over the clip (named ``frame_000012``, their index).
        scale: the model's factor (it picks a set's ``X{scale}`` folder).
        lr_kind: the LR folder of benchmark sets.
        progress: show a tqdm progress bar per set (on stderr).
        frames_per_video: frames sampled from each video.

    Returns:
        ``{set_name: {"loop_error": mean, "images": {name: {"loop_error": …}},
        "skipped": {path: reason}}}``; names as in :func:`evaluate` (an image's name is its
        path relative to the folder read, without suffix, and a set's ``x{scale}``).

    Raises:
        ValueError: not a DRN of ``scale``, or a folder without a usable image.
    """
    if not isinstance(model, DRN):
        raise ValueError(f"the closed-loop error needs a DRN model, got {model!r}")
    if model.scale != scale:
        raise ValueError(f"the model upscales ×{model.scale}, but the evaluation scale is ×{scale}")
    results: dict[str, dict[str, Any]] = {}
    for folder, set_name in _set_names(folders):
        image_set = ImageSet.at(folder, lr_kind)
        root = Path(folder) if image_set.lr_root is None else image_set.lr_root / f"X{scale}"
        images, skipped = load_lr_images(root, min_size=1, frames_per_video=frames_per_video)
        # A set's LR files are <stem>x<s>.png: named as their HR image.
        suffix = "" if image_set.lr_root is None else f"x{scale}"
        errors = {
            path.relative_to(root).with_suffix("").as_posix().removesuffix(suffix): {
                "loop_error": closed_loop_error(model, lr)
            }
            for path, lr in Bar(images, desc=set_name, unit="image", disable=not progress)
        }
        results[set_name] = {
            "loop_error": float(np.mean([v["loop_error"] for v in errors.values()])),
            "images": errors,
            "skipped": {str(path): reason for path, reason in skipped},
        }
    return results


def format_loop_table(results: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of :func:`evaluate_closed_loop`'s results: each image's closed-loop
    error (0..255, 3 decimals), each set's mean, then the skipped files."""
    names = [n for r in results.values() for n in r["images"]] + [*results, "image", "mean"]
    line = f"{{:<{max(map(len, names))}}}  {{:>10}}"
    blocks = []
    for set_name, result in results.items():
        lines = [f"{set_name} ({len(result['images'])} LR images, no HR)"]
        lines.append(line.format("image", "loop error"))
        lines += [line.format(n, f"{v['loop_error']:.3f}") for n, v in result["images"].items()]
        lines.append(line.format("mean", f"{result['loop_error']:.3f}"))
        lines += [f"skipped {path}: {reason}" for path, reason in result["skipped"].items()]
        blocks.append("\n".join(lines))
    blocks.append(
        "loop error = mean |D(P(x)) - x| on 0..255: the dual networks take the SR output "
        "back to the input; no HR needed (lower is more consistent)"
    )
    return "\n\n".join(blocks)


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
