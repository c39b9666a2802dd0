"""Upscaling arrays with a DRN model: any size, batches, self-ensemble, 8/16-bit and float pixels.

::

    sr = upscale(photo, model)              # uint8/uint16 (H, W[, C]) -> (4H, 4W[, C])
    sr = upscale(photo, "bicubic")          # the baseline, through the same tiles and pixels

Large images go through the network in tiles (:mod:`drn_tf.tiles`). Models named by a string are
loaded by :func:`drn_tf.loading.load_model`, once per file version.

Pixels: the network's float output goes through :func:`drn_tf.serving.to_pixels` for 8-bit
images (NaN → 0, clip 0..255, round half to even: byte for byte the exported artifacts). 16-bit
images get the same rule at 16-bit scale: ``round_half_even(clip(x, 0, 255) · 65535 / 255)``.
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from drn_tf import serving
from drn_tf.bundled import model_path
from drn_tf.degrade import imresize
from drn_tf.loading import load_model
from drn_tf.models import DRN, build_drn
from drn_tf.precision import resolve_precision
from drn_tf.tiles import DEFAULT_TILE, DEFAULT_TILE_OVERLAP, Runner, _check_tiles, _tiled

__all__ = [
    "Bicubic",
    "OutOfMemoryError",
    "bfloat16_primal",
    "upscale",
]

PathLike = str | os.PathLike[str]


@dataclasses.dataclass(frozen=True)
class Bicubic:
    """MATLAB ``imresize(…, 'bicubic')`` as a model (:func:`drn_tf.degrade.imresize`): the
    standard baseline, through the same tiles and pixel rules as a DRN. 8-bit images are resized
    as uint8, bit-exact with MATLAB."""

    scale: int = 4


class OutOfMemoryError(MemoryError):
    """Upscaling one image ran out of memory; the message suggests a smaller ``--tile``."""


# Models named by string, loaded once per file version (an API user calls upscale in a loop).
_LOADED: dict[tuple[str, int], DRN] = {}


def _resolve_model(model: DRN | Bicubic | PathLike) -> DRN | Bicubic:
    if isinstance(model, (DRN, Bicubic)):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(
            "model must be a DRN, 'default', 'fast', 'bicubic' or a .keras path, "
            f"got a {type(model).__name__}"
        )
    if str(model) == "bicubic":
        return Bicubic()
    path = model_path(model)
    key = (str(path.resolve()), path.stat().st_mtime_ns if path.is_file() else 0)
    if key not in _LOADED:
        _LOADED[key] = load_model(path, policy="float32")  # precision= picks the compute
    return _LOADED[key]


# --------------------------------------------------------------------------------------------
# The network as a function on tiles
# --------------------------------------------------------------------------------------------

# One traced function per model and precision (weak keys: the cache never keeps a model alive).
_FUNCTIONS: weakref.WeakKeyDictionary[keras.Model, dict[str, tuple[keras.Model, Callable]]] = (
    weakref.WeakKeyDictionary()
)


def _float255(tiles: np.ndarray) -> np.ndarray:
    """Tiles of any source dtype as float32 on 0..255 (uint16: full 16-bit precision kept)."""
    if tiles.dtype == np.uint8:
        return tiles.astype(np.float32)
    if tiles.dtype == np.uint16:
        return tiles.astype(np.float32) * np.float32(255 / 65535)
    return tiles.astype(np.float32) * np.float32(255)  # float images are on 0..1


def bfloat16_primal(model: DRN) -> keras.Model:
    """A copy of ``model``'s primal network under mixed_bfloat16, with the same weights.

    Built from ``model.drn_config`` under the policy (its tails, bicubic up-sampling and mean
    shifts are float32 by construction), then the float32 weights are copied in.
    """
    cfg = model.drn_config
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        primal = build_drn(cfg.variant, cfg.scale, n_blocks=cfg.n_blocks, n_feats=cfg.n_feats)
    finally:
        keras.config.set_dtype_policy(previous)
    primal.set_weights(model.primal.get_weights())
    return primal


def _network_function(model: DRN, policy: str) -> Callable:
    """:func:`drn_tf.serving.super_resolve` of ``model`` under ``policy`` as one
    ``tf.function``, traced once for every input size, with the weights ``model`` has now (the
    bfloat16 copy is refreshed, for a model trained further since the last call)."""
    functions = _FUNCTIONS.setdefault(model, {})
    if policy not in functions:
        network = model.primal if policy == "float32" else bfloat16_primal(model)

        @tf.function(input_signature=[serving.FLOAT_SPEC])
        def function(images):
            return serving.super_resolve(network, images)

        functions[policy] = network, function
    network, function = functions[policy]
    if network is not model.primal:
        network.set_weights(model.primal.get_weights())
    return function


def _runner(model: DRN | Bicubic, policy: str) -> Runner:
    if isinstance(model, Bicubic):

        def bicubic(tiles: np.ndarray) -> np.ndarray:
            # uint8 stays uint8 (MATLAB rounds after each pass); others resize in float.
            source = tiles if tiles.dtype == np.uint8 else _float255(tiles)
            return np.stack([imresize(t, model.scale) for t in source]).astype(np.float32)

        return bicubic
    function = _network_function(model, policy)
    return lambda tiles: function(tf.constant(_float255(tiles))).numpy()


def _self_ensemble(run: Runner) -> Runner:
    """``run`` averaged over the 8 rotations/flips of its input, each output turned back."""

    def ensemble(tiles: np.ndarray) -> np.ndarray:
        total = None
        for turns in range(4):
            for flip in (False, True):
                view = np.rot90(tiles, turns, axes=(1, 2))
                view = view[:, :, ::-1] if flip else view
                out = run(np.ascontiguousarray(view))
                out = out[:, :, ::-1] if flip else out
                out = np.rot90(out, -turns, axes=(1, 2))
                total = out.astype(np.float32) if total is None else total + out
        return total / np.float32(8)

    return ensemble


# --------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------

# ITU-R 601 luma, as PIL's convert("L"): a gray image's three output channels back to one.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_CHUNK_ROWS = 256  # rows converted at once: bounds the temporaries of a large strip


def _pixels(values: np.ndarray, kind: np.dtype, gray: bool = False) -> np.ndarray:
    """float32 ``(H, W, C)`` on 0..255 → the output dtype ``kind`` (uint8, uint16 or float32
    on 0..1); ``gray`` merges three channels into one by luma first."""
    if gray:
        values = values @ _LUMA[:, None]
    if kind == np.uint8:
        return np.concatenate(
            [
                serving.to_pixels(values[i : i + _CHUNK_ROWS]).numpy()
                for i in range(0, len(values), _CHUNK_ROWS)
            ]
        )
    values = np.where(values >= 0, values, np.float32(0))  # NaN → 0, as serving.to_pixels
    values = np.minimum(values, np.float32(255))
    if kind == np.uint16:
        return np.round(values * np.float32(65535 / 255)).astype(np.uint16)
    return values / np.float32(255)


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------


def _as_image(image: np.ndarray) -> np.ndarray:
    """An ``(H, W)`` or ``(H, W, C)`` array as ``(H, W, C)``, checked."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"expected an (H, W) or (H, W, 1-4) image, got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16) and not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"expected a uint8, uint16 or float image, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image {image.shape}")
    return image


def _upscale_batch(
    batch: np.ndarray,
    run: Runner,
    scale: int,
    tile: int | None,
    overlap: int,
    progress: bool,
) -> list[np.ndarray]:
    """Same-size images ``(N, H, W, C)`` (N = 1 when tiled) → their upscaled images."""
    channels = batch.shape[-1]
    gray, alpha = channels in (1, 2), channels in (2, 4)
    kind = batch.dtype if batch.dtype in (np.uint8, np.uint16) else np.dtype(np.float32)
    color = batch[..., :1].repeat(3, axis=-1) if gray else batch[..., :3]
    height, width = batch.shape[1:3]
    bicubic = _runner(Bicubic(scale), "float32")
    if not tile or (height <= tile and width <= tile):
        colors = run(color)
        alphas = bicubic(batch[..., -1:]) if alpha else [None] * len(batch)
        results = [_pixels(c, kind, gray) for c in colors]
        if alpha:
            results = [
                np.concatenate([r, _pixels(a, kind)], -1)
                for r, a in zip(results, alphas, strict=True)
            ]
        return results

    def finish_color(values):
        return _pixels(values, kind, gray)

    result = _tiled(color[0], run, scale, tile, overlap, finish_color, progress)
    if alpha:  # alpha is not colour: bicubic, in the same tiles so memory stays bounded
        alpha_up = _tiled(
            batch[0, ..., -1:], bicubic, scale, tile, overlap, lambda v: _pixels(v, kind), False
        )
        result = np.concatenate([result, alpha_up], -1)
    return [result]


def upscale(
    image: np.ndarray | Sequence[np.ndarray],
    model: DRN | Bicubic | PathLike = "default",
    *,
    tile: int | None = DEFAULT_TILE,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    self_ensemble: bool = False,
    precision: str = "auto",
    progress: bool = False,
    network: Runner | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Super-resolves an image (or a list of images) with a DRN model.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or
            4 (RGBA); uint8, uint16 or float on 0..1; any ``H, W >= 1``. Or a list of such
            images (or an ``(N, H, W, C)`` array): those of one size and type that fit in a
            tile together run as one batch.
        model: a :class:`~drn_tf.models.DRN`, ``"default"`` or ``"fast"`` (packaged), a
            ``.keras`` path, ``"bicubic"`` or a :class:`Bicubic`.
        tile: tile side in input pixels for images larger than it (memory then depends on
            the tile); ``None`` or 0 runs every image in one pass.
        tile_overlap: overlap of neighbouring tiles in input pixels, at most ``tile / 4``.
        self_ensemble: average the outputs of the 8 rotations/flips (8× the time).
        precision: ``"auto"``, ``"float32"`` or ``"bfloat16"`` (see :mod:`drn_tf.precision`).
        progress: a tqdm progress bar over the tiles of a tiled image (stderr).
        network: the DRN's network in another runtime (:func:`export.runtime.network`):
            float32 ``(N, h, w, 3)`` on 0..255 → float32 ``(N, s·h, s·w, 3)``; it replaces
            the Keras call (``precision`` is then unused) and nothing else.

    Returns:
        ``(s·H, s·W[, C])`` of the input's type and channels (a list for a batch), ``s`` the
        model's scale. Colour goes through the network as RGB (gray repeated, and the output
        merged back to gray by luma); alpha is upscaled with bicubic. uint8 output is
        :func:`drn_tf.serving.to_pixels` of the network's output (the exported artifacts' pixels
        when one pass in float32), uint16 the same rule at 16-bit scale, float output is
        clipped to 0..1 and not rounded.

    Raises:
        ValueError: a bad array, tile, overlap or precision.
        OutOfMemoryError: an image did not fit in memory; the message suggests a smaller tile.
    """
    if isinstance(image, keras.Model):  # drn-tf 0.1 order, upscale(model, image): one pass, fp32
        legacy_model, legacy_image = image, model
        return upscale(legacy_image, legacy_model, tile=None, precision="float32")
    if not isinstance(image, (list, tuple)):
        image = np.asarray(image)  # e.g. a PIL image
        if image.ndim == 4:  # (N, H, W, C): a batch
            image = list(image)
    single = not isinstance(image, list | tuple)
    images = [_as_image(image)] if single else [_as_image(i) for i in image]
    _check_tiles(tile, tile_overlap)
    model = _resolve_model(model)
    if network is None or isinstance(model, Bicubic):
        run = _runner(model, resolve_precision(precision))
    else:
        run = lambda tiles: network(_float255(tiles))  # noqa: E731
    run = _self_ensemble(run) if self_ensemble else run
    budget = (tile or DEFAULT_TILE) ** 2  # pixels per batch: one tile's worth of memory
    results: list[np.ndarray | None] = [None] * len(images)
    groups: dict[tuple, list[int]] = {}
    for index, item in enumerate(images):
        groups.setdefault((item.shape, item.dtype.str), []).append(index)
    for indices in groups.values():
        height, width = images[indices[0]].shape[:2]
        size = max(1, budget // (height * width))
        for i in range(0, len(indices), size):
            chunk = indices[i : i + size]
            batch = np.stack([images[j] for j in chunk])
            try:
                outputs = _upscale_batch(batch, run, model.scale, tile, tile_overlap, progress)
            except (tf.errors.ResourceExhaustedError, MemoryError) as error:
                raise OutOfMemoryError(_out_of_memory(width, height, tile)) from error
            for j, output in zip(chunk, outputs, strict=True):
                results[j] = output
    # An (H, W) input gets an (sH, sW) output.
    flat = [np.ndim(i) == 2 for i in ([image] if single else image)]
    results = [r[..., 0] if f else r for r, f in zip(results, flat, strict=True)]
    return results[0] if single else results


def _out_of_memory(width: int, height: int, tile: int | None) -> str:
    tiled = tile and (width > tile or height > tile)
    smaller = max(32, tile // 2) if tiled else DEFAULT_TILE
    how = f"in tiles of {tile} pixels" if tiled else "in one pass"
    return (
        f"out of memory upscaling a {width}x{height} image {how}; "
        f"use a smaller --tile (e.g. --tile {smaller})"
    )
