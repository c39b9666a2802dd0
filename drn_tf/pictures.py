"""Pictures: an image file as the user's file holds it (gray or colour, alpha, 8 or 16 bits, ICC
profile), read for upscaling and written back the same way.

:func:`load_picture` keeps what :func:`drn_tf.images.read_image` flattens to 8-bit RGB; a 16-bit
colour TIFF is read by this module's own strip reader (uncompressed, LZW or Deflate), and
:func:`save_picture` writes PNG and 16-bit colour TIFF with its own writers, a block of rows at
a time. Framework-free (numpy and PIL), apart from 16-bit PNG decoding (see
:mod:`drn_tf.images`).
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from drn_tf.files import atomic_path
from drn_tf.images import (
    _EXIF_ORIENTATION,
    _ORIENTATION_OPS,
    _PNG_SIGNATURE,
    ImageReadError,
    PathLike,
    _png16_values,
    _png_bit_depth,
    _read,
)

__all__ = ["FORMAT_SUFFIXES", "Picture", "load_picture", "save_picture"]


@dataclasses.dataclass
class Picture:
    """An image file's pixels and colour profile, as :func:`load_picture` reads them.

    ``pixels`` is ``(H, W, C)``, uint8 or uint16 (the file's bit depth), with C = 1 (gray),
    2 (gray + alpha), 3 (RGB) or 4 (RGBA), EXIF orientation applied. ``icc_profile`` is the
    embedded profile (bytes) or None; it describes ``pixels``' colours and is written back.
    ``frames`` counts the file's frames or pages (animated GIF/WebP, multi-page TIFF);
    ``pixels`` is the first.
    """

    pixels: np.ndarray
    icc_profile: bytes | None = None
    frames: int = 1


#: Output formats of :func:`save_picture` and the file suffix each gets.
FORMAT_SUFFIXES = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif"}

# PIL mode -> the mode it is read as (None: kept). Palette and CMYK become RGB(A): a palette
# is a poor target for new detail, and PNG/WebP hold no CMYK.
_PICTURE_MODES = {
    "1": "L",
    "P": None,  # RGB or RGBA, by whether the palette has transparency
    "PA": "RGBA",
    "La": "LA",
    "RGBa": "RGBA",
    "RGBX": "RGB",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
}


def load_picture(path: PathLike) -> Picture:
    """Reads an image file without flattening it: gray stays gray, alpha and 16 bits are kept.

    PNG, JPEG, BMP, TIFF, WebP, GIF (first frame) in any mode: bilevel and gray → 1 channel,
    gray + alpha → 2, palette → RGB or RGBA (with its transparency), CMYK → RGB (converted to
    sRGB through the file's ICC profile when it has one), 16-bit PNG and TIFF → uint16 (a 16-bit
    TIFF in colour is read by this module's own strip reader: uncompressed, LZW or Deflate,
    as cameras and scanners write them). The EXIF orientation is applied.

    Raises:
        ImageReadError: as :func:`read_image` (the message starts with the path).
    """
    return _read(path, _decode_picture)


def _decode_picture(img: Image.Image, handle: BinaryIO) -> Picture:
    orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    icc = img.info.get("icc_profile") or None
    frames = getattr(img, "n_frames", 1)
    if img.format == "PNG" and _png_bit_depth(handle) == 16:
        img.load()  # checks the whole file before TensorFlow decodes it
        pixels = _png16_values(handle)
    elif img.format == "TIFF" and img.mode in ("RGB", "RGBA", "RGBX") and _tiff16(img):
        pixels = _tiff16_values(img, handle)
    else:
        img.load()  # Image.open parses only the header: truncation shows here
        pixels, icc = _pil_pixels(img, icc)
    op = _ORIENTATION_OPS.get(int(orientation)) if isinstance(orientation, int) else None
    if op is not None:
        pixels = op(pixels)
    return Picture(np.ascontiguousarray(pixels), icc, frames)


def _pil_pixels(img: Image.Image, icc: bytes | None) -> tuple[np.ndarray, bytes | None]:
    mode = img.mode
    if mode == "I" or mode.startswith("I;16"):
        pixels = np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
    elif mode == "F":
        values = np.nan_to_num(np.asarray(img, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        peak = 1.0 if values.size and values.max() <= 1.0 else 255.0
        pixels = np.floor(np.clip(values / peak, 0, 1) * 65535 + 0.5).astype(np.uint16)
    else:
        if mode == "CMYK" and icc:
            img, icc = _cmyk_to_srgb(img, icc)
        target = _PICTURE_MODES.get(mode, mode)
        if mode == "P" or (mode in ("L", "RGB") and "transparency" in img.info):
            gray = mode == "L"
            target = ("LA" if gray else "RGBA") if img.has_transparency_data else target or "RGB"
        if target not in ("L", "LA", "RGB", "RGBA"):
            raise ImageReadError(f"unsupported image mode {mode!r}")
        if target != mode:
            if mode in ("CMYK", "LAB", "HSV", "YCbCr"):
                icc = None  # the profile described the old colour space
            img = img.convert(target)
        pixels = np.array(img)  # np.array, not asarray: PIL's buffer is read-only
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return pixels, icc


def _cmyk_to_srgb(img: Image.Image, icc: bytes) -> tuple[Image.Image, bytes | None]:
    """A CMYK image → sRGB through its embedded profile (PIL's own CMYK → RGB ignores it)."""
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        converted = ImageCms.profileToProfile(img, source, srgb, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img, None  # an unusable profile: PIL's plain conversion, no profile written
    return converted, srgb.tobytes()


def _tiff16(img: Image.Image) -> bool:
    bits = img.tag_v2.get(258, (8,))
    return all(b == 16 for b in (bits if isinstance(bits, tuple) else (bits,)))


# TIFF tags read by the strip reader and written by the writer.
_TIFF_COMPRESSION, _TIFF_PREDICTOR, _TIFF_STRIP_OFFSETS = 259, 317, 273
_TIFF_STRIP_BYTES, _TIFF_ROWS_PER_STRIP, _TIFF_PLANAR, _TIFF_SAMPLES = 279, 278, 284, 277
_TIFF_ICC = 34675


def _tiff16_values(img: Image.Image, handle: BinaryIO) -> np.ndarray:
    """The uint16 samples of a 16-bit colour TIFF (PIL keeps only their high byte)."""
    tags = img.tag_v2
    width, height = img.size
    channels = int(tags.get(_TIFF_SAMPLES, 3))
    compression = int(tags.get(_TIFF_COMPRESSION, 1))
    decompress = {1: bytes, 5: _lzw_decode, 8: zlib.decompress, 32946: zlib.decompress}
    if compression not in decompress or _TIFF_STRIP_OFFSETS not in tags:
        raise ImageReadError(
            f"16-bit TIFF with compression {compression} or in tiles is not supported "
            "(uncompressed, LZW and Deflate strips are); save it as a 16-bit PNG"
        )
    if int(tags.get(_TIFF_PLANAR, 1)) != 1:
        raise ImageReadError("16-bit TIFF with separate colour planes is not supported")
    rows = int(tags.get(_TIFF_ROWS_PER_STRIP, height))
    dtype = np.dtype(np.uint16).newbyteorder("<" if tags._endian == "<" else ">")
    parts = []
    for offset, count in zip(tags[_TIFF_STRIP_OFFSETS], tags[_TIFF_STRIP_BYTES], strict=True):
        handle.seek(offset)
        data = decompress[compression](handle.read(count))
        strip_rows = min(rows, height - rows * len(parts))
        size = strip_rows * width * channels
        if len(data) < 2 * size:
            raise ImageReadError("truncated or corrupt 16-bit TIFF strip")
        parts.append(np.frombuffer(data, dtype, size).reshape(strip_rows, width, channels))
    pixels = np.concatenate(parts).astype(np.uint16)
    if int(tags.get(_TIFF_PREDICTOR, 1)) == 2:  # horizontal differencing, modulo 2^16
        pixels = np.cumsum(pixels, axis=1, dtype=np.uint16)
    if pixels.shape[0] != height:
        raise ImageReadError("truncated 16-bit TIFF (missing strips)")
    return pixels[..., :4] if img.mode != "RGBX" else pixels[..., :3]


def _lzw_decode(data: bytes) -> bytes:
    """TIFF's LZW (MSB-first codes of 9-12 bits, "early change"), for 16-bit TIFFs."""
    out = bytearray()
    table = [bytes([i]) for i in range(256)] + [b"", b""]  # 256 clear, 257 end
    width, buffer, held, previous = 9, 0, 0, b""
    for byte in data:
        buffer, held = (buffer << 8) | byte, held + 8
        while held >= width:
            held -= width
            code = (buffer >> held) & ((1 << width) - 1)
            buffer &= (1 << held) - 1
            if code == 256:
                del table[258:]
                width, previous = 9, b""
                continue
            if code == 257:
                return bytes(out)
            if code < len(table):
                entry = table[code]
                if previous:
                    table.append(previous + entry[:1])
            elif previous:
                entry = previous + previous[:1]
                table.append(entry)
            else:
                raise ImageReadError("corrupt LZW data in a 16-bit TIFF")
            out += entry
            previous = entry
            if len(table) >= (1 << width) - 1 and width < 12:
                width += 1
    return bytes(out)


def save_picture(path: PathLike, picture: Picture, image_format: str | None = None) -> list[str]:
    """Writes ``picture`` atomically, keeping what the format can hold.

    Args:
        path: destination; missing parent folders are created, and an existing file is
            replaced only once the new one is complete.
        picture: pixels ``(H, W, C)`` uint8 or uint16, C = 1 (gray), 2 (gray + alpha), 3, 4.
        image_format: ``png``, ``jpg``, ``webp`` or ``tiff``; by default from the suffix.

    PNG and TIFF keep everything (PNG and 16-bit colour TIFF through this module's writers,
    which need no copy of the image). JPEG and WebP hold 8 bits, so
    16-bit samples are rounded to 8 (``round(v / 257)``); JPEG has no alpha, so transparent
    images are composited over white. The ICC profile is embedded in every format.

    Returns:
        Notes on what the format could not hold (empty when nothing was lost).

    Raises:
        ValueError: wrong pixels, or a suffix or format that is not an image format.
    """
    path = Path(path)
    pixels = np.asarray(picture.pixels)
    if (
        pixels.ndim != 3
        or pixels.shape[-1] not in (1, 2, 3, 4)
        or pixels.dtype
        not in (
            np.uint8,
            np.uint16,
        )
    ):
        raise ValueError(
            f"expected uint8/uint16 (H, W, 1-4) pixels, got {pixels.dtype} {pixels.shape}"
        )
    if image_format is None:
        image_format = Image.registered_extensions().get(path.suffix.lower())
        if image_format is None:
            raise ValueError(f"{path}: unknown image file extension {path.suffix!r}")
    else:
        if image_format not in FORMAT_SUFFIXES:
            raise ValueError(
                f"format must be one of {', '.join(FORMAT_SUFFIXES)}, got {image_format!r}"
            )
        image_format = {"jpg": "JPEG", "tiff": "TIFF"}.get(image_format, image_format.upper())
    notes = []
    if pixels.dtype == np.uint16 and image_format not in ("PNG", "TIFF"):
        notes.append(f"{image_format} holds 8 bits: 16-bit samples rounded to 8")
        pixels = np.floor(pixels / 257.0 + 0.5).astype(np.uint8)
    if pixels.shape[-1] in (2, 4) and image_format in ("JPEG", "BMP"):
        notes.append(f"{image_format} has no alpha: composited over white")
        alpha = pixels[..., -1:].astype(np.float64) / 255.0
        pixels = np.floor(pixels[..., :-1] * alpha + 255.0 * (1 - alpha) + 0.5).astype(np.uint8)
    icc = picture.icc_profile
    with atomic_path(path) as temp, open(temp, "xb") as handle:
        if image_format == "PNG":
            _write_png(handle, pixels, icc)
        elif pixels.dtype == np.uint16 and pixels.shape[-1] > 1:
            _write_tiff16(handle, pixels, icc)
        else:
            # 2-D uint16 is PIL's I;16, (H, W, 2) uint8 its LA.
            image = Image.fromarray(
                np.ascontiguousarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels)
            )
            # PIL's JPEG/WebP default quality (75/80) visibly degrades SR outputs.
            options = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}.get(image_format, {})
            if image_format == "TIFF":
                options = {"compression": "tiff_deflate"}
            if icc:
                options["icc_profile"] = icc
            image.save(handle, format=image_format, **options)
    return notes


def _write_png(handle: BinaryIO, pixels: np.ndarray, icc: bytes | None) -> None:
    """A PNG of uint8/uint16 ``(H, W, C)`` pixels (C = 1..4), written in blocks of rows, so the
    memory it needs is one block, not a copy of the image (PIL holds RGB in 4 bytes a pixel:
    768 MB for a 16000x12000 output). The "Sub" filter on every row and zlib level 3: within
    a few percent of PIL's file size on photos, several times faster."""
    height, width, channels = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8

    def chunk(kind: bytes, body: bytes) -> None:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        handle.write(struct.pack(">I", len(body)) + kind + body + crc)

    handle.write(_PNG_SIGNATURE)
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]  # gray, gray + alpha, RGB, RGBA
    chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0))
    if icc:
        chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    compressor = zlib.compressobj(3)
    step = depth // 8 * channels  # bytes per pixel: the Sub filter's distance
    for y in range(0, height, 64):
        block = np.ascontiguousarray(pixels[y : y + 64], ">u2" if depth == 16 else np.uint8)
        rows = block.view(np.uint8).reshape(len(block), -1)
        filtered = np.empty((len(rows), rows.shape[1] + 1), np.uint8)
        filtered[:, 0] = 1  # filter type Sub: each byte minus the one a pixel before, mod 256
        filtered[:, 1 : step + 1] = rows[:, :step]
        np.subtract(rows[:, step:], rows[:, :-step], out=filtered[:, step + 1 :])
        data = compressor.compress(filtered.tobytes())
        if data:
            chunk(b"IDAT", data)
    chunk(b"IDAT", compressor.flush())
    chunk(b"IEND", b"")


def _write_tiff16(handle: BinaryIO, pixels: np.ndarray, icc: bytes | None) -> None:
    """A little-endian, Deflate-compressed, striped TIFF of uint16 ``(H, W, C)`` pixels. Gray +
    alpha is written as RGBA, which every reader (PIL included) understands."""
    if pixels.shape[-1] == 2:
        pixels = pixels[..., [0, 0, 0, 1]]
    height, width, channels = pixels.shape
    rows = max(1, (1 << 16) // (width * channels * 2))  # strips of about 64 kB
    strips = [
        zlib.compress(np.ascontiguousarray(pixels[y : y + rows], "<u2").tobytes(), 6)
        for y in range(0, height, rows)
    ]
    tags = {  # tag: (type: 3 SHORT, 4 LONG, 7 UNDEFINED; values)
        256: (4, [width]),
        257: (4, [height]),
        258: (3, [16] * channels),
        259: (3, [8]),  # Deflate
        262: (3, [2]),  # RGB
        _TIFF_STRIP_OFFSETS: (4, [0] * len(strips)),  # filled in below
        _TIFF_SAMPLES: (3, [channels]),
        _TIFF_ROWS_PER_STRIP: (4, [rows]),
        _TIFF_STRIP_BYTES: (4, [len(s) for s in strips]),
        _TIFF_PLANAR: (3, [1]),
        339: (3, [1] * channels),  # unsigned integers
    }
    if channels == 4:
        tags[338] = (3, [2])  # the 4th sample is unassociated alpha
    if icc:
        tags[_TIFF_ICC] = (7, list(icc))

    def pack(kind: int, values: list[int]) -> bytes:
        return (
            bytes(values) if kind == 7 else struct.pack(f"<{len(values)}{'HI'[kind - 3]}", *values)
        )

    ifd_size = 2 + 12 * len(tags) + 4
    extra_size = sum(-(-len(pack(*v)) // 2) * 2 for v in tags.values() if len(pack(*v)) > 4)
    position = 8 + ifd_size + extra_size
    offsets = []
    for strip in strips:
        offsets.append(position)
        position += len(strip)
    tags[_TIFF_STRIP_OFFSETS] = (4, offsets)
    ifd, extra = [struct.pack("<H", len(tags))], bytearray()
    for tag in sorted(tags):
        kind, values = tags[tag]
        blob = pack(kind, values)
        if len(blob) <= 4:
            ifd.append(struct.pack("<HHI", tag, kind, len(values)) + blob.ljust(4, b"\0"))
        else:
            ifd.append(struct.pack("<HHII", tag, kind, len(values), 8 + ifd_size + len(extra)))
            extra += blob + b"\0" * (len(blob) % 2)
    ifd.append(b"\0\0\0\0")
    handle.write(b"II*\0" + struct.pack("<I", 8) + b"".join(ifd) + bytes(extra))
    for strip in strips:
        handle.write(strip)
