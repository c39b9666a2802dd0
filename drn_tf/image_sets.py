"""Image sets on disk: where a folder's HR images and their LR files are, evaluation pairs,
and writing degraded LR sets.

A folder is either a benchmark set in the layout of the EDSR/DIV2K packs (``HR/`` and
``LR_<kind>/X{k}/``, :class:`ImageSet`) or a plain folder of HR images whose MATLAB-bicubic LR
is computed::

    find_images ─► read_image ─► load_eval_pairs (full images, one LR level)
    find_images ─► read_image ─► degrade ─► write_degraded_set (LR_<kind>/X{k}/ files)

Framework-free (numpy and PIL). Training pyramids are :mod:`drn_tf.training_images`' job.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from pathlib import Path

import numpy as np

from drn_tf import degrade
from drn_tf.images import ImageReadError, PathLike, find_images, read_image, write_image
from drn_tf.progress import Bar
from drn_tf.scales import check_scale

__all__ = ["ImageSet", "load_eval_pairs", "write_degraded_set"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """Where a folder's HR images and their LR files are (the one place that knows).

    A folder with an ``HR/`` sub-folder is a benchmark set in the layout of the EDSR/DIV2K packs:
    HR images in ``HR/``, and the LR of ``HR/<stem>.<ext>`` at factor ``k`` in
    ``LR_<kind>/X{k}/<stem>x{k}.png`` (``LR_bicubic`` for the official MATLAB-bicubic files,
    ``LR_nearest`` etc. as written by ``drn-tf degrade``; the relative path is kept for HR
    images in sub-folders). Any other folder is a plain folder of HR images (searched
    recursively, see :func:`find_images`) whose bicubic LR levels are computed.

    Attributes:
        hr_dir: the folder to search for HR images.
        lr_root: ``folder/LR_<lr_kind>`` for a benchmark set, None for a plain folder.
        lr_kind: the degradation the LR files were made with; only ``bicubic`` LR is ever
            computed when a file is missing.
    """

    hr_dir: Path
    lr_root: Path | None
    lr_kind: str = "bicubic"

    @classmethod
    def at(cls, folder: PathLike, lr_kind: str = "bicubic") -> ImageSet:
        """The set in ``folder`` (not checked to exist: :func:`find_images` reports that)."""
        folder = Path(folder)
        try:
            benchmark = (folder / "HR").is_dir()
        except PermissionError as error:  # a folder we may not look into
            raise OSError(f"{folder}: cannot read the folder ({error.strerror})") from error
        if benchmark:
            return cls(folder / "HR", folder / f"LR_{lr_kind}", lr_kind)
        return cls(folder, None, lr_kind)

    def official_lr(self, hr_path: Path, factor: int) -> Path | None:
        """The LR file of ``hr_path`` at ``factor``, or None if there is none.

        A set without ``LR_<kind>/X{factor}`` simply has no LR files at that factor; a file
        missing from a folder that exists is unexpected, so it is logged as a warning.
        """
        if self.lr_root is None:
            return None
        lr_dir = self.lr_root / f"X{factor}"
        relative = hr_path.relative_to(self.hr_dir)
        path = lr_dir / relative.parent / f"{hr_path.stem}x{factor}.png"
        if path.is_file():
            return path
        if lr_dir.is_dir() and self.lr_kind == "bicubic":
            logger.warning("%s missing; computing it from %s with imresize", path, hr_path)
        return None


def load_eval_pairs(
    folder: PathLike,
    scale: int,
    min_size: int = 1,
    skipped: list[tuple[Path, str]] | None = None,
    lr_kind: str = "bicubic",
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Full-image ``(name, lr, hr)`` pairs for evaluation at ``scale``.

    ``folder`` is a benchmark set or a plain folder of HR images (see :class:`ImageSet`). HR is
    modcropped to a multiple of ``scale``; LR is the set's ``LR_<lr_kind>/X{scale}`` file. Only
    bicubic LR is computed when there is no such file (``imresize(hr, 1 / scale)``); any other
    kind needs a benchmark set with that folder (``drn-tf degrade`` writes them).

    A bad image (unreadable, smaller than ``min_size`` after modcrop, or with an official LR
    file that is unreadable or not ``HR / scale``) is an error, unless ``skipped`` is given:
    then it is left out and reported there. Never silently dropped: that would change a
    benchmark's average unnoticed.

    Args:
        folder: benchmark-set folder or image folder.
        scale: SR factor (any integer >= 2, e.g. 3 works too).
        min_size: smallest usable HR side after modcrop (at least ``scale`` in any case), e.g.
            what the metrics need to measure an image.
        skipped: if given, ``(path, reason)`` of every bad image is appended to it.
        lr_kind: the LR folder to read, ``LR_<lr_kind>`` (``bicubic``, ``nearest``, …).

    Returns:
        List sorted by file path of ``(name, lr, hr)``: ``name`` is the HR file's stem (relative
        path without suffix for nested plain folders), ``lr`` uint8 ``(H/s, W/s, 3)``, ``hr`` uint8
        ``(H, W, 3)`` with H, W multiples of ``scale``.

    Raises:
        FileNotFoundError / NotADirectoryError: ``folder`` does not exist or is not a folder.
        ImageReadError: an image cannot be read (only without ``skipped``).
        ValueError: no images, no usable image, a missing ``LR_<lr_kind>/X{scale}`` folder, or
            (without ``skipped``) a bad image; the message starts with the file's path.
    """
    scale = check_scale(scale, power_of_two=False)
    image_set = ImageSet.at(folder, lr_kind)
    if lr_kind != "bicubic" and (
        image_set.lr_root is None or not (image_set.lr_root / f"X{scale}").is_dir()
    ):
        missing = (
            f"LR_{lr_kind}/X{scale}/ folder"
            if (Path(folder) / "HR").is_dir()
            else f"HR/ and LR_{lr_kind}/X{scale}/ folders"
        )
        raise ValueError(
            f"{folder}: no {missing} (a {lr_kind} test set is a "
            f"benchmark-layout folder; drn-tf degrade writes its LR_{lr_kind}/X{scale})"
        )
    files = find_images(image_set.hr_dir)
    if not files:
        raise ValueError(f"no image files found in {image_set.hr_dir}")
    pairs, bad = [], []
    for path in files:
        try:
            pair = _eval_pair(path, image_set, scale, min_size)
        except ImageReadError as error:
            if skipped is None:
                raise
            # The message starts with the path, which the report shows beside the reason.
            bad.append((path, str(error).removeprefix(f"{path}: ")))
            continue
        if isinstance(pair, str):
            if skipped is None:
                raise ValueError(f"{path}: {pair}")
            bad.append((path, pair))
            continue
        name = path.relative_to(image_set.hr_dir).with_suffix("").as_posix()
        pairs.append((name, *pair))
    if skipped is not None:
        skipped.extend(bad)
        if not pairs:
            shown = "; ".join(f"{p.name}: {r}" for p, r in bad[:3])
            shown += "; ..." if len(bad) > 3 else ""
            raise ValueError(f"no usable image in {folder}: all {len(bad)} skipped: {shown}")
    return pairs


def _eval_pair(
    path: Path, image_set: ImageSet, scale: int, min_size: int
) -> tuple[np.ndarray, np.ndarray] | str:
    """``(lr, hr)`` of one HR file, or the reason it cannot be used."""
    full = read_image(path)
    hr = np.ascontiguousarray(degrade.modcrop(full, scale))
    min_size = max(min_size, scale)
    if min(hr.shape[:2]) < min_size:
        # The smallest size in the file's own pixels that modcrops to at least min_size.
        need = -(-min_size // scale) * scale
        return f"too small: {full.shape[1]}x{full.shape[0]} (WxH), x{scale} needs {need}x{need}"
    lr_path = image_set.official_lr(path, scale)
    if lr_path is None and image_set.lr_kind != "bicubic":
        return f"no LR_{image_set.lr_kind}/X{scale} file for it"
    if lr_path is None:
        return degrade.imresize(hr, 1.0 / scale), hr
    try:
        lr = read_image(lr_path)
    except ImageReadError as error:
        return f"official LR file unreadable: {error}"
    expected = (hr.shape[0] // scale, hr.shape[1] // scale, 3)
    if lr.shape != expected:
        return f"official {lr_path} has shape {lr.shape}, expected {expected} (HR / {scale})"
    return lr, hr


def write_degraded_set(
    hr_folder: PathLike,
    kind: str,
    scale: int,
    output: PathLike,
    seed: int = 0,
    jpeg_quality: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    kept: list[Path] | None = None,
) -> tuple[Path, list[Path], list[tuple[Path, str]]]:
    """Writes the ``kind`` LR image (:func:`drn_tf.degrade.degrade`) of every HR image in
    ``hr_folder`` to ``output/LR_<kind>[_jpeg<q>]/X{scale}/<stem>x{scale}.png``, the benchmark
    layout (sub-folders of a plain folder are kept).

    Reproducible: an image's noise (``DN``) is seeded from ``seed`` and its path relative to
    the HR folder, so it does not depend on which other images there are. With
    ``output == hr_folder`` for a benchmark set, ``evaluate --lr-kind kind`` then reads them.

    Args:
        hr_folder: a benchmark set (its ``HR/`` is read) or a plain folder of HR images.
        kind: one of :data:`drn_tf.degrade.KINDS`.
        scale: integer factor, at least 2.
        output: the folder that receives the ``LR_*`` folder.
        seed: noise seed.
        jpeg_quality: also JPEG-compress each LR image at this quality (1..95).
        progress: show a tqdm progress bar.
        overwrite: replace LR files that exist; by default they are kept (and appended to
            ``kept`` when it is given).

    Returns:
        ``(lr_folder, written, skipped)``: the ``.../X{scale}`` folder, the files written in
        sorted HR order, and ``(path, reason)`` of the HR files skipped (unreadable, smaller
        than ``scale``, or with the same stem as an earlier file).

    Raises:
        ValueError: bad ``kind``/``scale``/``jpeg_quality``, no usable image, or an output
            inside a plain HR folder (its LR files would later be read as HR images).
    """
    if kind not in degrade.KINDS:
        raise ValueError(f"kind must be one of {', '.join(degrade.KINDS)}, got {kind!r}")
    scale = check_scale(scale, power_of_two=False)
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 95:
        raise ValueError(f"JPEG quality must be 1..95, got {jpeg_quality}")
    image_set = ImageSet.at(hr_folder)
    lr_folder = Path(output) / degrade.lr_folder_name(kind, jpeg_quality) / f"X{scale}"
    if lr_folder.resolve().is_relative_to(image_set.hr_dir.resolve()):
        raise ValueError(
            f"{output}: the LR folder would be inside the HR folder {image_set.hr_dir}, where it "
            "would be read as HR images; give a benchmark set (with HR/) or another output"
        )
    files = find_images(image_set.hr_dir)
    if not files:
        raise ValueError(f"no image files found in {image_set.hr_dir}")
    written: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    sources: dict[Path, Path] = {}
    kept_here: list[Path] = []
    for path in Bar(files, desc=f"LR_{kind} x{scale}", unit="img", disable=not progress):
        relative = path.relative_to(image_set.hr_dir)
        target = lr_folder / relative.parent / f"{path.stem}x{scale}.png"
        if target in sources:
            skipped.append((path, f"same name as {sources[target].name}: both would be {target}"))
            continue
        sources[target] = path
        if target.exists() and not overwrite:
            kept_here.append(target)
            continue
        try:
            hr = read_image(path)
        except ImageReadError as error:
            skipped.append((path, str(error).removeprefix(f"{path}: ")))
            continue
        if min(hr.shape[:2]) < scale:
            skipped.append((path, f"too small: {hr.shape[1]}x{hr.shape[0]} (WxH) for x{scale}"))
            continue
        # crc32, not hash(): Python salts str hashes per process.
        rng = np.random.default_rng([seed, zlib.crc32(relative.as_posix().encode())])
        write_image(target, degrade.degrade(hr, kind, scale, rng, jpeg_quality))
        written.append(target)
    if kept is not None:
        kept.extend(kept_here)
    if not written and not kept_here:
        shown = "; ".join(f"{p.name}: {r}" for p, r in skipped[:3])
        raise ValueError(f"no usable HR image in {image_set.hr_dir}: {shown}")
    return lr_folder, written, skipped
