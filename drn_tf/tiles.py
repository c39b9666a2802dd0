"""Running the network on a large image in overlapping tiles, so memory depends on the tile,
not the image.

Tiles of :data:`DEFAULT_TILE` input pixels overlap by :data:`DEFAULT_TILE_OVERLAP` and are
blended with linear ramps. Channel attention pools over its whole input, so a tiled result is not
exactly the one-pass result; on photos they agree at 55 dB or more (tested at ≥ 45 dB,
test_tiles.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from drn_tf.progress import Bar

__all__ = ["DEFAULT_TILE", "DEFAULT_TILE_OVERLAP", "TILE_BATCH", "Runner"]

#: Tile side in input pixels, chosen by measurement on the default model: time per pixel is
#: flat from 96 to 192 and worse from 256 (caches), peak memory grows with the tile, and the
#: tiled result stays within 58 dB of one pass (numbers in the upscaling notes of BUILD_NOTES).
DEFAULT_TILE = 128
#: Overlap of neighbouring tiles in input pixels; the blend ramp is half of it, centred.
DEFAULT_TILE_OVERLAP = 16
#: Tiles of one row per network call. 1 by measurement: 2 and 4 were no faster on 2 cores
#: (benchmarks/upscale_runtimes.py --tile-batch 1 2 4) and take more memory.
TILE_BATCH = 1

# Runner = source-dtype tiles (N, h, w, C) -> float32 (N, s·h, s·w, C) on 0..255.
Runner = Callable[[np.ndarray], np.ndarray]


def _check_tiles(tile: int | None, tile_overlap: int) -> None:
    if tile is not None and (not isinstance(tile, (int, np.integer)) or tile < 0):
        raise ValueError(f"tile must be a positive number of pixels, 0 or None, got {tile!r}")
    if tile and not 0 <= tile_overlap <= tile // 4:
        raise ValueError(
            f"tile overlap must be between 0 and a quarter of the tile ({tile // 4}), "
            f"got {tile_overlap}"
        )


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spaced tile starts covering ``length`` with tiles of ``tile`` (≤ length)
    overlapping by at least ``overlap``."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _blend_weights(starts: list[int], tile: int, scale: int, overlap: int) -> list[np.ndarray]:
    """1-D blend weights of each tile over its ``tile·scale`` output pixels, summing to 1.

    Between two tiles the weight ramps linearly over ``overlap·scale / 2`` pixels centred in
    their overlap, so the outer quarter of each overlap, where zero padding shows, is dropped.
    """
    ramp = max(1.0, overlap * scale / 2)
    positions = np.arange(tile * scale, dtype=np.float64) + 0.5
    weights = []
    for i, start in enumerate(starts):
        weight = np.ones(tile * scale)
        if i > 0:  # centre of the overlap with the previous tile, in this tile's coordinates
            middle = ((starts[i - 1] + tile - start) / 2) * scale
            weight = np.minimum(weight, np.clip((positions - middle) / ramp + 0.5, 0, 1))
        if i + 1 < len(starts):
            middle = ((start + tile + starts[i + 1]) / 2 - start) * scale
            weight = np.minimum(weight, np.clip((middle - positions) / ramp + 0.5, 0, 1))
        weights.append(weight)
    total = np.zeros((starts[-1] + tile) * scale)
    for start, weight in zip(starts, weights, strict=True):
        total[start * scale : (start + tile) * scale] += weight
    return [
        (w / total[s * scale : (s + tile) * scale]).astype(np.float32)
        for s, w in zip(starts, weights, strict=True)
    ]


def _tiled(
    image: np.ndarray,
    run: Runner,
    scale: int,
    tile: int,
    overlap: int,
    finish: Callable[[np.ndarray], np.ndarray],
    progress: bool,
) -> np.ndarray:
    """``finish(run(image))`` for an ``(H, W, C)`` image larger than one tile, in tiles.

    Tile rows are blended into a float32 strip as wide as the output and one tile high; rows
    no later tile reaches are finished (``finish``: to output pixels) and leave the strip, so
    memory is one strip, one tile's network activations and the output image.
    """
    height, width = image.shape[:2]
    tile_h, tile_w = min(tile, height), min(tile, width)
    rows, columns = _tile_starts(height, tile_h, overlap), _tile_starts(width, tile_w, overlap)
    weights_y = _blend_weights(rows, tile_h, scale, overlap)
    weights_x = _blend_weights(columns, tile_w, scale, overlap)
    output = None
    done, pending = 0, None  # output rows finished; blended rows not yet finished
    with Bar(
        total=len(rows) * len(columns), desc="tiles", unit="tile", leave=False,
        disable=not progress,
    ) as bar:  # fmt: skip
        for r, y in enumerate(rows):
            strip = None
            batches = [columns[i : i + TILE_BATCH] for i in range(0, len(columns), TILE_BATCH)]
            outputs = (
                sr
                for xs in batches
                for sr in run(np.stack([image[y : y + tile_h, x : x + tile_w] for x in xs]))
            )
            for c, (x, sr) in enumerate(zip(columns, outputs, strict=True)):
                if strip is None:
                    strip = np.zeros(((y + tile_h) * scale - done, width * scale, sr.shape[-1]))
                    strip = strip.astype(np.float32, copy=False)
                    if pending is not None:
                        strip[: len(pending)] = pending
                weight = weights_y[r][:, None, None] * weights_x[c][None, :, None]
                top = y * scale - done
                strip[top : top + tile_h * scale, x * scale : (x + tile_w) * scale] += sr * weight
                bar.update()
            end = rows[r + 1] * scale if r + 1 < len(rows) else height * scale
            finished = finish(strip[: end - done])
            if output is None:
                output = np.empty(
                    (height * scale, width * scale, *finished.shape[2:]), finished.dtype
                )
            output[done:end] = finished
            pending, done = strip[end - done :].copy(), end  # a copy: the old strip is freed
    return output
