"""MATLAB-compatible bicubic resizing (``imresize(x, scale, 'bicubic')``) in numpy.

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

__all__ = ["cubic", "imresize", "modcrop", "resize_weights"]

# MATLAB's bicubic kernel is 4 input pixels wide at scale >= 1.
_KERNEL_WIDTH = 4.0


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic kernel, a = -0.5, evaluated elementwise (float64; zero outside |x| <= 2)."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    inner = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1.0)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1.0) & (absx <= 2.0))
    return inner + outer


def resize_weights(
    in_length: int, out_length: int, scale: float, antialiasing: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-output tap weights and source indices for one axis (MATLAB ``contributions``).

    Args:
        in_length: input size along the axis.
        out_length: output size along the axis.
        scale: output/input scale factor along the axis (> 0).
        antialiasing: stretch the kernel by 1/scale when downscaling, as MATLAB does by default.

    Returns:
        ``(weights, indices)``, both of shape ``(out_length, taps)``: float64 weights whose rows
        sum to 1, and int64 0-based indices into the input axis, clamped to ``[0, in_length - 1]``.
    """
    if scale < 1.0 and antialiasing:
        kernel_width = _KERNEL_WIDTH / scale

        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * x)

    else:
        kernel_width = _KERNEL_WIDTH
        kernel = cubic

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
) -> np.ndarray:
    """Resize an image like MATLAB ``imresize(image, scale, 'bicubic')`` (antialiased).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array, either uint8 (0..255) or floating point (any
            range, e.g. 0..1 or 0..255).
        scale: scale factor applied to both H and W (e.g. ``1 / 4`` to downscale, ``4`` to upscale).
            The output size is ``(ceil(H * scale), ceil(W * scale))``.
        output_shape: ``(out_H, out_W)`` instead of ``scale``; the per-axis scale is then
            ``out / in``. Give exactly one of ``scale`` and ``output_shape``.

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
        weights, indices = resize_weights(in_shape[axis], out_shape[axis], scales[axis])
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
