"""Converting the authors' released PyTorch checkpoints (``DRNS4x.pt``, ``DRNS4x_dual_model.pt``,
…) into a :class:`~drn_tf.models.DRN`: the key-by-key weight mapping, its checks, and one
``.keras`` file holding primal and duals.

The files are read by :func:`drn_tf.torch_checkpoints.read_checkpoint`, which runs no code
from them and needs no torch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import keras
import numpy as np

from drn_tf.models import DRN, DRNConfig, build_drn_bundle, save_model_atomic
from drn_tf.torch_checkpoints import CheckpointError, read_checkpoint


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    """PyTorch ``[out, in, kh, kw]`` → Keras ``[kh, kw, in, out]``."""
    return np.transpose(weight, (2, 3, 1, 0))


def shuffle_permutation(out_channels: int, scale: int = 2) -> np.ndarray:
    """Output-channel order that makes ``depth_to_space`` read what PixelShuffle read.

    Keras channel ``p·C + c`` (sub-pixel p) must hold PyTorch channel ``c·r² + p``.
    """
    channels = out_channels // scale**2
    return np.array([c * scale**2 + p for p in range(scale**2) for c in range(channels)])


def primal_mapping(primal: keras.Model, cfg: DRNConfig):
    """Yields ``(torch_key, keras_variable, transform)`` for every weight of the primal net."""

    def conv_pair(key, layer, permute=None):
        kernel = _conv_kernel if permute is None else (lambda w: _conv_kernel(w)[..., permute])
        yield f"{key}.weight", layer.kernel, kernel
        if getattr(layer, "use_bias", True):
            yield (
                f"{key}.bias",
                layer.bias,
                (lambda b: b) if permute is None else (lambda b: b[permute]),
            )

    get = primal.get_layer
    yield from conv_pair("sub_mean", get("sub_mean"))
    yield from conv_pair("add_mean", get("add_mean"))
    yield from conv_pair("head", get("head"))
    for k in range(cfg.phases):
        yield from conv_pair(f"down.{k}.dual_module.0.0", get(f"down_{k}").down)
        yield from conv_pair(f"down.{k}.dual_module.1", get(f"down_{k}").conv)
    for k in range(cfg.phases + 1):
        yield from conv_pair(f"tail.{k}", get(f"tail_{k}"))
    for k in range(cfg.phases):
        for j in range(cfg.n_blocks):
            block, key = get(f"up_{k}_rcab_{j}"), f"up_blocks.{k}.{j}.body"
            yield from conv_pair(f"{key}.0", block.conv1)
            yield from conv_pair(f"{key}.2", block.conv2)
            yield from conv_pair(f"{key}.3.conv_du.0", block.attention.squeeze)
            yield from conv_pair(f"{key}.3.conv_du.2", block.attention.excite)
        upsample = get(f"up_{k}_upsample")
        yield from conv_pair(
            f"up_blocks.{k}.{cfg.n_blocks}.0", upsample, shuffle_permutation(upsample.filters)
        )
        yield from conv_pair(f"up_blocks.{k}.{cfg.n_blocks + 1}", get(f"up_{k}_project"))


def _dual_mapping(dual: keras.Model):
    block = dual.get_layer("down")
    yield "dual_module.0.0.weight", block.down.kernel, _conv_kernel
    yield "dual_module.1.weight", block.conv.kernel, _conv_kernel


def describe_state_dict(state_dict: dict) -> str:
    """A guess of the DRN configuration a primal state dict was saved from, for error messages."""
    try:
        feats = state_dict["head.weight"].shape[0]
        phases = sum(1 for key in state_dict if re.fullmatch(r"tail\.\d+\.weight", key)) - 1
        blocks = sum(
            1 for key in state_dict if re.fullmatch(r"up_blocks\.0\.\d+\.body\.0\.weight", key)
        )
        return f"the file looks like scale {2**phases}, n_blocks {blocks}, n_feats {feats}"
    except (KeyError, AttributeError, IndexError):
        return "the file does not look like a DRN primal model"


def _check(mapping, state_dict: dict, path: Path, what: str) -> list:
    """Checks every key and shape; returns the ``(variable, value)`` pairs to assign."""
    state_dict = {re.sub(r"^module\.", "", k): v for k, v in state_dict.items()}
    mapping = list(mapping)
    expected = {key for key, _, _ in mapping}
    missing = sorted(expected - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected)
    hint = describe_state_dict(state_dict) if what.startswith("primal") else ""
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: does not match the {what}: "
            + (f"missing keys {missing[:5]}{' …' if len(missing) > 5 else ''}" if missing else "")
            + ("; " if missing and unexpected else "")
            + (
                f"unexpected keys {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}"
                if unexpected
                else ""
            )
            + (f" ({hint})" if hint else "")
        )
    values = []
    for key, variable, transform in mapping:
        array = np.asarray(state_dict[key])
        value = transform(array)
        if tuple(value.shape) != tuple(variable.shape):
            shape = tuple(variable.shape)
            if len(shape) == 4:  # report it in the file's [out, in, kh, kw] layout
                shape = (shape[3], shape[2], shape[0], shape[1])
            raise CheckpointError(
                f"{path}: key '{key}' has shape {tuple(array.shape)} in the file, but the "
                f"{what} expects {shape}" + (f" ({hint})" if hint else "")
            )
        values.append((variable, value.astype(np.float32)))
    return values


def _read_primal(path: Path) -> dict:
    """The primal state dict in ``path``, checked to be one."""
    state_dict = read_checkpoint(path)
    if isinstance(state_dict, (list, tuple)) and all(isinstance(s, dict) for s in state_dict):
        raise CheckpointError(
            f"{path}: a list of {len(state_dict)} state dicts, not one state dict "
            "(is this the dual checkpoint? pass it as --dual-checkpoint)"
        )
    if not isinstance(state_dict, dict):
        raise CheckpointError(
            f"{path}: expected a state dict (a mapping of names to tensors), "
            f"found a {type(state_dict).__name__}"
        )
    return state_dict


def _read_duals(path: Path) -> list | tuple:
    """The list of dual state dicts in ``path``, checked to be a list."""
    states = read_checkpoint(path)
    if isinstance(states, dict):
        raise CheckpointError(
            f"{path}: a single state dict; the dual checkpoint is a "
            "list of them (is this the primal checkpoint?)"
        )
    if not isinstance(states, (list, tuple)):
        raise CheckpointError(
            f"{path}: expected a list of dual state dicts, found a {type(states).__name__}"
        )
    return states


def _assign(model: DRN, state_dict: dict, path: Path, states=None, dual_path=None) -> DRN:
    """Checks every key and shape of the read checkpoints against ``model``, then assigns."""
    cfg = model.drn_config
    values = _check(
        primal_mapping(model.primal, cfg),
        state_dict,
        path,
        f"primal network of {cfg.variant} ×{cfg.scale} (n_blocks {cfg.n_blocks}, "
        f"n_feats {cfg.n_feats})",
    )
    if states is not None:
        if len(states) != len(model.duals):
            raise CheckpointError(
                f"{dual_path}: expected a list of {len(model.duals)} dual "
                f"state dicts for ×{cfg.scale}, found {len(states)}"
            )
        for k, (dual, state) in enumerate(zip(model.duals, states, strict=True)):
            values += _check(
                _dual_mapping(dual),
                state,
                dual_path,
                f"dual network {k} of {cfg.variant} ×{cfg.scale} (n_feats {cfg.n_feats})",
            )
    # Only now that every file and shape is known good, so a bad file changes nothing.
    for variable, value in values:
        variable.assign(value)
    return model


def load_authors_weights(
    model: DRN, checkpoint: str | os.PathLike, dual_checkpoint: str | os.PathLike | None = None
) -> DRN:
    """Loads the authors' primal (and optionally dual) checkpoint into ``model`` in place.

    ``checkpoint`` is a state dict (``DRNS4x.pt``); ``dual_checkpoint`` a list of state dicts,
    one per dual network (``DRNS4x_dual_model.pt``). Keys and shapes are all checked first.
    """
    path = Path(checkpoint)
    state_dict = _read_primal(path)
    if dual_checkpoint is None:
        return _assign(model, state_dict, path)
    dual_path = Path(dual_checkpoint)
    return _assign(model, state_dict, path, _read_duals(dual_path), dual_path)


def convert_checkpoint(
    checkpoint: str | os.PathLike,
    variant: str,
    scale: int,
    output: str | os.PathLike,
    dual_checkpoint: str | os.PathLike | None = None,
    **overrides,
) -> DRN:
    """Converts the authors' checkpoint(s) into one ``.keras`` file holding primal and duals.

    Both files are read and checked to be a state dict (and a list of them) before the model is
    built. Without ``dual_checkpoint`` the dual networks keep a fresh initialisation (enough for
    inference; fine-tuning and adaptation want the released duals), and ``model.info["duals"]``
    says so, in the saved file too.

    Returns the converted :class:`DRN`; ``keras.saving.load_model(output)`` gives it back.
    """
    path = Path(checkpoint)
    state_dict = _read_primal(path)
    dual_path = None if dual_checkpoint is None else Path(dual_checkpoint)
    states = None if dual_path is None else _read_duals(dual_path)
    model = build_drn_bundle(variant, scale, **overrides)
    _assign(model, state_dict, path, states, dual_path)
    if dual_checkpoint is None:
        model.info["duals"] = "random initialisation: no dual checkpoint was converted"
    save_model_atomic(model, output)
    return model
