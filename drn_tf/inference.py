"""Inference with a saved DRN model: load it, upscale arrays, upscale image files and folders.

::

    model = load_model("runs/drn/model.keras")      # or load_model() for the packaged ×4 model
    sr = upscale(model, lr)                          # uint8 (H, W, 3) -> uint8 (4H, 4W, 3)
    upscale_files(["photos/"], "out/", model)        # photos/a/b.jpg -> out/a/b_x4.png

The whole image goes through the network in one pass (as in the authors' evaluation); only the
top output (×scale) is kept, clamped to 0..255 and rounded to 8 bits.
"""

from __future__ import annotations

import os
import sys
import weakref
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from drn_tf import serving
from drn_tf.images import ImageReadError, find_images, read_image, write_image
from drn_tf.models import DRN

__all__ = ["DEFAULT_MODEL_PATH", "load_model", "upscale", "upscale_files"]

PathLike = str | os.PathLike[str]

#: The packaged ×4 model that ``load_model("default")`` returns.
DEFAULT_MODEL_PATH = Path(__file__).parent / "weights" / "drn_x4.keras"

# One traced function per model (weak keys: the cache never keeps a model alive).
_RUNNERS: weakref.WeakKeyDictionary[keras.Model, Callable] = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_model(name_or_path: PathLike = "default") -> DRN:
    """Loads a DRN model (primal + dual networks) from a ``.keras`` file.

    Args:
        name_or_path: ``"default"`` for the packaged model (:data:`DEFAULT_MODEL_PATH`), or the
            path of a ``.keras`` file written by ``drn-tf convert``, ``drn-tf train`` or
            :func:`drn_tf.models.save_model_atomic`.

    Returns:
        The :class:`~drn_tf.models.DRN` (a ``DualRegressionModel`` for files written by training,
        which is a ``DRN`` too), uncompiled. ``model.scale`` is its upscaling factor.

    Raises:
        FileNotFoundError: the file (or the packaged model) does not exist.
        ValueError: a folder, not a ``.keras`` file, a truncated or corrupt archive, a file Keras
            cannot load, or a Keras model that is not a DRN. The message starts with the path.
    """
    if str(name_or_path) == "default":
        path = DEFAULT_MODEL_PATH
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: the packaged default model is not installed; "
                "pass the path of a .keras model instead"
            )
    else:
        path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model file does not exist")
    if path.is_dir():
        raise ValueError(f"{path}: a folder, not a .keras model file")
    if path.suffix.lower() in (".pt", ".pth"):
        raise ValueError(f"{path}: a PyTorch checkpoint; convert it first with `drn-tf convert`")
    if path.suffix != ".keras":
        raise ValueError(f"{path}: not a .keras model file (suffix {path.suffix or 'none'!r})")
    _check_archive(path)

    # Files written by `drn-tf train` hold a DualRegressionModel: register it first (imported
    # here, not at the top, because drn_tf.training imports this module).
    import drn_tf.training  # noqa: F401

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - Keras raises ValueError, TypeError, KeyError, OSError…
        raise ValueError(
            f"{path}: cannot load the model ({type(error).__name__}: {_first_line(error)})"
        ) from error
    if not isinstance(model, DRN):
        raise ValueError(f"{path}: not a DRN model (found a Keras {type(model).__name__})")
    return model


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


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------


def _runner(model: keras.Model) -> Callable:
    """:func:`drn_tf.serving.super_resolve_uint8` of ``model`` as one ``tf.function`` traced once
    for every image size."""
    runner = _RUNNERS.get(model)
    if runner is None:
        network = weakref.ref(model)

        @tf.function(input_signature=[serving.UINT8_SPEC], reduce_retracing=True)
        def runner(images):
            return serving.super_resolve_uint8(network(), images)

        _RUNNERS[model] = runner
    return runner


def upscale(model: DRN, image_uint8: np.ndarray) -> np.ndarray:
    """Super-resolves one image with the top (×scale) output of ``model``.

    Args:
        model: a :class:`~drn_tf.models.DRN` (any Keras model mapping float32
            ``(N, H, W, 3)`` on 0..255 to an image or a list of images, the last one kept, works).
        image_uint8: uint8 ``(H, W, 3)`` RGB on 0..255, any ``H, W >= 1``.

    Returns:
        uint8 ``(s·H, s·W, 3)`` RGB, ``s = model.scale``: the serving function
        :func:`drn_tf.serving.super_resolve_uint8` (clamped to 0..255, rounded half to even as
        the evaluation protocol quantizes, NaN → 0), byte for byte as exported artifacts.
    """
    image = np.asarray(image_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image {image.shape}")
    return _runner(model)(tf.convert_to_tensor(image[None])).numpy()[0]


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _collect(inputs: Iterable[PathLike], output_dir: Path, suffix: str) -> list[tuple[Path, Path]]:
    """``(source, destination)`` pairs for image files and folders; checks inputs first."""
    inputs = [Path(p) for p in inputs]
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: input does not exist")
    output_real = output_dir.resolve()
    jobs: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for item in inputs:
        if item.is_dir():
            files = [
                f for f in find_images(item) if not f.resolve().is_relative_to(output_real)
            ]  # earlier outputs
            pairs = [
                (f, output_dir / f.relative_to(item).parent / f"{f.stem}{suffix}.png")
                for f in files
            ]
        else:
            pairs = [(item, output_dir / f"{item.stem}{suffix}.png")]
        for source, destination in pairs:
            if source.resolve() not in seen:
                seen.add(source.resolve())
                jobs.append((source, destination))
    by_destination: dict[Path, Path] = {}
    for source, destination in jobs:
        if destination in by_destination:
            raise ValueError(
                f"{by_destination[destination]} and {source} would both be written "
                f"to {destination}; upscale them separately"
            )
        by_destination[destination] = source
    return jobs


def upscale_files(
    inputs: Iterable[PathLike],
    output_dir: PathLike,
    model: DRN,
    suffix: str | None = None,
    progress: bool = True,
) -> list[Path]:
    """Upscales image files and folders into ``output_dir`` as PNG.

    ``photo.jpg`` becomes ``output_dir/photo_x4.png``; a folder is searched recursively
    (:func:`drn_tf.images.find_images`) and keeps its layout: ``folder/a/b.jpg`` becomes
    ``output_dir/a/b_x4.png``. Images of any mode are read as RGB (:func:`drn_tf.images.read_image`:
    grayscale expanded, transparency composited over white). Each file is written atomically.
    A file that cannot be read (or does not fit in memory) is reported on stderr with its path
    and the reason, and skipped; the others are still written.

    Args:
        inputs: image files and/or folders.
        output_dir: destination folder, created if needed. Files already under it are not
            picked up from an input folder that contains it.
        model: the DRN model (see :func:`upscale`).
        suffix: appended to each file's stem; default ``f"_x{model.scale}"``.
        progress: show a tqdm progress bar over the files (on stderr).

    Returns:
        The written paths, in input order.

    Raises:
        FileNotFoundError: an input does not exist (checked before any work).
        ValueError: two inputs would write the same output file, no image files were found, or
            none of them could be read.
    """
    output_dir = Path(output_dir)
    suffix = f"_x{model.scale}" if suffix is None else suffix
    jobs = _collect(inputs, output_dir, suffix)
    if not jobs:
        raise ValueError("no image files found in the inputs")
    written: list[Path] = []
    bar = tqdm(jobs, desc="upscale", unit="image", disable=not progress)
    for source, destination in bar:
        try:
            image = read_image(source)
            result = upscale(model, image)
        except ImageReadError as error:
            tqdm.write(f"skipped {error}", file=sys.stderr)
            continue
        except tf.errors.ResourceExhaustedError:
            tqdm.write(
                f"skipped {source}: out of memory for a {image.shape[1]}x{image.shape[0]} image",
                file=sys.stderr,
            )
            continue
        write_image(destination, result)
        written.append(destination)
    if not written:
        raise ValueError(f"none of the {len(jobs)} input image(s) could be read")
    return written
