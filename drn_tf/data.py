"""Training and evaluation data for DRN: image decoding, LR pyramids, aligned patches.

DRN supervises every scale of its U-Net (see ``docs/drn-reference.md`` §1.3), so one training sample for
scale ``s = 2**p`` is a *pyramid* of aligned patches::

    LR_X{s} (network input), LR_X{s/2}, ..., LR_X2, HR

where each ``LR_Xk = imresize(modcrop(hr, s), 1 / k)`` is a MATLAB-bicubic downsample taken directly
from the HR image (not cascaded), exactly like the ``LR_bicubic/X{k}`` folders of the EDSR/DIV2K
packs that the official code reads.

Pipeline::

    find_images ─► read_image ─► load_pyramids (uint8, in memory, optional .npz cache)
                                      │
                                      ▼
                 make_train_dataset: random aligned crop + dihedral augmentation (TF ops) ─► batches

    load_eval_pairs ─► make_eval_dataset: full images, batch size 1

Everything here is framework-agnostic numpy/PIL except the two ``make_*_dataset`` functions.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from drn_tf import degrade
from drn_tf.files import atomic_path

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "Pyramid",
    "compute_pyramid_levels",
    "find_images",
    "load_eval_pairs",
    "load_pyramids",
    "make_eval_dataset",
    "make_train_dataset",
    "pyramid_factors",
    "read_image",
    "write_image",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: File suffixes (lower case) that :func:`find_images` treats as images. GIF is left out on
#: purpose: a 256-colour palette is a poor SR target. :func:`read_image` still reads GIFs.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

# Bump when the pyramid computation changes, so old cache files are not reused.
_CACHE_VERSION = "drn-pyramid-v1"
_EXIF_ORIENTATION = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# EXIF orientation -> numpy op that undoes it, same mapping as PIL.ImageOps.exif_transpose
# (2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE, 6 ROTATE_270, 7 TRANSVERSE,
# 8 ROTATE_90). Done in numpy so the 16-bit PNG path, which bypasses PIL's pixels, shares it.
_ORIENTATION_OPS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


class ImageReadError(ValueError):
    """An image file is missing, unreadable, not an image, truncated/corrupt or unsupported.

    The message always starts with the file's path.
    """


# --------------------------------------------------------------------------------------------
# Image I/O
# --------------------------------------------------------------------------------------------


def read_image(path: PathLike) -> np.ndarray:
    """Decode an image file into an RGB array.

    Any format and mode PIL decodes is accepted (PNG, JPEG, BMP, TIFF, WebP, GIF: first frame):

    * grayscale (``1``, ``L``), palette (``P``), CMYK, YCbCr, ... are converted to RGB;
    * transparency (``RGBA``, ``LA``, ``PA``, palette/``tRNS`` transparency) is *composited over
      white*, i.e. the image as a viewer shows it. Dropping alpha instead would expose whatever
      colour the encoder left under fully transparent pixels (often black or garbage);
    * 16-bit data (``I;16*`` grayscale, 16-bit PNGs of any colour type) is scaled to 8 bits with
      ``round(v * 255 / 65535)``. 16-bit PNGs are decoded with ``tf.io.decode_png`` because PIL
      keeps only the high byte of 48/64-bit RGB(A). Other 48-bit files (TIFF) get PIL's high byte,
      i.e. ``floor(v / 256)``, at most one level off. 32-bit ``I`` is treated as 16-bit data
      (clipped to 0..65535), ``F`` as 0..1 when its maximum is <= 1, else as 0..255 (clipped);
    * the EXIF orientation tag is applied, like ``PIL.ImageOps.exif_transpose``.

    ICC profiles are ignored (pixels are taken as sRGB).

    Args:
        path: image file.

    Returns:
        uint8 array of shape ``(H, W, 3)``, RGB, values 0..255, C-contiguous.

    Raises:
        ImageReadError: the file is missing or unreadable, not an image, truncated or corrupt, or in
            a mode that cannot be converted. The pixel data is fully decoded (``Image.load``), so a
            truncated file fails here rather than later in training.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file does not exist")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a regular file")
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; separates I/O errors from decoding
    except OSError as error:
        raise ImageReadError(f"{path}: cannot open file ({error})") from error
    with handle:
        try:
            array = _decode(handle)
        except ImageReadError as error:
            raise ImageReadError(f"{path}: {error}") from error
        except UnidentifiedImageError as error:
            raise ImageReadError(f"{path}: not an image file (PIL cannot identify it)") from error
        except Image.DecompressionBombError as error:
            raise ImageReadError(f"{path}: image too large ({error})") from error
        except Exception as error:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error...
            raise ImageReadError(
                f"{path}: truncated or corrupt image data ({type(error).__name__}: {error})"
            ) from error
    return array


def _decode(handle: BinaryIO) -> np.ndarray:
    """Decode an open image file to uint8 RGB; errors propagate to :func:`read_image`."""
    with Image.open(handle) as img:
        # Image.open parses only the header; load() decodes every pixel, so truncation shows here.
        img.load()
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        if img.format == "PNG" and _png_bit_depth(handle) == 16:
            array = _decode_png16(handle)
        else:
            array = _pil_to_rgb8(img)
    op = _ORIENTATION_OPS.get(int(orientation)) if isinstance(orientation, int) else None
    if op is not None:
        array = op(array)
    return np.ascontiguousarray(array)


def _png_bit_depth(handle: BinaryIO) -> int:
    # IHDR is always the first chunk: signature (8) + length (4) + type (4) + width + height (8).
    handle.seek(0)
    header = handle.read(26)
    if len(header) < 26 or not header.startswith(_PNG_SIGNATURE) or header[12:16] != b"IHDR":
        return 8
    return header[24]


def _decode_png16(handle: BinaryIO) -> np.ndarray:
    handle.seek(0)
    try:
        values = tf.io.decode_png(handle.read(), channels=0, dtype=tf.uint16).numpy()
    except tf.errors.OpError as error:
        raise ImageReadError(f"corrupt 16-bit PNG ({error.message})") from error
    values = values.astype(np.float64) / 65535.0
    channels = values.shape[-1]
    if channels in (2, 4):
        return _compose(values[..., :-1], values[..., -1])
    return _compose(values, None)


def _pil_to_rgb8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "I" or mode.startswith("I;16"):
        values = np.asarray(img).astype(np.float64)
        return _compose(np.clip(values, 0.0, 65535.0)[..., None] / 65535.0, None)
    if mode == "F":
        values = np.asarray(img).astype(np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        peak = 1.0 if values.size and values.max() <= 1.0 else 255.0
        return _compose(np.clip(values / peak, 0.0, 1.0)[..., None], None)
    if img.has_transparency_data:
        rgba = np.asarray(img.convert("RGBA")).astype(np.float64) / 255.0
        return _compose(rgba[..., :3], rgba[..., 3])
    try:
        # np.array, not asarray: PIL's array interface gives read-only memory.
        return np.array(img.convert("RGB"))
    except ValueError as error:
        raise ImageReadError(f"unsupported image mode {mode!r} ({error})") from error


def _compose(color: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Color (H, W, 1|3) and alpha (H, W), floats on 0..1 -> uint8 (H, W, 3) over white."""
    if alpha is not None:
        alpha = alpha[..., None]
        color = color * alpha + (1.0 - alpha)
    out = np.floor(color * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return out


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through :func:`~drn_tf.files.atomic_path`: readers (and concurrent
    writers of the same cache entry) never see a half-written file."""
    with atomic_path(path) as temp, open(temp, "xb") as handle:
        write(handle)


def write_image(path: PathLike, image: np.ndarray) -> None:
    """Write an RGB image atomically; the format follows the suffix (``.png``, ``.jpg``, ...).

    Args:
        path: destination; missing parent folders are created. An existing file is replaced only
            once the new one is complete.
        image: uint8 array of shape ``(H, W, 3)``, values 0..255.

    Raises:
        ValueError: wrong dtype/shape, or a suffix PIL cannot write.
    """
    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"{path}: unknown image file extension {path.suffix!r}")
    # PIL's JPEG/WebP default quality (75/80) visibly degrades SR outputs.
    options = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}.get(image_format, {})
    pil_image = Image.fromarray(np.ascontiguousarray(image))
    _atomic_write(path, lambda handle: pil_image.save(handle, format=image_format, **options))


def find_images(root: PathLike, recursive: bool = True) -> list[Path]:
    """List the image files under ``root`` by suffix (see :data:`IMAGE_EXTENSIONS`).

    Suffixes match case-insensitively (``.PNG``, ``.JPG``). Hidden files and folders (name starting
    with ``.``, e.g. macOS ``._x.png`` resource forks or ``.ipynb_checkpoints``) are skipped.
    Symlinked folders are followed once.

    Args:
        root: folder to search.
        recursive: also search sub-folders.

    Returns:
        Sorted list of paths (``root`` joined with the relative path; not resolved).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder does not exist: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    found = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        # Guard against symlink cycles.
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return sorted(found)


# --------------------------------------------------------------------------------------------
# Pyramids
# --------------------------------------------------------------------------------------------


def _check_scale(scale: int) -> int:
    if (
        isinstance(scale, bool)
        or int(scale) != scale
        or scale < 2
        or (int(scale) & (int(scale) - 1))
    ):
        raise ValueError(f"DRN scale must be a power of two >= 2, got {scale}")
    return int(scale)


def pyramid_factors(scale: int) -> tuple[int, ...]:
    """Downsampling factor of each pyramid level relative to HR, lowest resolution first.

    ``pyramid_factors(4) == (4, 2, 1)``, ``pyramid_factors(8) == (8, 4, 2, 1)``: level ``i`` has
    size ``HR / factors[i]``; the last level (factor 1) is the HR image.
    """
    scale = _check_scale(scale)
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


def _benchmark_lr_dirs(folder: Path, factors: Sequence[int]) -> dict[int, Path]:
    """``{k: folder/LR_bicubic/X{k}}`` for an EDSR-style benchmark folder, else ``{}``."""
    dirs = {k: folder / "LR_bicubic" / f"X{k}" for k in factors}
    return dirs if all(d.is_dir() for d in dirs.values()) else {}


def _cache_file(cache_dir: Path, path: Path, scale: int) -> Path:
    stat = path.stat()
    key = f"{_CACHE_VERSION}|{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{scale}"
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
        _atomic_write(cache_file, lambda handle: np.savez(handle, **arrays))
    except OSError as error:  # a read-only or full cache disk must not stop training
        logger.warning("could not write cache file %s (%s)", cache_file, error)


def _read_official_levels(
    hr_path: Path, hr_full: np.ndarray, hr: np.ndarray, lr_dirs: dict[int, Path]
) -> list[np.ndarray] | str | None:
    """Levels from ``LR_bicubic/X{k}/<stem>x{k}.png``; None if a file is missing, str if invalid.

    Official LR files are ``imresize(modcrop(hr, k), 1/k)``, i.e. ``floor(H/k) x floor(W/k)``. For
    the pyramid HR is modcropped to the larger ``s``, so each is cropped at the top-left to
    ``H_s / k``; the last LR row/column may then differ slightly from a recomputed level (MATLAB's
    replicate padding saw a slightly larger image), which is how the official code uses them too.
    """
    levels = []
    for factor, lr_dir in sorted(lr_dirs.items(), reverse=True):
        lr_path = lr_dir / f"{hr_path.stem}x{factor}.png"
        if not lr_path.is_file():
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
    lr_dirs: dict[int, Path],
) -> Pyramid | str:
    """One pyramid, or the reason the image is skipped."""
    try:
        hr_full = read_image(hr_path)
    except ImageReadError as error:
        return str(error)
    hr = degrade.modcrop(hr_full, scale)
    if hr.shape[0] < min_size or hr.shape[1] < min_size:
        return (
            f"too small: {hr.shape[1]}x{hr.shape[0]} (WxH, after modcrop to a multiple of "
            f"{scale}) < min_size {min_size}"
        )
    factors = pyramid_factors(scale)[:-1]
    levels: list[np.ndarray] | str | None = None
    if lr_dirs:
        try:
            levels = _read_official_levels(hr_path, hr_full, hr, lr_dirs)
        except ImageReadError as error:
            return f"official LR file unreadable: {error}"
        if isinstance(levels, str):
            return levels
        if levels is None:
            logger.info("%s: official LR files incomplete, computing the pyramid", hr_path)
    cache_file = None
    if levels is None and cache_dir is not None:
        cache_file = _cache_file(cache_dir, hr_path, scale)
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
) -> tuple[list[Pyramid], list[tuple[Path, str]]]:
    """Read HR images and build their LR pyramids (uint8, in memory).

    Each folder is either

    * an EDSR-style benchmark folder: ``HR/`` plus ``LR_bicubic/X{k}/<name>x{k}.png`` for every
      ``k`` in ``2, 4, ..., scale``. The official LR files are read, not recomputed (an image whose
      files are missing is computed instead). With ``HR/`` but not all ``X{k}`` folders, the
      images in ``HR/`` are used and all levels are computed; or
    * any other folder: every image under it (recursively, see :func:`find_images`) is an HR image
      and its levels are ``degrade.imresize(degrade.modcrop(hr, scale), 1 / k)``.

    Unreadable/corrupt images and images smaller than ``min_size`` in height or width (after
    modcrop) are skipped and reported, not fatal. Images are processed by a thread pool.

    Args:
        folders: one folder or a list of folders.
        scale: SR factor, a power of two (2, 4, 8, ...).
        min_size: smallest usable HR side, normally the training HR patch size.
        cache_dir: if given, computed LR levels are stored there as one ``.npz`` per image, keyed
            by the HR file's resolved path, mtime, size and ``scale``; a later call reads them back
            instead of resizing. Files are written atomically, so parallel runs may share it.
        progress: show a tqdm progress bar.
        num_workers: threads decoding and resizing images.

    Returns:
        ``(pyramids, skipped)``: the :class:`Pyramid` of every usable image, in folder order then
        sorted path order; and ``(path, reason)`` for every skipped image.

    Raises:
        FileNotFoundError / NotADirectoryError: a folder does not exist.
        ValueError: a folder has no usable image (the message names the folder and why).
    """
    scale = _check_scale(scale)
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("load_pyramids needs at least one folder")
    cache_path = Path(cache_dir) if cache_dir is not None else None

    jobs: list[tuple[int, Path, dict[int, Path]]] = []
    for index, folder in enumerate(folders):
        if not folder.exists():
            raise FileNotFoundError(f"training image folder does not exist: {folder}")
        hr_dir = folder / "HR"
        if hr_dir.is_dir():
            lr_dirs = _benchmark_lr_dirs(folder, pyramid_factors(scale)[:-1])
            if not lr_dirs:
                logger.info("%s: no complete LR_bicubic/X* set for x%d, computing", folder, scale)
            files = find_images(hr_dir)
        else:
            lr_dirs = {}
            files = find_images(folder)
        if not files:
            raise ValueError(
                f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {folder}"
            )
        jobs.extend((index, path, lr_dirs) for path in files)

    results: list[Pyramid | str | None] = [None] * len(jobs)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, num_workers))
    try:
        futures = {
            pool.submit(_build_pyramid, path, scale, min_size, cache_path, lr_dirs): position
            for position, (_, path, lr_dirs) in enumerate(jobs)
        }
        bar = tqdm(
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
    for (index, path, _), result in zip(jobs, results, strict=True):
        if isinstance(result, Pyramid):
            pyramids.append(result)
            per_folder_ok[index] += 1
        else:
            skipped.append((path, str(result)))
            per_folder_reasons[index].append(f"{path.name}: {result}")
    for folder, ok, reasons in zip(folders, per_folder_ok, per_folder_reasons, strict=True):
        if ok == 0:
            shown = "; ".join(reasons[:3]) + ("; ..." if len(reasons) > 3 else "")
            raise ValueError(
                f"no usable training image in {folder}: all {len(reasons)} image file(s) were "
                f"skipped (scale {scale}, min_size {min_size}): {shown}"
            )
    if skipped:
        logger.warning(
            "skipped %d of %d images (first: %s: %s)",
            len(skipped),
            len(jobs),
            skipped[0][0],
            skipped[0][1],
        )
    return pyramids, skipped


# --------------------------------------------------------------------------------------------
# tf.data pipelines
# --------------------------------------------------------------------------------------------


def _as_levels(pyramid: Pyramid | Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    return pyramid.levels if isinstance(pyramid, Pyramid) else tuple(pyramid)


def make_train_dataset(
    pyramids: Sequence[Pyramid] | Sequence[Sequence[np.ndarray]],
    scale: int,
    patch_size: int,
    batch_size: int,
    seed: int | None = None,
    augment: bool = True,
) -> tf.data.Dataset:
    """Infinite, shuffled dataset of aligned multi-scale training patches.

    Each element is ``(inputs, targets)``, the ``data`` a custom Keras ``train_step`` receives:

    * ``inputs``: ``LR_X{s}`` patches, float32 ``(B, P/s, P/s, 3)``;
    * ``targets``: a tuple ordered from the lowest resolution to HR,
      ``(LR_X{s/2}, ..., LR_X2, HR)``, each float32 ``(B, P/k, P/k, 3)``. For ``s = 4`` that is
      ``(LR_X2 (B, P/2, P/2, 3), HR (B, P, P, 3))``; for ``s = 8``, ``(LR_X4, LR_X2, HR)``; for
      ``s = 2``, ``(HR,)``.

    with ``B = batch_size`` and ``P = patch_size``. Values are on 0..255 (integers stored as
    float32; no normalisation, the model subtracts the mean itself). These are the model's
    primal targets ``SR_2x, ..., SR_sx`` and, shifted by one, the dual targets.

    Per sample: a random image (shuffled once per pass over the images), a random HR crop of
    ``P x P`` whose origin is a multiple of ``s`` and the matching ``P/k`` crop at ``origin/k`` in
    every level, then (``augment``) a random horizontal flip, vertical flip and transpose, each with
    p = 0.5 and identical for all levels. Cropping happens on uint8, before the float32 cast.

    The images are held in memory as uint8 (one dataset element per image, materialised once by
    ``.cache()``; this is a second copy besides ``pyramids``). They enter through
    ``Dataset.from_generator``, so the pipeline runs in this Python process (fine for
    ``MirroredStrategy`` and multi-worker training; not for tf.data service or remote TPU hosts).
    Randomness uses stateless ops fed from ``tf.data.Dataset.random``, so map functions hold no
    Python state and a fixed ``seed`` gives a reproducible stream. ``batch_size`` is the global
    batch: pass the dataset to ``model.fit`` (with ``steps_per_epoch``, it is infinite) or
    ``strategy.experimental_distribute_dataset``. Auto-sharding is set to DATA, which is correct
    for this repeated, randomly cropped stream on several workers.

    Args:
        pyramids: :class:`Pyramid` objects (or level tuples in the same order) for ``scale``.
        scale: SR factor, a power of two.
        patch_size: HR patch side ``P``, a multiple of ``scale``; every image must be at least this
            large (``load_pyramids(..., min_size=patch_size)`` ensures that).
        batch_size: samples per batch; the remainder is dropped, so batch shapes are static.
        seed: seed for shuffling, crops and flips; None for a fresh random stream.
        augment: apply the random flips/transpose.

    Returns:
        ``tf.data.Dataset`` of ``(inputs, targets)`` as above, prefetched.
    """
    scale = _check_scale(scale)
    factors = pyramid_factors(scale)
    if patch_size < scale or patch_size % scale:
        raise ValueError(
            f"patch_size must be a positive multiple of scale {scale}, got {patch_size}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    all_levels = [_as_levels(p) for p in pyramids]
    if not all_levels:
        raise ValueError("make_train_dataset needs at least one pyramid")
    for number, levels in enumerate(all_levels):
        name = getattr(pyramids[number], "path", f"pyramid {number}")
        # Re-validates raw level tuples; Pyramid objects already passed this check.
        Pyramid(path=Path(str(name)), scale=scale, levels=levels)
        height, width = levels[-1].shape[:2]
        if height < patch_size or width < patch_size:
            raise ValueError(f"{name}: HR {width}x{height} is smaller than patch_size {patch_size}")

    signature = tuple(tf.TensorSpec((None, None, 3), tf.uint8) for _ in factors)

    def generate():
        yield from all_levels

    images = tf.data.Dataset.from_generator(generate, output_signature=signature).cache()
    # buffer > number of images: the shuffle then reads past the end of the first pass, which lets
    # cache() finalise even if the consumer stops early (no "cache not fully read" warning).
    images = images.shuffle(len(all_levels) + 1, seed=seed, reshuffle_each_iteration=True)
    images = images.repeat()
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    samples = tf.data.Dataset.zip((images, seeds)).map(
        _make_crop_fn(factors, patch_size, augment),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=seed is not None,
    )
    dataset = samples.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _make_crop_fn(factors: Sequence[int], patch_size: int, augment: bool):
    scale = factors[0]

    def crop(levels: tuple[tf.Tensor, ...], seed: tf.Tensor):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(crop_seed, 2))
        hr_shape = tf.shape(levels[-1])
        # Origins are drawn in units of s HR pixels = one pixel of the smallest level, so every
        # level's origin origin_hr / k is an integer.
        y = tf.random.stateless_uniform(
            [], y_seed, minval=0, maxval=(hr_shape[0] - patch_size) // scale + 1, dtype=tf.int32
        )
        x = tf.random.stateless_uniform(
            [], x_seed, minval=0, maxval=(hr_shape[1] - patch_size) // scale + 1, dtype=tf.int32
        )
        flips = tf.random.stateless_uniform([3], flip_seed) < 0.5
        patches = []
        for level, factor in zip(levels, factors, strict=True):
            step = scale // factor
            size = patch_size // factor
            patch = tf.slice(level, tf.stack([y * step, x * step, 0]), [size, size, 3])
            if augment:
                patch = _dihedral(patch, flips)
            patches.append(tf.cast(patch, tf.float32))
        return patches[0], tuple(patches[1:])

    return crop


def _dihedral(patch: tf.Tensor, flips: tf.Tensor) -> tf.Tensor:
    """Horizontal flip, vertical flip, transpose, each if its flag is set (square patches)."""
    patch = tf.cond(flips[0], lambda: tf.reverse(patch, [1]), lambda: patch)
    patch = tf.cond(flips[1], lambda: tf.reverse(patch, [0]), lambda: patch)
    return tf.cond(flips[2], lambda: tf.transpose(patch, [1, 0, 2]), lambda: patch)


def load_eval_pairs(folder: PathLike, scale: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Full-image ``(name, lr, hr)`` pairs for evaluation at ``scale``.

    ``folder`` is a benchmark set (``HR/`` and optionally ``LR_bicubic/X{s}/<name>x{s}.png``, as
    in the EDSR pack) or a plain folder of HR images (searched recursively). HR is modcropped to
    a multiple of ``scale``; LR is the official file when present (a missing one is computed, with
    a warning), else ``imresize(hr, 1 / scale)``. Unlike training, unreadable images are an error:
    silently dropping one would change a benchmark's average.

    Args:
        folder: benchmark-set folder or image folder.
        scale: SR factor (any integer >= 2, e.g. 3 works too).

    Returns:
        List sorted by file path of ``(name, lr, hr)``: ``name`` is the HR file's stem (relative
        path without suffix for nested plain folders), ``lr`` uint8 ``(H/s, W/s, 3)``, ``hr`` uint8
        ``(H, W, 3)`` with H, W multiples of ``scale``.

    Raises:
        ImageReadError: an image cannot be read.
        ValueError: no images, an image smaller than ``scale``, or an official LR file whose size
            is not ``HR / scale``.
    """
    if isinstance(scale, bool) or int(scale) != scale or scale < 2:
        raise ValueError(f"scale must be an integer >= 2, got {scale}")
    scale = int(scale)
    folder = Path(folder)
    hr_dir = folder / "HR" if (folder / "HR").is_dir() else folder
    lr_dir = folder / "LR_bicubic" / f"X{scale}" if hr_dir != folder else None
    files = find_images(hr_dir)
    if not files:
        raise ValueError(f"no image files found in {hr_dir}")
    pairs = []
    for path in files:
        hr = degrade.modcrop(read_image(path), scale)
        if hr.shape[0] == 0 or hr.shape[1] == 0:
            raise ValueError(f"{path}: image smaller than scale {scale}")
        expected = (hr.shape[0] // scale, hr.shape[1] // scale, 3)
        lr_path = lr_dir / f"{path.stem}x{scale}.png" if lr_dir is not None else None
        if lr_path is not None and lr_path.is_file():
            lr = read_image(lr_path)
            if lr.shape != expected:
                raise ValueError(f"{lr_path}: shape {lr.shape}, expected {expected} (HR / {scale})")
        else:
            if lr_path is not None and lr_dir.is_dir():
                logger.warning("%s missing; computing it with imresize", lr_path)
            lr = degrade.imresize(hr, 1.0 / scale)
        name = path.relative_to(hr_dir).with_suffix("").as_posix()
        pairs.append((name, lr, np.ascontiguousarray(hr)))
    return pairs


def make_eval_dataset(folder: PathLike, scale: int) -> tf.data.Dataset:
    """Full-image evaluation dataset (see :func:`load_eval_pairs` for the pairing rules).

    Returns:
        ``tf.data.Dataset`` of ``(lr, hr)`` with batch size 1: ``lr`` float32
        ``(1, H/s, W/s, 3)``, ``hr`` float32 ``(1, H, W, 3)``, both on 0..255 with dynamic H and W,
        in sorted file order. It is finite (one pass over the set).
    """
    pairs = load_eval_pairs(folder, scale)

    def generate():
        for _, lr, hr in pairs:
            yield lr, hr

    spec = tf.TensorSpec((None, None, 3), tf.uint8)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=(spec, spec))
    # A known length lets Keras end validation without an "input ran out of data" warning.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(pairs)))
    dataset = dataset.map(lambda lr, hr: (tf.cast(lr, tf.float32), tf.cast(hr, tf.float32)))
    return dataset.batch(1).prefetch(tf.data.AUTOTUNE)
