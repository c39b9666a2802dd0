"""Upscaling with a DRN model: load it, upscale arrays of any size, upscale image files and folders.

::

    model = load_model("default")                   # the packaged ×4 model, or a .keras path
    model_x2 = load_model("default", scale=2)       # the packaged ×2 (also ×8) model
    sr = upscale(photo, model)                      # uint8/uint16 (H, W[, C]) -> (4H, 4W[, C])
    upscale_files(["photos/"], "out/", model)       # photos/a/b.jpg -> out/a/b_x4.png

Large images go through the network in overlapping tiles (:data:`DEFAULT_TILE` input pixels,
:data:`DEFAULT_TILE_OVERLAP` overlap) blended with linear ramps, so memory depends on the tile,
not the image. Channel attention pools over its whole input, so a tiled result is not exactly the
one-pass result; on photos they agree at 55 dB or more (tested at ≥ 45 dB, test_upscale.py).

Pixels: the network's float output goes through :func:`drn_tf.serving.to_pixels` for 8-bit
images (NaN → 0, clip 0..255, round half to even: byte for byte the exported artifacts). 16-bit
images get the same rule at 16-bit scale: ``round_half_even(clip(x, 0, 255) · 65535 / 255)``.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import sys
import weakref
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from drn_tf import dual_regression, serving  # noqa: F401
from drn_tf.degrade import imresize
from drn_tf.images import (
    FORMAT_SUFFIXES,
    IMAGE_EXTENSIONS,
    ImageReadError,
    Picture,
    find_images,
    load_picture,
    save_picture,
)
from drn_tf.models import DRN, build_drn, build_drn_bundle
from drn_tf.precision import resolve_precision

# dual_regression registers DualRegressionModel, the class of files `drn-tf train` writes.
from drn_tf.progress import Bar

__all__ = [
    "DEFAULT_MODEL_PATH",
    "DEFAULT_MODEL_PATHS",
    "DEFAULT_TILE",
    "DEFAULT_TILE_OVERLAP",
    "Bicubic",
    "OutOfMemoryError",
    "UpscaleSummary",
    "load_model",
    "model_path",
    "upscale",
    "upscale_files",
]

PathLike = str | os.PathLike[str]

#: The packaged models, one per scale: ``load_model("default", scale=s)``.
DEFAULT_MODEL_PATHS = {s: Path(__file__).parent / "weights" / f"drn_x{s}.keras" for s in (2, 4, 8)}
#: The packaged ×4 model, ``load_model("default")``.
DEFAULT_MODEL_PATH = DEFAULT_MODEL_PATHS[4]

#: Tile side in input pixels, chosen by measurement on the default model: time per pixel is
#: flat from 96 to 192 and worse from 256 (caches), peak memory grows with the tile, and the
#: tiled result stays within 58 dB of one pass (numbers in the upscaling notes of BUILD_NOTES).
DEFAULT_TILE = 128
#: Overlap of neighbouring tiles in input pixels; the blend ramp is half of it, centred.
DEFAULT_TILE_OVERLAP = 16
#: Tiles of one row per network call. 1 by measurement: 2 and 4 were no faster on 2 cores
#: (benchmarks/upscale_runtimes.py --tile-batch 1 2 4) and take more memory.
TILE_BATCH = 1


@dataclasses.dataclass(frozen=True)
class Bicubic:
    """MATLAB ``imresize(…, 'bicubic')`` as a model (:func:`drn_tf.degrade.imresize`): the
    standard baseline, through the same tiles and pixel rules as a DRN. 8-bit images are resized
    as uint8, bit-exact with MATLAB."""

    scale: int = 4


class OutOfMemoryError(MemoryError):
    """Upscaling one image ran out of memory; the message suggests a smaller ``--tile``."""


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def model_path(name_or_path: PathLike = "default", scale: int | None = None) -> Path:
    """The file ``name_or_path`` names: for ``"default"`` the packaged model of ``scale``
    (:data:`DEFAULT_MODEL_PATHS`; 4 when ``None``), otherwise the path itself (unchecked).

    Raises:
        ValueError: no model is packaged for ``scale``.
        FileNotFoundError: the packaged model's file is missing from this installation.
    """
    if str(name_or_path) != "default":
        return Path(name_or_path)
    scale = 4 if scale is None else scale
    if scale not in DEFAULT_MODEL_PATHS:
        packaged = ", ".join(f"×{s}" for s in DEFAULT_MODEL_PATHS)
        raise ValueError(
            f"no packaged ×{scale} model (packaged: {packaged}); pass the path of a .keras model"
        )
    path = DEFAULT_MODEL_PATHS[scale]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the packaged ×{scale} model is not installed; "
            "pass the path of a .keras model instead"
        )
    return path


def load_model(name_or_path: PathLike = "default", scale: int | None = None) -> DRN:
    """Loads a DRN model (primal + dual networks) from a ``.keras`` file.

    Args:
        name_or_path: ``"default"`` for the packaged model of ``scale``
            (:data:`DEFAULT_MODEL_PATHS`), or the path of a ``.keras`` file written by
            ``drn-tf convert``, ``drn-tf train`` or :func:`drn_tf.models.save_model_atomic`.
        scale: the upscaling factor wanted: picks the packaged model (×4 when ``None``), and a
            file's model must have it.

    Returns:
        The :class:`~drn_tf.models.DRN` (a ``DualRegressionModel`` for files written by training,
        which is a ``DRN`` too), uncompiled. ``model.scale`` is its upscaling factor.

    Raises:
        FileNotFoundError: the file (or the packaged model) does not exist.
        ValueError: a folder, not a ``.keras`` file, a truncated or corrupt archive, a file Keras
            cannot load, a Keras model that is not a DRN, or a model of another ``scale``. The
            message starts with the path.
    """
    path = model_path(name_or_path, scale)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model file does not exist")
    if path.is_dir():
        raise ValueError(f"{path}: a folder, not a .keras model file")
    if path.suffix.lower() in (".pt", ".pth"):
        raise ValueError(f"{path}: a PyTorch checkpoint; convert it first with `drn-tf convert`")
    if path.suffix != ".keras":
        raise ValueError(f"{path}: not a .keras model file (suffix {path.suffix or 'none'!r})")
    _check_archive(path)

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises ValueError, TypeError, KeyError, OSError, …
        raise ValueError(
            f"{path}: cannot load the model ({type(error).__name__}: {_first_line(error)})"
        ) from error
    if not isinstance(model, DRN):
        raise ValueError(f"{path}: not a DRN model (found a Keras {type(model).__name__})")
    if scale is not None and model.scale != scale:
        raise ValueError(f"{path}: a ×{model.scale} model, but the scale asked for is ×{scale}")
    if not all(np.isfinite(w).all() for w in model.get_weights() if w.dtype.kind == "f"):
        # A diverged training run's weights: its outputs would be black images or NaN scores.
        raise ValueError(f"{path}: the model's weights are not all finite (NaN or inf)")
    return _in_global_policy(model)


def check_trained_duals(model: DRN, path: PathLike, use: str) -> None:
    """Raises ValueError when ``model`` (loaded from ``path``) records random dual networks
    (converted without the authors' dual checkpoint), which ``use`` needs trained."""
    if str(model.info.get("duals", "")).startswith("random"):  # as drn_tf.convert records it
        raise ValueError(
            f"{path}: its dual networks are random (converted without --dual-checkpoint), "
            f"so {use} would mean nothing; convert with the authors' dual checkpoint"
        )


def _in_global_policy(model: DRN) -> DRN:
    """``model`` computing in Keras' global dtype policy (float32 unless a training run set
    another). A ``.keras`` file keeps each layer's policy: a model saved by a mixed_bfloat16 run
    would compute in bfloat16 wherever it is loaded (and give exporters a graph they refuse),
    and a float32 file would ignore ``--precision`` when trained further. Weights are float32
    under every policy, so the copy is exact."""
    wanted = {keras.mixed_precision.global_policy().name} - {"float32"}
    networks = (model.primal, *model.duals)
    if {layer.dtype_policy.name for net in networks for layer in net.layers} - {
        "float32"
    } == wanted:
        return model
    config = model.drn_config
    fresh = build_drn_bundle(
        config.variant, config.scale, n_blocks=config.n_blocks, n_feats=config.n_feats
    )
    # Network by network: a DualRegressionModel also holds training state (skipped_steps).
    for network, source in zip(
        (fresh.primal, *fresh.duals), (model.primal, *model.duals), strict=True
    ):
        network.set_weights(source.get_weights())
    rebuilt = DRN(fresh.primal, fresh.duals, drn_config=config, info=model.info, name=model.name)
    if type(model) is DRN:
        return rebuilt
    return type(model).from_drn(rebuilt, model.dual_weight, model.unpaired_loop)


def _check_archive(path: Path) -> None:
    """A ``.keras`` file is a zip archive: check it is complete and every member's CRC matches."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = set(archive.namelist())
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise ValueError(
            f"{path}: not a valid .keras file, truncated or corrupt ({_first_line(error)})"
        ) from error
    if bad is not None:
        raise ValueError(f"{path}: corrupt .keras file (member {bad!r} fails its CRC check)")
    if "config.json" not in names:
        raise ValueError(f"{path}: not a Keras model archive (no config.json inside)")


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Models named by string, loaded once per file version (an API user calls upscale in a loop).
_LOADED: dict[tuple[str, int], DRN] = {}


def _resolve_model(model: DRN | Bicubic | PathLike) -> DRN | Bicubic:
    if isinstance(model, (DRN, Bicubic)):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(
            "model must be a DRN, 'default', 'bicubic' or a .keras path, "
            f"got a {type(model).__name__}"
        )
    if str(model) == "bicubic":
        return Bicubic()
    path = model_path(model)
    key = (str(path.resolve()), path.stat().st_mtime_ns if path.is_file() else 0)
    if key not in _LOADED:
        _LOADED[key] = load_model(path)
    return _LOADED[key]


# --------------------------------------------------------------------------------------------
# The network as a function on tiles
# --------------------------------------------------------------------------------------------

# Runner = source-dtype tiles (N, h, w, C) -> float32 (N, s·h, s·w, C) on 0..255.
Runner = Callable[[np.ndarray], np.ndarray]

# One traced function per model and precision (weak keys: the cache never keeps a model alive).
_FUNCTIONS: weakref.WeakKeyDictionary[keras.Model, dict[str, Callable]] = (
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
    ``tf.function``, traced once for every input size."""
    functions = _FUNCTIONS.setdefault(model, {})
    if policy not in functions:
        network = model.primal if policy == "float32" else bfloat16_primal(model)

        @tf.function(input_signature=[serving.FLOAT_SPEC])
        def function(images):
            return serving.super_resolve(network, images)

        functions[policy] = function
    return functions[policy]


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
# Tiles
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------


def _check_tiles(tile: int | None, tile_overlap: int) -> None:
    if tile is not None and (not isinstance(tile, (int, np.integer)) or tile < 0):
        raise ValueError(f"tile must be a positive number of pixels, 0 or None, got {tile!r}")
    if tile and not 0 <= tile_overlap <= tile // 4:
        raise ValueError(
            f"tile overlap must be between 0 and a quarter of the tile ({tile // 4}), "
            f"got {tile_overlap}"
        )


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
        model: a :class:`~drn_tf.models.DRN`, ``"default"``, a ``.keras`` path, ``"bicubic"``
            or a :class:`Bicubic`.
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


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class UpscaleSummary:
    """What :func:`upscale_files` did: files written, outputs kept because they existed,
    failures ``(input, reason)``, and files in input folders taken for earlier outputs."""

    output: Path
    written: list[Path] = dataclasses.field(default_factory=list)
    kept: list[Path] = dataclasses.field(default_factory=list)
    failed: list[tuple[Path, str]] = dataclasses.field(default_factory=list)
    earlier_outputs: list[Path] = dataclasses.field(default_factory=list)
    unit: str = "image"  # what the files are (drn_tf.video's summaries say "video")

    def line(self) -> str:
        """One line for the user: ``wrote 3 image(s) to out; 1 kept …; 1 failed``."""
        parts = [f"wrote {len(self.written)} {self.unit}(s) to {self.output}"]
        if self.kept:
            parts.append(f"{len(self.kept)} kept (already there; --overwrite replaces them)")
        if self.earlier_outputs:
            parts.append(
                f"{len(self.earlier_outputs)} earlier output(s) in the inputs skipped "
                f"(first: {self.earlier_outputs[0]})"
            )
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        return "; ".join(parts)


def output_name(source: Path, scale: int, image_format: str) -> str:
    """``photo.jpg`` → ``photo_x4.png``: how outputs are named, and recognised in inputs."""
    return f"{source.stem}_x{scale}{FORMAT_SUFFIXES[image_format]}"


def is_earlier_output(path: Path, output: Path, suffixes: Iterable[str]) -> bool:
    """Whether ``path``, found in an input folder, is taken for an earlier output of this tool:
    named like one (``<stem>_x<n>`` with a suffix of ``suffixes``, any scale ``n``) and either
    inside the ``output`` folder or beside a file ``<stem>.*``, its source. Elsewhere such a
    name (``scan_x4.jpg``) is just a user's photo."""
    stem, _, scale = path.stem.rpartition("_x")
    if not (stem and scale.isdigit() and path.suffix.lower() in suffixes):
        return False
    folder, out = Path(os.path.realpath(path.parent)), Path(os.path.realpath(output))
    if folder == out or out in folder.parents:
        return True
    return any(p.stem == stem and p != path for p in path.parent.glob(glob.escape(stem) + ".*"))


_OUTPUT_SUFFIXES = {*FORMAT_SUFFIXES.values(), ".tiff", ".jpeg"}


def _plan(
    inputs: list[Path], output: Path, scale: int, image_format: str, summary: UpscaleSummary
) -> list[tuple[Path, Path]]:
    """``(source, destination)`` pairs; files of input folders named like outputs are left out
    (recorded in ``summary``), so an output folder inside or above the inputs works."""
    if output.suffix.lower() in IMAGE_EXTENSIONS and not output.is_dir():
        return [(inputs[0], output)]
    jobs = []
    for item in inputs:
        if item.is_dir():
            unreadable: list[tuple[Path, str]] = []
            found_images = find_images(item, unreadable=unreadable)
            for folder, reason in unreadable:
                summary.failed.append((folder, reason))
                Bar.write(f"failed {folder}: {reason}", file=sys.stderr)
            for found in found_images:
                if is_earlier_output(found, output, _OUTPUT_SUFFIXES):
                    summary.earlier_outputs.append(found)
                else:
                    relative = found.relative_to(item).parent
                    jobs.append(
                        (found, output / relative / output_name(found, scale, image_format))
                    )
        else:
            jobs.append((item, output / output_name(item, scale, image_format)))
    return jobs


def upscale_files(
    inputs: Iterable[PathLike],
    output: PathLike,
    model: DRN | Bicubic | PathLike = "default",
    *,
    tile: int | None = DEFAULT_TILE,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    self_ensemble: bool = False,
    precision: str = "auto",
    image_format: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    network: Runner | None = None,
) -> UpscaleSummary:
    """Upscales image files and folders, each file on its own: a failure is reported and the
    others still get done.

    ``photo.jpg`` becomes ``output/photo_x4.png``; a folder is searched recursively
    (:func:`drn_tf.images.find_images`) and keeps its layout: ``folder/a/b.jpg`` becomes
    ``output/a/b_x4.png``. Files in input folders named like outputs (``*_x4.png``, …) inside
    ``output`` or beside their source are taken for earlier outputs and skipped
    (:func:`is_earlier_output`), so ``output`` may lie inside or above the inputs.
    With one input file, an ``output`` with an image suffix is the file to write.

    Files keep what they are (:func:`drn_tf.images.load_picture`, :func:`save_picture`):
    gray stays gray, alpha is kept (upscaled with bicubic), 16 bits stay 16 bits where the
    format holds them, the ICC profile is carried over. Outputs are written atomically; an
    input is never overwritten; an existing output is kept unless ``overwrite``.

    Args:
        inputs: image files and/or folders.
        output: destination folder (created if needed), or an image file for a single input.
        model, tile, tile_overlap, self_ensemble, precision, network: as :func:`upscale`.
        image_format: ``png``, ``jpg``, ``webp`` or ``tiff``; default png, or the suffix of an
            output file.
        overwrite: replace existing outputs.
        progress: tqdm progress bars over the files and over a large image's tiles (stderr);
            failures and notes are printed on stderr either way.

    Returns:
        An :class:`UpscaleSummary`; ``summary.failed`` lists ``(input, reason)``.

    Raises:
        FileNotFoundError: an input does not exist (checked before any work).
        ValueError: no image files in the inputs, or a bad setting.
    """
    inputs, output = [Path(p) for p in inputs], Path(output)
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: input does not exist")
    _check_tiles(tile, tile_overlap)
    resolve_precision(precision)  # a bad name fails before any work
    names_file = output.suffix.lower() in IMAGE_EXTENSIONS and not output.is_dir()
    by_suffix = {s: f for f, s in FORMAT_SUFFIXES.items()} | {".tiff": "tiff", ".jpeg": "jpg"}
    if output.suffix.lower() in (".bmp", ".gif") and not output.is_dir():
        raise ValueError(
            f"{output}: outputs are .png, .jpg, .webp or .tif files, not {output.suffix}"
        )
    if names_file and (len(inputs) != 1 or inputs[0].is_dir()):
        raise ValueError(f"{output}: an image file name as output takes one input image")
    if image_format is None:
        image_format = by_suffix[output.suffix.lower()] if names_file else "png"
    elif image_format not in FORMAT_SUFFIXES:
        raise ValueError(
            f"format must be one of {', '.join(FORMAT_SUFFIXES)}, got {image_format!r}"
        )
    elif names_file and output.suffix.lower() not in (
        FORMAT_SUFFIXES[image_format],
        ".tiff",
        ".jpeg",
    ):
        raise ValueError(f"{output}: the suffix does not match the format {image_format}")
    model = _resolve_model(model)
    summary = UpscaleSummary(output)
    jobs = _plan(inputs, output, model.scale, image_format, summary)
    if not jobs:
        raise ValueError("no image files found in the inputs")
    # realpath, not Path.resolve: a symlink loop must fail its own file, not the whole run.
    sources = {Path(os.path.realpath(source)) for source, _ in jobs}
    claimed: dict[Path, Path] = {}

    def fail(source: Path, reason: str) -> None:
        summary.failed.append((source, reason))
        Bar.write(f"failed {source}: {reason}", file=sys.stderr)

    for source, destination in Bar(jobs, desc="upscale", unit="image", disable=not progress):
        target = Path(os.path.realpath(destination))
        if target in sources:
            fail(source, f"its output {destination} would replace an input file")
            continue
        if target in claimed:
            fail(source, f"{claimed[target]} has the same output {destination}")
            continue
        claimed[target] = source
        if destination.exists() and not overwrite:
            summary.kept.append(destination)
            continue
        try:
            picture = load_picture(source)
            pixels = upscale(
                picture.pixels, model, tile=tile, tile_overlap=tile_overlap,
                self_ensemble=self_ensemble, precision=precision, progress=progress,
                network=network,
            )  # fmt: skip
            notes = save_picture(destination, Picture(pixels, picture.icc_profile), image_format)
            if picture.frames > 1:  # animations and multi-page files: the first frame only
                notes.append(f"only the first of its {picture.frames} frames was upscaled")
        except (ImageReadError, OutOfMemoryError, OSError, ValueError) as error:
            reason = str(error)
            fail(source, reason.removeprefix(f"{source}: "))
            continue
        summary.written.append(destination)
        for note in notes:
            Bar.write(f"note {destination}: {note}", file=sys.stderr)
    return summary
