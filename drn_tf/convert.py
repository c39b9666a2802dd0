"""Loading the authors' released PyTorch checkpoints (``DRNS4x.pt``, ``DRNS4x_dual_model.pt``, …).

A checkpoint is untrusted input: PyTorch files are pickles, and unpickling can run any code.
:func:`read_checkpoint` therefore never imports torch and never calls ``pickle.load`` with the
default class lookup: its unpickler resolves only the few names a state dict is made of
(``OrderedDict``, tensor rebuilding, storage types) and refuses everything else. Tensors come
back as numpy arrays, so torch is not needed at all.

Both of PyTorch's file layouts are read: the zip archive (``torch.save`` since 1.6) and the
older sequence of pickles followed by raw storages.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import keras
import numpy as np

from drn_tf.models import DRN, DRNConfig, build_drn_bundle, save_model_atomic

# torch storage class name -> numpy dtype of its elements.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with the file and the reason in the message."""


class _Storage:
    """A raw storage named in the pickle; its bytes are read once the pickle is done."""

    def __init__(self, key: str, dtype):
        self.key, self.dtype, self.array = key, dtype, None


class _TensorRef:
    """A tensor rebuilt from a storage after the storage's bytes are known."""

    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialize(self) -> np.ndarray:
        data, size, stride, offset = self.storage.array, self.size, self.stride, self.offset
        integers = all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride))
        if data is None or not integers or len(size) != len(stride):
            raise CheckpointError(f"storage {self.storage.key}: missing, or an invalid view")
        # A crafted view must not reach outside its storage (as_strided does not check).
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if all(size) and last >= data.size:
            raise CheckpointError(f"storage {self.storage.key} is too short for its tensor")
        return np.lib.stride_tricks.as_strided(
            data[offset:], shape=tuple(size), strides=tuple(s * data.itemsize for s in stride)
        ).copy()


def _rebuild_tensor(storage, offset, size, stride, *unused) -> _TensorRef:
    return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co. inside the pickle."""

    def __init__(self, name: str):
        self.dtype = _STORAGE_DTYPES[name]


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only state-dict building blocks; any other global is refused before it exists."""

    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(
            f"{self.path}: refusing to load '{module}.{name}': a checkpoint may hold only "
            "tensors and containers, and this file asks to import other code"
        )

    def persistent_load(self, pid):
        if not (
            isinstance(pid, tuple)
            and len(pid) >= 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
        ):
            raise CheckpointError(f"{self.path}: unsupported storage record {pid!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError(f"{self.path}: storage views (pre-1.0 PyTorch) are not supported")
        key = str(pid[2])
        return self.storages.setdefault(key, _Storage(key, pid[1].dtype))


def _unpickle(file, path: Path):
    unpickler = _SafeUnpickler(file, path)
    return unpickler.load(), unpickler.storages


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Reads a PyTorch checkpoint without executing code from it.

    Returns the pickled object with every tensor as a numpy array (for the authors' files: an
    ``OrderedDict`` state dict, or a list of them for the dual models).

    Raises:
        CheckpointError: the file is missing, truncated, not a PyTorch checkpoint, or asks to
            import anything but tensor and container types.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
        return _materialize(obj)
    except CheckpointError as error:
        message = str(error)
        raise CheckpointError(
            message if message.startswith(str(path)) else f"{path}: {message}"
        ) from None
    except Exception as error:  # any decoding failure means a bad file
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {error}); "
            "is the file truncated or of another kind?"
        ) from error


def _read_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if not pickles:
            raise CheckpointError("a zip file, but not a PyTorch checkpoint (no data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        big_endian = (
            prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() == b"big"
        )
        obj, storages = _unpickle(io.BytesIO(archive.read(pickles[0])), path)
        for key, storage in storages.items():
            dtype = np.dtype(storage.dtype).newbyteorder(">" if big_endian else "<")
            storage.array = np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype)
    return obj


def _read_legacy(path: Path) -> Any:
    """The pre-1.6 layout: magic, protocol, system info, the object, storage keys, raw storages."""
    with open(path, "rb") as file:
        try:
            magic, _ = _unpickle(file, path)
        except CheckpointError:
            raise
        except Exception as error:
            file.seek(0)
            if file.read(4) == b"PK\x03\x04":  # a zip archive's start without its end
                raise CheckpointError(
                    "truncated or corrupt checkpoint (a zip archive with no end: cut short?)"
                ) from error
            raise CheckpointError(
                "not a PyTorch checkpoint (neither a zip archive nor a legacy PyTorch file)"
            ) from error
        if magic != _LEGACY_MAGIC:
            raise CheckpointError("not a PyTorch checkpoint (no PyTorch magic number)")
        _unpickle(file, path)  # protocol version
        _unpickle(file, path)  # system info; little-endian is assumed, as on every torch host
        obj, storages = _unpickle(file, path)
        keys, _ = _unpickle(file, path)
        for key in keys:
            storage = storages[str(key)]
            header = file.read(8)
            count = struct.unpack("<q", header)[0] if len(header) == 8 else -1
            raw = file.read(max(count, 0) * np.dtype(storage.dtype).itemsize)
            if count < 0 or len(raw) != count * np.dtype(storage.dtype).itemsize:
                raise CheckpointError(f"truncated: storage {key} is incomplete")
            storage.array = np.frombuffer(raw, storage.dtype)
    return obj


def _materialize(obj):
    if isinstance(obj, _TensorRef):
        return obj.materialize()
    if isinstance(obj, dict):
        return type(obj)((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


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
