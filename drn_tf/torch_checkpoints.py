"""Reading PyTorch checkpoint files (the authors' ``DRNS4x.pt``, ``DRNS4x_dual_model.pt``, …)
safely, without torch.

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
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CheckpointError", "read_checkpoint"]

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
