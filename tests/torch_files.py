"""PyTorch checkpoint files for the tests, written without torch: both of PyTorch's layouts,
DRN state dicts in the authors' key layout, and pickles that would run code if loaded naively.

The layouts follow what ``torch.save`` produces: a zip holding ``data.pkl``, ``data/<key>``,
``version``, ``byteorder``; or, before PyTorch 1.6, a sequence of pickles followed by raw storages.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------
# writing PyTorch files without torch
# --------------------------------------------------------------------------------------------

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


def write_legacy_header(file) -> None:
    """The legacy ``torch.save`` header: pickled magic number, protocol version, system info."""
    pickle.dump(LEGACY_MAGIC, file, protocol=2)
    pickle.dump(LEGACY_PROTOCOL, file, protocol=2)
    pickle.dump(
        {
            "protocol_version": LEGACY_PROTOCOL,
            "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4},
        },
        file,
        protocol=2,
    )


class TorchGlobal:
    """A name the pickle refers to with a GLOBAL opcode (``torch._utils._rebuild_tensor_v2``)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle wants reduce callables to be callable
        raise NotImplementedError


REBUILD_TENSOR_V2 = TorchGlobal("torch._utils", "_rebuild_tensor_v2")
STORAGE_TYPES = {
    np.dtype(np.float32): TorchGlobal("torch", "FloatStorage"),
    np.dtype(np.float64): TorchGlobal("torch", "DoubleStorage"),
    np.dtype(np.int64): TorchGlobal("torch", "LongStorage"),
}


class Storage:
    """A flat typed storage, saved out of band under ``key``."""

    def __init__(self, key: str, values: np.ndarray):
        self.key, self.values = key, np.ascontiguousarray(values).reshape(-1)


class Tensor:
    """A strided view of a storage, pickled the way torch.Tensor.__reduce_ex__ does."""

    def __init__(self, storage: Storage, offset: int, size, stride):
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)

    def __reduce__(self):
        return (
            REBUILD_TENSOR_V2,
            (self.storage, self.offset, self.size, self.stride, False, OrderedDict()),
        )


_STORAGE_KEYS = itertools.count()  # torch names storages by distinct decimal strings


def new_storage(values: np.ndarray) -> Storage:
    return Storage(str(next(_STORAGE_KEYS)), values)


def tensor(array: np.ndarray) -> Tensor:
    """A contiguous tensor with its own storage."""
    array = np.ascontiguousarray(array)
    strides = tuple(s // array.itemsize for s in array.strides)
    return Tensor(new_storage(array), 0, array.shape, strides)


class TorchPickler(pickle._Pickler):  # the pure-Python pickler lets us emit arbitrary GLOBALs
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, legacy: bool = False):
        super().__init__(file, protocol=2)  # torch.save's default protocol
        self.legacy = legacy
        self.storages: dict[str, Storage] = {}

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        self.storages[obj.key] = obj
        pid = ("storage", STORAGE_TYPES[obj.values.dtype], obj.key, "cpu", obj.values.size)
        return pid + (None,) if self.legacy else pid  # legacy ids also carry view metadata

    def save_torch_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[TorchGlobal] = save_torch_global


def to_state_dict(arrays: dict, metadata: bool = True) -> OrderedDict:
    """An OrderedDict of tensors, with torch's ``_metadata`` attribute like real state dicts."""
    state = OrderedDict((k, tensor(v)) for k, v in arrays.items())
    if metadata:
        state._metadata = OrderedDict([("", {"version": 1})])
    return state


def write_torch_zip(path: Path, obj, archive: str = "archive", byteorder: str = "little") -> Path:
    """The ``torch.save`` zip layout (PyTorch >= 1.6)."""
    buffer = io.BytesIO()
    pickler = TorchPickler(buffer)
    pickler.dump(obj)
    order = "<" if byteorder == "little" else ">"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", buffer.getvalue())
        zf.writestr(f"{archive}/byteorder", byteorder)
        for key, storage in pickler.storages.items():
            raw = storage.values.astype(storage.values.dtype.newbyteorder(order)).tobytes()
            zf.writestr(f"{archive}/data/{key}", raw)
        zf.writestr(f"{archive}/version", "3\n")
    return path


def write_torch_legacy(path: Path, obj) -> Path:
    """The legacy ``torch.save`` layout (``_use_new_zipfile_serialization=False``): pickled magic
    number, protocol version and system info, the pickled object (storages as persistent ids),
    the pickled list of storage keys, then each storage as an int64 element count followed by
    its raw little-endian bytes."""
    with open(path, "wb") as file:
        write_legacy_header(file)
        pickler = TorchPickler(file, legacy=True)
        pickler.dump(obj)
        keys = sorted(pickler.storages)
        pickle.dump(keys, file, protocol=2)
        for key in keys:
            values = pickler.storages[key].values
            file.write(struct.pack("<q", values.size))
            file.write(values.astype(values.dtype.newbyteorder("<")).tobytes())
    return path


# --------------------------------------------------------------------------------------------
# a small DRN checkpoint in the authors' key layout (reference §2.6 item 5)
# --------------------------------------------------------------------------------------------


def authors_state_dict(scale: int, n_blocks: int, n_feats: int, seed: int = 0) -> dict:
    """Random weights under the authors' keys and PyTorch shapes ``[out, in, kh, kw]``."""
    rng = np.random.default_rng(seed)
    state = {}

    def conv(key, cout, cin, k, bias=True):
        state[f"{key}.weight"] = rng.normal(0, 0.2, (cout, cin, k, k)).astype(np.float32)
        if bias:
            state[f"{key}.bias"] = rng.normal(0, 0.2, (cout,)).astype(np.float32)

    phases = int(math.log2(scale))
    conv("sub_mean", 3, 3, 1)
    conv("add_mean", 3, 3, 1)
    conv("head", n_feats, 3, 3)
    for k in range(phases):
        width = n_feats * 2**k
        conv(f"down.{k}.dual_module.0.0", width, width, 3, bias=False)
        conv(f"down.{k}.dual_module.1", 2 * width, width, 3, bias=False)
    width = n_feats * 2**phases
    for k in range(phases):
        for j in range(n_blocks):
            conv(f"up_blocks.{k}.{j}.body.0", width, width, 3)
            conv(f"up_blocks.{k}.{j}.body.2", width, width, 3)
            conv(f"up_blocks.{k}.{j}.body.3.conv_du.0", width // 16, width, 1)
            conv(f"up_blocks.{k}.{j}.body.3.conv_du.2", width, width // 16, 1)
        conv(f"up_blocks.{k}.{n_blocks}.0", 4 * width, width, 3)
        skip = n_feats * 2 ** (phases - k - 1)
        conv(f"up_blocks.{k}.{n_blocks + 1}", skip, width, 1)
        width = 2 * skip
    tails = [n_feats * 2**phases] + [n_feats * 2 ** (phases - k) for k in range(phases)]
    for k, width in enumerate(tails):
        conv(f"tail.{k}", 3, width, 3)
    return state


def authors_dual_states(count: int, n_feats: int, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "dual_module.0.0.weight": rng.normal(0, 0.2, (n_feats, 3, 3, 3)).astype(np.float32),
            "dual_module.1.weight": rng.normal(0, 0.2, (3, n_feats, 3, 3)).astype(np.float32),
        }
        for _ in range(count)
    ]


# --------------------------------------------------------------------------------------------
# pickles that run code when unpickled naively
# --------------------------------------------------------------------------------------------


class SystemCall:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalCall:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import builtins

        return (builtins.eval, (f"__import__('pathlib').Path({str(self.marker)!r}).touch()",))


# The refused global: os.system pickles as posix.system; builtins.eval as __builtin__.eval in
# protocols < 3 (pickle's fix_imports) and builtins.eval from protocol 3.
PAYLOADS = {
    "system": (SystemCall, r"'(posix|os|nt)\.system'"),
    "eval": (EvalCall, r"'(builtins|__builtin__)\.eval'"),
}


def payload_pickle(kind: str, marker: Path, protocol: int) -> bytes:
    payload_cls, _ = PAYLOADS[kind]
    # Hidden inside what otherwise looks like a state dict.
    return pickle.dumps(OrderedDict([("head.weight", payload_cls(marker))]), protocol=protocol)
