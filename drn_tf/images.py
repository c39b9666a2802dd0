"""Image files as the library uses them: decode any common format to RGB uint8, write atomically,
find images in folders.

Framework-free (numpy and PIL); TensorFlow is imported only to decode 16-bit PNGs, which PIL
reads at 8 bits. Images kept as the user's file holds them (gray, alpha, 16 bits, ICC) are
:mod:`drn_tf.pictures`' job.
"""

from __future__ import annotations

import errno
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from drn_tf.files import atomic_path

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "find_images", "read_image", "write_image"]

PathLike = str | os.PathLike[str]
_T = TypeVar("_T")

#: File suffixes (lower case) that :func:`find_images` treats as images: every format that
#: :func:`read_image` reads, so a file given alone and the same file in a folder are alike.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

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
    """An image file is missing, unreadable, empty, not an image, truncated/corrupt or unsupported.

    The message always starts with the file's path.
    """


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
        ImageReadError: the file is missing or unreadable, empty (``"<path>: empty file"``), not
            an image, truncated or corrupt, or in a mode that cannot be converted. The pixel data
            is fully decoded (``Image.load``), so a truncated file fails here rather than later
            in training.
    """
    return _read(path, _decode)


def _read(path: PathLike, decode: Callable[[Image.Image, BinaryIO], _T]) -> _T:
    """Opens ``path`` and runs ``decode`` on the image PIL opened and the file, turning every
    failure into an :class:`ImageReadError` that starts with the path."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: {_missing_reason(path)}")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a regular file")
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; separates I/O errors from decoding
    except OSError as error:
        raise ImageReadError(f"{path}: cannot open file ({error})") from error
    with handle:
        # Zero bytes is a failed copy or download, not a broken encoder: say so, not "not an image".
        if os.fstat(handle.fileno()).st_size == 0:
            raise ImageReadError(f"{path}: empty file")
        try:
            with _open(handle, path) as img:
                return decode(img, handle)
        except ImageReadError as error:
            raise ImageReadError(f"{path}: {error}") from error
        except UnidentifiedImageError as error:
            raise ImageReadError(f"{path}: not an image file (PIL cannot identify it)") from error
        except Image.DecompressionBombError as error:
            raise ImageReadError(f"{path}: image too large ({error})") from error
        except MemoryError as error:
            raise ImageReadError(f"{path}: out of memory decoding the image") from error
        except Exception as error:  # decoders raise OSError, SyntaxError, struct.error, …
            raise ImageReadError(
                f"{path}: truncated or corrupt image data ({type(error).__name__}: {error})"
            ) from error


def _missing_reason(path: Path) -> str:
    """Why ``path``, which does not exist as far as ``Path.exists`` can tell, cannot be read."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop"
        if path.is_symlink():
            return f"file does not exist (broken symbolic link to {os.readlink(path)})"
    return "file does not exist"


# warnings.catch_warnings changes process-wide state, so one thread at a time (load_pyramids
# reads in a pool), and only around Image.open, which parses no more than the header.
_OPENING = threading.Lock()


def _open(handle: BinaryIO, path: Path) -> Image.Image:
    """``Image.open``, with PIL's warning about a very large image (a possible decompression
    bomb; its message names no file) given again naming the file and its size."""
    with _OPENING, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = Image.open(handle)
    for warning in caught:
        if issubclass(warning.category, Image.DecompressionBombWarning):
            width, height = img.size
            warnings.warn(
                f"{path}: very large image ({width}x{height}, {width * height / 1e6:.1f} "
                f"megapixels; PIL warns above {Image.MAX_IMAGE_PIXELS / 1e6:.1f}): decoding it "
                "takes much memory",
                warning.category,
                stacklevel=3,
            )
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return img


def _decode(img: Image.Image, handle: BinaryIO) -> np.ndarray:
    """Decode an opened image file to uint8 RGB; errors propagate to :func:`read_image`."""
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


def _png16_values(handle: BinaryIO) -> np.ndarray:
    """The samples of a 16-bit PNG, uint16 ``(H, W, C)`` with C = 1 (gray), 2 (gray + alpha),
    3 (RGB) or 4 (RGBA)."""
    # Imported here: TensorFlow takes seconds to import and only this rare path needs it.
    import tensorflow as tf

    handle.seek(0)
    try:
        return tf.io.decode_png(handle.read(), channels=0, dtype=tf.uint16).numpy()
    except tf.errors.OpError as error:
        raise ImageReadError(f"corrupt 16-bit PNG ({error.message})") from error


def _decode_png16(handle: BinaryIO) -> np.ndarray:
    values = _png16_values(handle).astype(np.float64) / 65535.0
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
    with atomic_path(path) as temp, open(temp, "xb") as handle:
        pil_image.save(handle, format=image_format, **options)


def find_images(
    root: PathLike, recursive: bool = True, unreadable: list[tuple[Path, str]] | None = None
) -> list[Path]:
    """List the image files under ``root`` by suffix (see :data:`IMAGE_EXTENSIONS`).

    Suffixes match case-insensitively (``.PNG``, ``.JPG``). Hidden files and folders (name starting
    with ``.``, e.g. macOS ``._x.png`` resource forks or ``.ipynb_checkpoints``) are skipped.
    Symlinked folders are followed once.

    Args:
        root: folder to search.
        recursive: also search sub-folders.
        unreadable: if given, ``(folder, reason)`` of every sub-folder that cannot be read
            is appended to it, and the search goes on; otherwise such a folder is an error.

    Returns:
        Sorted list of paths (``root`` joined with the relative path; not resolved).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is not a folder.
        OSError: ``root`` (or, without ``unreadable``, a sub-folder) cannot be read; the
            message starts with the folder.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder does not exist: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    found = []
    seen_dirs: set[str] = set()

    def cannot_read(error: OSError) -> None:
        folder = Path(error.filename)
        reason = f"cannot read the folder ({error.strerror or error})"
        if unreadable is None or folder == root:
            raise OSError(f"{folder}: {reason}") from error
        unreadable.append((folder, reason))

    for dirpath, dirnames, filenames in os.walk(root, onerror=cannot_read, followlinks=True):
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
