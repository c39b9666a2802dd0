"""Degradations: MATLAB-compatible ``imresize`` and the synthetic LR kinds of the benchmark tree.

``degrade(hr, kind, scale)`` makes the LR image of one HR image with one of :data:`KINDS`,
named as the folders of the authors' benchmark tree (``LR_<kind>/X<s>``, ``docs/drn-reference.md``
§1.5), all of ``modcrop(hr, s)`` and of size ``(H // s, W // s)``:

* ``bicubic``: ``imresize(hr, 1/s)``, MATLAB bicubic with antialiasing (the standard SR LR);
* ``nearest``: MATLAB ``imresize(hr, 1/s, 'nearest')``, i.e. HR pixel ``s//2`` of every s×s block;
* ``bilinear``: MATLAB ``imresize(hr, 1/s, 'bilinear')`` (triangle kernel, antialiased);
* ``blur``: Gaussian blur (7×7, σ 1.6, replicated borders, MATLAB ``fspecial``/``imfilter``),
  then bicubic downsampling: the "BD" degradation of RDN;
* ``DN``: ``blur`` plus Gaussian noise of σ 10 (on 0..255), rounded and clipped to uint8.

Any of them can also be JPEG-compressed (``jpeg_quality``), as the last step.

The SR benchmarks (Set5, Set14, ...) ship LR images produced by MATLAB's ``imresize``; training
pairs and the "bicubic" baseline must use the same operator, or every PSNR number is shifted. This
module reproduces the official ``LR_bicubic/X{2,3,4}`` files of Set5/Set14 bit-exactly from the HR
images (``imresize(modcrop(hr, s), 1 / s)``).

MATLAB semantics reproduced here:

* Keys cubic kernel with a = -0.5;
* antialiasing when downscaling: the kernel is stretched by 1/scale (support 4/scale input pixels);
* out-of-range taps use clamped (replicated) edge indices;
* output size ``ceil(in * scale)`` per dimension;
* the dimension with the smaller scale factor is resized first, height first on ties;
* uint8 input is rounded (half away from zero) and saturated to uint8 after *each* 1-D pass, because
  MATLAB keeps the intermediate image in the input class.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "KINDS",
    "cubic",
    "degrade",
    "imresize",
    "jpeg",
    "lr_folder_name",
    "modcrop",
    "resize_weights",
    "triangle",
]

#: The LR kinds of :func:`degrade`, named as the benchmark tree's ``LR_<kind>`` folders.
KINDS = ("bicubic", "nearest", "bilinear", "blur", "DN")
#: ``blur`` and ``DN``: MATLAB ``fspecial('gaussian', 7, 1.6)``, as RDN's "BD" degradation.
BLUR_SIZE, BLUR_SIGMA = 7, 1.6
#: ``DN``: standard deviation of the added Gaussian noise, on 0..255.
NOISE_SIGMA = 10.0


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic kernel, a = -0.5, evaluated elementwise (float64; zero outside |x| <= 2)."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    inner = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1.0)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1.0) & (absx <= 2.0))
    return inner + outer


def triangle(x: np.ndarray) -> np.ndarray:
    """MATLAB's bilinear kernel ``max(0, 1 − |x|)``, elementwise (float64)."""
    return np.maximum(0.0, 1.0 - np.abs(x))


# MATLAB's kernels and their widths in input pixels at scale >= 1.
_KERNELS = {"bicubic": (cubic, 4.0), "bilinear": (triangle, 2.0)}


def resize_weights(
    in_length: int,
    out_length: int,
    scale: float,
    antialiasing: bool = True,
    method: str = "bicubic",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-output tap weights and source indices for one axis (MATLAB ``contributions``).

    Args:
        in_length: input size along the axis.
        out_length: output size along the axis.
        scale: output/input scale factor along the axis (> 0).
        antialiasing: stretch the kernel by 1/scale when downscaling, as MATLAB does by default.
        method: ``"bicubic"`` or ``"bilinear"``.

    Returns:
        ``(weights, indices)``, both of shape ``(out_length, taps)``: float64 weights whose rows
        sum to 1, and int64 0-based indices into the input axis, clamped to ``[0, in_length - 1]``.
    """
    if method not in _KERNELS:
        raise ValueError(f"method must be one of {', '.join(_KERNELS)}, got {method!r}")
    base, base_width = _KERNELS[method]
    if scale < 1.0 and antialiasing:
        kernel_width = base_width / scale

        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * base(scale * x)

    else:
        kernel_width = base_width
        kernel = base

    # MATLAB works in 1-based coordinates; u is the input-space centre of each output pixel.
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)

    # Drop tap columns that are zero for every output; MATLAB does the same and it saves work.
    keep = np.any(weights != 0.0, axis=0)
    weights = weights[:, keep]
    indices = indices[:, keep]

    indices = np.clip(indices.astype(np.int64) - 1, 0, in_length - 1)
    return weights, indices


def _resize_axis(
    image: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray
) -> np.ndarray:
    """Apply a 1-D resize along ``axis`` of a float64 array; returns float64."""
    # Accumulate tap by tap, in kernel order, like MATLAB's mex: the same float64 summation order
    # keeps the round-half cases bit-exact, and for the 4..16 taps used here this beats gathering an
    # (out, taps, ...) array for einsum in both time and memory.
    bshape = [1] * image.ndim
    bshape[axis] = -1
    out = np.take(image, indices[:, 0], axis=axis)
    out *= weights[:, 0].reshape(bshape)
    for t in range(1, weights.shape[1]):
        tap = np.take(image, indices[:, t], axis=axis)
        tap *= weights[:, t].reshape(bshape)
        out += tap
    return out


def _round_uint8(image: np.ndarray) -> np.ndarray:
    # MATLAB rounds half away from zero; negatives saturate to 0 anyway, so floor(x + 0.5) agrees.
    return np.clip(np.floor(image + 0.5), 0, 255).astype(np.uint8)


def imresize(
    image: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
    method: str = "bicubic",
) -> np.ndarray:
    """Resize an image like MATLAB ``imresize(image, scale, method)`` (antialiased).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array, either uint8 (0..255) or floating point (any
            range, e.g. 0..1 or 0..255).
        scale: scale factor applied to both H and W (e.g. ``1 / 4`` to downscale, ``4`` to upscale).
            The output size is ``(ceil(H * scale), ceil(W * scale))``.
        output_shape: ``(out_H, out_W)`` instead of ``scale``; the per-axis scale is then
            ``out / in``. Give exactly one of ``scale`` and ``output_shape``.
        method: ``"bicubic"`` (the default) or ``"bilinear"``.

    Returns:
        Array of shape ``(out_H, out_W)`` or ``(out_H, out_W, C)``. For uint8 input the result is
        uint8, rounded and saturated after each 1-D pass (bit-exact with MATLAB). For floating input
        the result keeps the input dtype, with no rounding or clipping (bicubic overshoot is kept).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    is_uint8 = image.dtype == np.uint8
    if not is_uint8 and not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"expected uint8 or floating input, got {image.dtype}")
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale and output_shape")

    in_shape = image.shape[:2]
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = tuple(int(math.ceil(n * scale)) for n in in_shape)
    else:
        out_shape = tuple(int(n) for n in output_shape)
        if len(out_shape) != 2 or min(out_shape) <= 0:
            raise ValueError(f"output_shape must be two positive ints, got {output_shape}")
        scales = tuple(o / i for o, i in zip(out_shape, in_shape, strict=True))

    # MATLAB resizes the most-shrunk dimension first (stable sort, so height first on ties).
    order = sorted(range(2), key=lambda d: scales[d])

    result = image
    for axis in order:
        if out_shape[axis] == in_shape[axis] and scales[axis] == 1.0:
            continue
        weights, indices = resize_weights(
            in_shape[axis], out_shape[axis], scales[axis], method=method
        )
        resized = _resize_axis(result.astype(np.float64, copy=False), axis, weights, indices)
        result = _round_uint8(resized) if is_uint8 else resized
    if not is_uint8:
        result = result.astype(image.dtype, copy=False)
    return result


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop ``(H, W[, C])`` top-left so H and W are multiples of ``scale`` (MATLAB ``modcrop``).

    Drops the last ``H % scale`` rows and ``W % scale`` columns; dtype and values are unchanged.
    """
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def _gaussian_blur(image: np.ndarray) -> np.ndarray:
    """MATLAB ``imfilter(image, fspecial('gaussian', 7, 1.6), 'replicate')`` of a uint8 image:
    separable (the 2-D kernel is the outer product of the normalised 1-D one), rounded once."""
    radius = BLUR_SIZE // 2
    taps = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2.0 * BLUR_SIGMA**2))
    taps /= taps.sum()
    result = image.astype(np.float64)
    for axis in (0, 1):
        padding = [(0, 0)] * image.ndim
        padding[axis] = (radius, radius)
        padded = np.pad(result, padding, mode="edge")
        length = image.shape[axis]
        result = sum(
            w * np.take(padded, range(t, t + length), axis=axis) for t, w in enumerate(taps)
        )
    return _round_uint8(result)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` (uint8 ``(H, W, 3)``) encoded as a baseline JPEG of ``quality`` (1..95, PIL's
    libjpeg, 4:2:0 chroma) and decoded again: deterministic for one libjpeg version."""
    import io

    from PIL import Image

    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must be 1..95, got {quality}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def degrade(
    hr: np.ndarray,
    kind: str,
    scale: int,
    rng: np.random.Generator | None = None,
    jpeg_quality: int | None = None,
) -> np.ndarray:
    """The LR image of ``kind`` (see :data:`KINDS` and the module docstring) of one HR image.

    Args:
        hr: uint8 ``(H, W, 3)``, modcropped here to a multiple of ``scale``.
        kind: one of :data:`KINDS`.
        scale: integer downsampling factor, at least 2.
        rng: the noise source of ``DN`` (default: a generator seeded with 0); unused otherwise.
        jpeg_quality: also compress the result as a JPEG of this quality (1..95).

    Returns:
        uint8 ``(H // scale, W // scale, 3)``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if int(scale) != scale or scale < 2:
        raise ValueError(f"scale must be an integer of at least 2, got {scale}")
    hr = np.asarray(hr)
    if hr.dtype != np.uint8 or hr.ndim != 3 or min(hr.shape[:2]) < scale:
        raise ValueError(f"expected a uint8 (H, W, 3) image of at least {scale}×{scale}, "
                         f"got {hr.dtype} {hr.shape}")  # fmt: skip
    hr = modcrop(hr, scale)
    if kind == "nearest":
        # MATLAB's output pixel i (0-based) samples input position s·i + (s − 1)/2, rounded half
        # up: the pixel s·i + s // 2.
        lr = np.ascontiguousarray(hr[scale // 2 :: scale, scale // 2 :: scale])
    elif kind == "bilinear":
        lr = imresize(hr, 1.0 / scale, method="bilinear")
    elif kind in ("blur", "DN"):
        lr = imresize(_gaussian_blur(hr), 1.0 / scale)
    else:
        lr = imresize(hr, 1.0 / scale)
    if kind == "DN":
        rng = np.random.default_rng(0) if rng is None else rng
        lr = _round_uint8(lr + rng.normal(0.0, NOISE_SIGMA, lr.shape))
    if jpeg_quality is not None:
        lr = jpeg(lr, jpeg_quality)
    return lr


def lr_folder_name(kind: str, jpeg_quality: int | None = None) -> str:
    """``LR_<kind>``, or ``LR_<kind>_jpeg<quality>`` with JPEG compression."""
    return f"LR_{kind}" + ("" if jpeg_quality is None else f"_jpeg{jpeg_quality}")
