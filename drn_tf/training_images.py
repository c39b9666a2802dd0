"""Training images in memory: HR images with their MATLAB-bicubic LR pyramids, and LR-only images.

DRN supervises every scale of its U-Net (``docs/drn-reference.md`` §1.3), so one training sample
for scale ``s = 2**p`` is a *pyramid* of aligned images::

    LR_X{s} (network input), LR_X{s/2}, ..., LR_X2, HR

where each ``LR_Xk = imresize(modcrop(hr, s), 1 / k)`` is a MATLAB-bicubic downsample taken
directly from the HR image (not cascaded), exactly like the ``LR_bicubic/X{k}`` folders of the
EDSR/DIV2K packs that the official code reads (:class:`drn_tf.image_sets.ImageSet` knows that
layout)::

    find_images ─► read_image ─► load_pyramids (uint8, in memory, optional .npz cache)
    find_images ─► read_image / sample_frames ─► load_lr_images (DRN-Adapt's unpaired LR)

Framework-free (numpy and PIL); :mod:`drn_tf.data` turns the results into ``tf.data`` pipelines.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from drn_tf import degrade
from drn_tf.files import atomic_path
from drn_tf.frames import VIDEO_EXTENSIONS, VideoReadError, find_videos, is_video, sample_frames
from drn_tf.image_sets import ImageSet
from drn_tf.images import IMAGE_EXTENSIONS, ImageReadError, PathLike, find_images, read_image
from drn_tf.progress import Bar
from drn_tf.scales import check_scale

__all__ = [
    "Pyramid",
    "compute_pyramid_levels",
    "load_lr_images",
    "load_pyramids",
    "pyramid_factors",
    "shard_files",
]

logger = logging.getLogger(__name__)

# Bump when the pyramid computation changes, so old cache files are not reused.
_CACHE_VERSION = "drn-pyramid-v1"


def pyramid_factors(scale: int) -> tuple[int, ...]:
    """Downsampling factor of each pyramid level relative to HR, lowest resolution first.

    ``pyramid_factors(4) == (4, 2, 1)``, ``pyramid_factors(8) == (8, 4, 2, 1)``: level ``i`` has
    size ``HR / factors[i]``; the last level (factor 1) is the HR image.
    """
    scale = check_scale(scale)
    factors = []
    k = scale
    while k >= 1:
        factors.append(k)
        k //= 2
    return tuple(factors)


@dataclasses.dataclass(frozen=True, eq=False)
class Pyramid:
    """One HR image and its aligned MATLAB-bicubic LR levels, all uint8 ``(h, w, 3)`` on 0..255.

    Attributes:
        path: the HR file it came from (informational).
        scale: the SR factor ``s`` (a power of two).
        levels: ``(LR_X{s}, LR_X{s/2}, ..., LR_X2, HR)``, lowest resolution first, the same order
            as the training targets. HR is modcropped to a multiple of ``s`` (``(H, W)``), and level
            ``i`` has shape ``(H / f, W / f, 3)`` with ``f = pyramid_factors(s)[i]``.
    """

    path: Path
    scale: int
    levels: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        factors = pyramid_factors(self.scale)
        if len(self.levels) != len(factors):
            raise ValueError(
                f"{self.path}: scale {self.scale} needs {len(factors)} levels, "
                f"got {len(self.levels)}"
            )
        height, width = self.levels[-1].shape[:2]
        if height % self.scale or width % self.scale:
            raise ValueError(f"{self.path}: HR {height}x{width} is not a multiple of {self.scale}")
        for level, factor in zip(self.levels, factors, strict=True):
            expected = (height // factor, width // factor, 3)
            if level.dtype != np.uint8 or level.shape != expected:
                raise ValueError(
                    f"{self.path}: level x{factor} must be uint8 {expected}, "
                    f"got {level.dtype} {level.shape}"
                )

    @property
    def hr(self) -> np.ndarray:
        """The modcropped HR image, uint8 ``(H, W, 3)``."""
        return self.levels[-1]

    @property
    def lr(self) -> np.ndarray:
        """The network input ``LR_X{scale}``, uint8 ``(H / s, W / s, 3)``."""
        return self.levels[0]

    def level(self, factor: int) -> np.ndarray:
        """The level downsampled by ``factor`` (1 = HR, ``scale`` = network input)."""
        return self.levels[pyramid_factors(self.scale).index(factor)]


def compute_pyramid_levels(hr: np.ndarray, scale: int) -> tuple[np.ndarray, ...]:
    """All pyramid levels of one HR image, computed directly from it (not cascaded).

    Args:
        hr: uint8 ``(H, W, 3)`` HR image (any size; modcropped here).
        scale: SR factor, a power of two.

    Returns:
        ``(imresize(hr_m, 1/s), ..., imresize(hr_m, 1/2), hr_m)`` with ``hr_m = modcrop(hr, s)``,
        all uint8.
    """
    hr = np.ascontiguousarray(degrade.modcrop(hr, scale))
    levels = []
    for factor in pyramid_factors(scale)[:-1]:
        level = degrade.imresize(hr, 1.0 / factor)
        expected = (hr.shape[0] // factor, hr.shape[1] // factor)
        if level.shape[:2] != expected:  # guards against a float rounding surprise in ceil(H/k)
            raise AssertionError(f"imresize gave {level.shape[:2]}, expected {expected}")
        levels.append(level)
    return (*levels, hr)


def _cache_file(cache_dir: Path, path: Path, scale: int, resize: float) -> Path:
    stat = path.stat()
    key = f"{_CACHE_VERSION}|{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{scale}"
    if resize != 1:  # the original's key stays as it was: existing caches remain valid
        key += f"|resize {resize!r}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return cache_dir / f"{path.stem}-{digest}.npz"


def _read_cached_levels(
    cache_file: Path, hr: np.ndarray, factors: Sequence[int]
) -> list[np.ndarray] | None:
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as archive:
            levels = [archive[f"x{k}"] for k in factors]
    except Exception as error:  # noqa: BLE001 - a bad cache entry is just recomputed
        logger.warning("ignoring unreadable cache file %s (%s)", cache_file, error)
        return None
    for level, factor in zip(levels, factors, strict=True):
        expected = (hr.shape[0] // factor, hr.shape[1] // factor, 3)
        if level.dtype != np.uint8 or level.shape != expected:
            logger.warning(
                "ignoring cache file %s: x%d is not uint8 %s", cache_file, factor, expected
            )
            return None
    return levels


def _write_cached_levels(
    cache_file: Path, levels: Sequence[np.ndarray], factors: Sequence[int]
) -> None:
    arrays = {f"x{k}": level for k, level in zip(factors, levels, strict=True)}
    try:
        # Atomic, so parallel runs sharing the cache never read a half-written entry.
        with atomic_path(cache_file) as temp, open(temp, "xb") as handle:
            np.savez(handle, **arrays)
    except OSError as error:  # a read-only or full cache disk must not stop training
        logger.warning("could not write cache file %s (%s)", cache_file, error)


def _read_official_levels(
    hr_path: Path, hr_full: np.ndarray, hr: np.ndarray, image_set: ImageSet, scale: int
) -> list[np.ndarray] | str | None:
    """Levels from the set's official LR files; None if one is missing, str if one is invalid.

    Official LR files are ``imresize(modcrop(hr, k), 1/k)``, i.e. ``floor(H/k) x floor(W/k)``. For
    the pyramid HR is modcropped to the larger ``s``, so each is cropped at the top-left to
    ``H_s / k``; the last LR row/column may then differ slightly from a recomputed level (MATLAB's
    replicate padding saw a slightly larger image), which is how the official code uses them too.
    """
    levels = []
    for factor in pyramid_factors(scale)[:-1]:
        lr_path = image_set.official_lr(hr_path, factor)
        if lr_path is None:
            return None
        lr = read_image(lr_path)
        full = (hr_full.shape[0] // factor, hr_full.shape[1] // factor)
        if lr.shape[:2] != full:
            return (
                f"official {lr_path} is {lr.shape[1]}x{lr.shape[0]} (WxH), expected "
                f"{full[1]}x{full[0]} = floor(HR / {factor})"
            )
        levels.append(np.ascontiguousarray(lr[: hr.shape[0] // factor, : hr.shape[1] // factor]))
    return levels


def _build_pyramid(
    hr_path: Path,
    scale: int,
    min_size: int,
    cache_dir: Path | None,
    image_set: ImageSet,
    resize: float = 1.0,
) -> Pyramid | str:
    """One pyramid (of the HR image MATLAB-bicubic resized by ``resize`` first, when not 1),
    or the reason the image is skipped."""
    try:
        hr_full = read_image(hr_path)
    except ImageReadError as error:
        return str(error).removeprefix(f"{hr_path}: ")  # the reason goes beside the path
    copy = ""
    if resize != 1:
        hr_full, copy = degrade.imresize(hr_full, resize), f"copy ×{resize:g}: "
    hr = degrade.modcrop(hr_full, scale)
    if hr.shape[0] < min_size or hr.shape[1] < min_size:
        return (
            f"{copy}too small: {hr.shape[1]}x{hr.shape[0]} (WxH, after modcrop to a multiple "
            f"of {scale}) < min_size {min_size}"
        )
    factors = pyramid_factors(scale)[:-1]
    levels: list[np.ndarray] | str | None = None
    if resize == 1:  # a set's official LR files are of the original image only
        try:
            levels = _read_official_levels(hr_path, hr_full, hr, image_set, scale)
        except ImageReadError as error:
            return f"official LR file unreadable: {error}"
    if isinstance(levels, str):
        return levels
    cache_file = None
    if levels is None and cache_dir is not None:
        cache_file = _cache_file(cache_dir, hr_path, scale, resize)
        levels = _read_cached_levels(cache_file, hr, factors)
    if levels is None:
        levels = list(compute_pyramid_levels(hr, scale)[:-1])
        if cache_file is not None:
            _write_cached_levels(cache_file, levels, factors)
    return Pyramid(path=hr_path, scale=scale, levels=(*levels, np.ascontiguousarray(hr)))


def load_pyramids(
    folders: PathLike | Sequence[PathLike],
    scale: int,
    min_size: int,
    cache_dir: PathLike | None = None,
    progress: bool = True,
    num_workers: int = 2,
    shard: tuple[int, int] | None = None,
    scale_augment: Sequence[float] = (),
) -> tuple[list[Pyramid], list[tuple[Path, str]]]:
    """Read HR images and build their LR pyramids (uint8, in memory).

    Each folder is either

    * an EDSR-style benchmark folder: ``HR/`` plus ``LR_bicubic/X{k}/<name>x{k}.png`` for every
      ``k`` in ``2, 4, ..., scale`` (see :class:`ImageSet`). The official LR files are read, not
      recomputed; all levels of an image missing any of its files are computed instead; or
    * any other folder: every image under it (recursively, see :func:`find_images`) is an HR image
      and its levels are ``degrade.imresize(degrade.modcrop(hr, scale), 1 / k)``.

    Unreadable/corrupt images and images smaller than ``min_size`` in height or width (after
    modcrop) are skipped, not fatal, and returned with the reason (nothing is printed or
    logged: the caller tells the user). Images are processed by a thread pool.

    Args:
        folders: one folder or a list of folders.
        scale: SR factor, a power of two (2, 4, 8, ...).
        min_size: smallest usable HR side, normally the training HR patch size.
        cache_dir: if given, computed LR levels are stored there as one ``.npz`` per image, keyed
            by the HR file's resolved path, mtime, size and ``scale``; a later call reads them back
            instead of resizing. Files are written atomically, so parallel runs may share it.
        progress: show a tqdm progress bar.
        num_workers: threads decoding and resizing images.
        shard: ``(count, index)`` to read only files ``index, index + count, …`` of all the
            folders' files in the order below (:func:`shard_files`), copies included.
        scale_augment: resize factors in (0, 1): each HR image also joins as a MATLAB-bicubic
            copy resized by each factor (scale augmentation, as VDSR and LapSRN trained), with
            its own pyramid; a copy under ``min_size`` is skipped like any image. The copies are
            exactly those of saving ``imresize(hr, factor)`` as PNG and listing their folders
            after the originals.

    Returns:
        ``(pyramids, skipped)``: the :class:`Pyramid` of every usable image, in folder order then
        sorted path order, then the copies of each factor in the same order (a copy's ``path``
        is its original's); and ``(path, reason)`` for every skipped image or copy.

    Raises:
        FileNotFoundError / NotADirectoryError: a folder does not exist.
        ValueError: a folder has no usable image (the message names the folder and why), or
            there are fewer files than ``shard``'s count.
    """
    scale = check_scale(scale)
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("load_pyramids needs at least one folder")
    cache_path = Path(cache_dir) if cache_dir is not None else None

    jobs: list[tuple[int, Path, ImageSet, float]] = []
    for index, folder in enumerate(folders):
        if not folder.exists():
            raise FileNotFoundError(f"training image folder does not exist: {folder}")
        image_set = ImageSet.at(folder)
        files = find_images(image_set.hr_dir)
        if not files:
            raise ValueError(
                f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {folder}"
            )
        jobs.extend((index, path, image_set, 1.0) for path in files)
    jobs += [(*job[:3], factor) for factor in scale_augment for job in jobs]
    jobs = shard_files(jobs, shard, "training image", folders)

    results: list[Pyramid | str | None] = [None] * len(jobs)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, num_workers))
    try:
        futures = {
            pool.submit(
                _build_pyramid, path, scale, min_size, cache_path, image_set, resize
            ): position
            for position, (_, path, image_set, resize) in enumerate(jobs)
        }
        bar = Bar(
            concurrent.futures.as_completed(futures),
            total=len(futures),
            desc=f"x{scale} pyramids",
            unit="img",
            disable=not progress,
        )
        for future in bar:
            results[futures[future]] = future.result()
    finally:
        # On Ctrl-C or an unexpected error, drop the queued images instead of decoding them all.
        pool.shutdown(wait=True, cancel_futures=True)

    pyramids: list[Pyramid] = []
    skipped: list[tuple[Path, str]] = []
    per_folder_ok = [0] * len(folders)
    per_folder_reasons: list[list[str]] = [[] for _ in folders]
    for (index, path, _, _), result in zip(jobs, results, strict=True):
        if isinstance(result, Pyramid):
            pyramids.append(result)
            per_folder_ok[index] += 1
        else:
            skipped.append((path, str(result)))
            per_folder_reasons[index].append(f"{path.name}: {result}")
    for folder, ok, reasons in zip(folders, per_folder_ok, per_folder_reasons, strict=True):
        if ok == 0 and reasons:  # no reasons: none of the folder's files is in this shard
            shown = "; ".join(reasons[:3]) + ("; ..." if len(reasons) > 3 else "")
            raise ValueError(
                f"no usable training image in {folder}: all {len(reasons)} image file(s) were "
                f"skipped (scale {scale}, min_size {min_size}): {shown}"
            )
    # Not logged here: the caller names each skipped file once (`drn-tf train` prints a line
    # for each, and its count in "training on N images (M skipped)"); a summary logged here
    # too said the same twice.
    return pyramids, skipped


def shard_files(files: list, shard: tuple[int, int] | None, what: str, folders) -> list:
    """``files[index::count]`` for ``shard = (count, index)`` (all of them for ``None``): on a
    cluster of ``count`` workers, worker ``index``'s share, disjoint from the others'.

    Raises:
        ValueError: fewer files than ``count``, so some worker would have none; names
            ``folders`` and what they hold (``what``).
    """
    if shard is None:
        return files
    count, index = shard
    if len(files) < count:
        raise ValueError(
            f"{', '.join(map(str, folders))}: {len(files)} {what} file(s) for {count} workers; "
            "each worker reads its own share of the files and needs at least one"
        )
    return files[index::count]


def load_lr_images(
    folders: PathLike | Sequence[PathLike],
    min_size: int,
    progress: bool = False,
    shard: tuple[int, int] | None = None,
    frames_per_video: int = 16,
) -> tuple[list[tuple[Path, np.ndarray]], list[tuple[Path, str]]]:
    """Reads LR-only images (no HR: DRN-Adapt's unpaired data) of any size and format.

    Every image under each folder (recursively, :func:`find_images`) is one LR image; so is
    each of ``frames_per_video`` frames spread over every video file, given itself or found
    in a folder (:func:`drn_tf.frames.sample_frames`; a frame's path is
    ``clip.mp4/frame_000012``). As for :func:`load_pyramids`, unreadable files and images
    smaller than ``min_size`` in height or width are skipped and returned, not fatal.

    Args:
        folders: one folder or video file, or a list of them.
        min_size: smallest usable side, normally the LR patch size (HR patch / scale).
        progress: show a tqdm progress bar.
        shard: ``(count, index)``: read only this share of the files, as :func:`load_pyramids`.
        frames_per_video: frames sampled from each video.

    Returns:
        ``(images, skipped)``: ``(path, uint8 (h, w, 3))`` of every usable image, in folder then
        sorted path order; ``(path, reason)`` of every skipped one.

    Raises:
        FileNotFoundError / NotADirectoryError: a folder does not exist.
        ValueError: a folder has no usable image (the message names the folder and why), or
            there are fewer files than ``shard``'s count.
    """
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    folders = [Path(f) for f in folders]
    listed = []
    for index, folder in enumerate(folders):
        files = [folder] if folder.is_file() and is_video(folder) else []
        files = files or find_images(folder) + find_videos(folder)
        if not files:
            suffixes = ", ".join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))
            raise ValueError(f"no image or video files ({suffixes}) in {folder}")
        listed += [(index, path) for path in files]
    listed = shard_files(listed, shard, "LR-only image", folders)
    images: list[tuple[Path, np.ndarray]] = []
    skipped: list[tuple[Path, str]] = []
    for index, folder in enumerate(folders):
        files = [path for owner, path in listed if owner == index]
        if not files:  # none of its files is in this shard
            continue
        reasons, found = [], len(images)
        for path in Bar(files, desc=f"LR images {folder.name}", unit="img", disable=not progress):
            try:
                if is_video(path):
                    read = sample_frames(path, frames_per_video)
                else:
                    read = [(path, read_image(path))]
            except (ImageReadError, VideoReadError) as error:
                reasons.append((path, str(error).removeprefix(f"{path}: ")))
                continue
            for name, image in read:
                if min(image.shape[:2]) < min_size:
                    height, width = image.shape[:2]
                    reasons.append(
                        (name, f"too small: {width}x{height} (WxH) < min_size {min_size}")
                    )
                    continue
                images.append((name, image))
        if len(images) == found:
            shown = "; ".join(f"{p.name}: {r}" for p, r in reasons[:3])
            raise ValueError(
                f"no usable LR image in {folder}: all {len(files)} skipped (min_size "
                f"{min_size}): {shown}{'; ...' if len(reasons) > 3 else ''}"
            )
        skipped += reasons
    return images, skipped
