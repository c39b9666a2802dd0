"""Loading DRN models: the packaged ones by scale, or ``.keras`` files, checked, in the
precision asked for.

::

    model = load_model("default")                               # the packaged ×4 model
    model_x2 = load_model("default", scale=2)                   # the packaged ×2 (also ×8)
    model_fast = load_model("fast")                             # the fast ×4 tier (video)
    model = load_model("run/best.keras", policy="mixed_bfloat16")  # computes in bfloat16

A file that is not a complete DRN model of the scale asked for fails with a one-line
``ValueError`` that starts with its path, before Keras reads it where possible.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import keras
import numpy as np

# dual_regression registers DualRegressionModel, the class of files `drn-tf train` writes.
from drn_tf import dual_regression  # noqa: F401
from drn_tf.bundled import model_path
from drn_tf.models import DRN, build_drn_bundle

__all__ = ["check_trained_duals", "forget_random_duals", "has_random_duals", "load_model"]

PathLike = str | os.PathLike[str]


def load_model(
    name_or_path: PathLike = "default", scale: int | None = None, *, policy: str = "float32"
) -> DRN:
    """Loads a DRN model (primal + dual networks) from a ``.keras`` file.

    Args:
        name_or_path: ``"default"`` for the packaged model of ``scale``
            (:data:`drn_tf.bundled.DEFAULT_MODEL_PATHS`), ``"fast"`` for the packaged fast ×4
            model (:data:`drn_tf.bundled.FAST_MODEL_PATHS`), or the path of a ``.keras`` file
            written by ``drn-tf convert``, ``drn-tf train`` or
            :func:`drn_tf.models.save_model_atomic`.
        scale: the upscaling factor wanted: picks the packaged model (×4 when ``None``), and a
            file's model must have it.
        policy: the Keras dtype policy the model computes in: ``"float32"`` (whatever
            policy the file was saved in, and whatever Keras' global policy is),
            ``"mixed_bfloat16"`` or ``"mixed_float16"`` (weights stay float32 under each).

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
    return _in_policy(model, policy)


def has_random_duals(model: DRN) -> bool:
    """Whether ``model`` records random dual networks: converted without the authors' dual
    checkpoint (``model.info["duals"]``, as :func:`drn_tf.convert.convert_checkpoint` writes)."""
    return str(model.info.get("duals", "")).startswith("random")


def check_trained_duals(model: DRN, path: PathLike, use: str) -> None:
    """Raises ValueError when ``model`` (loaded from ``path``) records random dual networks
    (converted without the authors' dual checkpoint), which ``use`` needs trained."""
    if has_random_duals(model):
        raise ValueError(
            f"{path}: its dual networks are random (converted without --dual-checkpoint), "
            f"so {use} would mean nothing; convert with the authors' dual checkpoint"
        )


def forget_random_duals(model: DRN, path: PathLike) -> str | None:
    """For training ``model`` (loaded from ``path``, ``drn-tf train --init``) further: when it
    records random dual networks (:func:`has_random_duals`), drops that record and returns
    the note to show; else None.

    Not refused: a run trains the duals with the primal, as a fresh run trains its own random
    ones, so the primal's weights are still a head start. The record goes because the duals
    are trained from the first step: kept, it would make ``drn-tf adapt`` and ``evaluate
    --lr-only`` refuse the run's models."""
    if not has_random_duals(model):
        return None
    del model.info["duals"]
    return (
        f"note: {path} has random dual networks (converted without --dual-checkpoint): they "
        "start from random weights and train with the primal; convert with the authors' dual "
        "checkpoint to start from theirs"
    )


def _in_policy(model: DRN, policy: str) -> DRN:
    """``model`` computing in the dtype ``policy``. A ``.keras`` file keeps each layer's policy:
    a model saved by a mixed_bfloat16 run would compute in bfloat16 wherever it is loaded (and
    give exporters a graph they refuse), and a float32 file would ignore ``--precision`` when
    trained further. Weights are float32 under every policy, so the copy is exact."""
    wanted = {policy} - {"float32"}
    networks = (model.primal, *model.duals)
    if {layer.dtype_policy.name for net in networks for layer in net.layers} - {
        "float32"
    } == wanted:
        return model
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)  # what the layers built here compute in
    try:
        return _rebuilt(model)
    finally:
        keras.config.set_dtype_policy(previous)


def _rebuilt(model: DRN) -> DRN:
    """A copy of ``model`` built anew (in the current dtype policy) with its weights."""
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
