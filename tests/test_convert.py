"""Tests for drn_tf.convert: parity with the authors' PyTorch model, errors, and safe unpickling.

PyTorch is not needed: checkpoint files in both of PyTorch's layouts are written here with the
standard library, following the layout ``torch.save`` produces (a zip holding ``data.pkl``,
``data/<key>``, ``version``, ``byteorder``; or, before PyTorch 1.6, a sequence of pickles followed
by raw storages).
"""

from __future__ import annotations

import io
import itertools
import math
import os
import pickle
import re
import stat
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import DUAL_PT, IO_NPZ, PRIMAL_PT, REFERENCE, SMALL, needs_reference

from drn_tf import build_drn_bundle
from drn_tf.convert import (
    CheckpointError,
    convert_checkpoint,
    load_authors_weights,
    read_checkpoint,
)

# --------------------------------------------------------------------------------------------
# writing PyTorch files without torch
# --------------------------------------------------------------------------------------------

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


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


@pytest.fixture(scope="module")
def small_checkpoints(tmp_path_factory):
    """A DRN-S-like x4 checkpoint with n_blocks 1, n_feats 4, and its 2 duals."""
    folder = tmp_path_factory.mktemp("small_ckpt")
    state = authors_state_dict(4, **SMALL)
    duals = authors_dual_states(2, SMALL["n_feats"])
    primal = write_torch_zip(folder / "small.pt", to_state_dict(state))
    dual = write_torch_zip(folder / "small_dual.pt", [to_state_dict(d) for d in duals])
    return {"primal": primal, "dual": dual, "state": state, "duals": duals, "folder": folder}


def kernel(weight: np.ndarray) -> np.ndarray:
    """PyTorch [out, in, kh, kw] -> Keras [kh, kw, in, out]."""
    return weight.transpose(2, 3, 1, 0)


def assert_nothing_written(folder: Path, keep: set[str] = frozenset()):
    left = sorted(p.name for p in folder.iterdir() if p.name not in keep)
    assert left == [], f"files left behind: {left}"


# --------------------------------------------------------------------------------------------
# parity with the authors' PyTorch model
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_io():
    if not IO_NPZ.is_file():
        pytest.skip(f"reference outputs not found: {IO_NPZ}")
    with np.load(IO_NPZ) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not (PRIMAL_PT.is_file() and DUAL_PT.is_file()):
        pytest.skip(f"reference checkpoints not found under {REFERENCE}")
    folder = tmp_path_factory.mktemp("converted")
    output = folder / "drn_s_x4.keras"
    model = convert_checkpoint(PRIMAL_PT, "drn-s", 4, output, DUAL_PT)
    return model, output


@pytest.mark.slow
@needs_reference
def test_converted_outputs_match_pytorch(converted, reference_io):
    model, _ = converted
    outputs = model(reference_io["lr"])
    assert len(outputs) == 3
    for k, out in enumerate(outputs):
        np.testing.assert_allclose(np.asarray(out), reference_io[f"sr_{k}"], rtol=0, atol=1e-2)
    for k, dual in enumerate(model.duals):
        got = np.asarray(dual(reference_io[f"sr_{k + 1}"]))
        np.testing.assert_allclose(got, reference_io[f"dual_{k}"], rtol=0, atol=1e-2)


@pytest.mark.slow
@needs_reference
def test_converted_file_loads_in_one_call(converted, reference_io):
    model, output = converted
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]  # no temp files
    loaded = keras.saving.load_model(output)
    assert type(loaded).__name__ == "DRN" and loaded.scale == 4
    assert loaded.primal.count_params() == 4_804_065
    for k, out in enumerate(loaded(reference_io["lr"])):
        np.testing.assert_allclose(np.asarray(out), reference_io[f"sr_{k}"], rtol=0, atol=1e-2)
    for k, dual in enumerate(loaded.duals):
        got = np.asarray(dual(reference_io[f"sr_{k + 1}"]))
        np.testing.assert_allclose(got, reference_io[f"dual_{k}"], rtol=0, atol=1e-2)


@needs_reference
def test_read_reference_checkpoints():
    state = read_checkpoint(PRIMAL_PT)
    assert isinstance(state, dict) and len(state) > 100
    assert state["head.weight"].shape == (16, 3, 3, 3)
    assert state["head.weight"].dtype == np.float32
    assert state["up_blocks.0.30.0.weight"].shape == (256, 64, 3, 3)  # upsampler, PyTorch order
    duals = read_checkpoint(DUAL_PT)
    assert isinstance(duals, list) and len(duals) == 2
    assert {k: v.shape for k, v in duals[0].items()} == {
        "dual_module.0.0.weight": (16, 3, 3, 3),
        "dual_module.1.weight": (3, 16, 3, 3),
    }


# --------------------------------------------------------------------------------------------
# conversion of a small hand-made checkpoint
# --------------------------------------------------------------------------------------------


def test_small_checkpoint_weights_land_in_place(small_checkpoints, tmp_path):
    output = tmp_path / "small.keras"
    model = convert_checkpoint(
        small_checkpoints["primal"], "drn-s", 4, output, small_checkpoints["dual"], **SMALL
    )
    state, duals = small_checkpoints["state"], small_checkpoints["duals"]
    primal = model.primal
    # Plain convolutions: kernels transposed to HWIO, biases unchanged.
    plain = [
        ("sub_mean", "sub_mean"),
        ("add_mean", "add_mean"),
        ("head", "head"),
        ("tail_0", "tail.0"),
        ("tail_2", "tail.2"),
        ("up_1_project", "up_blocks.1.2"),
    ]
    for layer, key in plain:
        np.testing.assert_array_equal(
            np.asarray(primal.get_layer(layer).kernel), kernel(state[f"{key}.weight"])
        )
        np.testing.assert_array_equal(
            np.asarray(primal.get_layer(layer).bias), state[f"{key}.bias"]
        )
    block = primal.get_layer("up_0_rcab_0")
    np.testing.assert_array_equal(
        np.asarray(block.conv2.kernel), kernel(state["up_blocks.0.0.body.2.weight"])
    )
    np.testing.assert_array_equal(
        np.asarray(block.attention.excite.bias), state["up_blocks.0.0.body.3.conv_du.2.bias"]
    )
    down = primal.get_layer("down_1")
    np.testing.assert_array_equal(
        np.asarray(down.down.kernel), kernel(state["down.1.dual_module.0.0.weight"])
    )
    for k, dual in enumerate(model.duals):
        block = dual.get_layer("down")
        np.testing.assert_array_equal(
            np.asarray(block.down.kernel), kernel(duals[k]["dual_module.0.0.weight"])
        )
        np.testing.assert_array_equal(
            np.asarray(block.conv.kernel), kernel(duals[k]["dual_module.1.weight"])
        )

    # The upsampler: conv + Keras depth_to_space must equal conv + PyTorch PixelShuffle, where
    # PixelShuffle puts channel c*r^2 + i*r + j at sub-pixel (i, j) of output channel c.
    features = np.random.default_rng(2).normal(size=(1, 3, 4, 16)).astype(np.float32)
    weight, bias = state["up_blocks.0.1.0.weight"], state["up_blocks.0.1.0.bias"]
    padded = np.pad(features, ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv_out = np.zeros((1, 3, 4, 64))
    for y in range(3):
        for x in range(4):
            conv_out[0, y, x] = np.einsum("hwc,ochw->o", padded[0, y : y + 3, x : x + 3], weight)
    conv_out += bias
    want = np.zeros((1, 6, 8, 16))
    for c in range(16):
        for i in range(2):
            for j in range(2):
                want[0, i::2, j::2, c] = conv_out[0, :, :, c * 4 + i * 2 + j]
    got = primal.get_layer("up_0_shuffle")(primal.get_layer("up_0_upsample")(features))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)

    # And the written file holds the same model.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.keras"]
    loaded = keras.saving.load_model(output)
    x = np.random.default_rng(3).uniform(0, 255, (1, 5, 6, 3)).astype(np.float32)
    for a, b in zip(loaded(x), model(x), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_data_parallel_prefix_is_accepted(small_checkpoints, tmp_path):
    """Checkpoints saved from nn.DataParallel carry a 'module.' prefix on every key."""
    state = {f"module.{k}": v for k, v in small_checkpoints["state"].items()}
    path = write_torch_zip(tmp_path / "dp.pt", to_state_dict(state))
    model = convert_checkpoint(path, "drn-s", 4, tmp_path / "dp.keras", **SMALL)
    np.testing.assert_array_equal(
        np.asarray(model.primal.get_layer("head").kernel),
        kernel(small_checkpoints["state"]["head.weight"]),
    )


def test_output_file_mode_follows_umask(small_checkpoints, tmp_path):
    output = tmp_path / "mode.keras"
    convert_checkpoint(small_checkpoints["primal"], "drn-s", 4, output, **SMALL)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(output.stat().st_mode) == 0o666 & ~umask


def test_failed_save_leaves_no_partial_file(small_checkpoints, tmp_path, monkeypatch):
    output = tmp_path / "model.keras"
    output.write_bytes(b"previous good model")

    def broken_save(self, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        convert_checkpoint(small_checkpoints["primal"], "drn-s", 4, output, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    assert output.read_bytes() == b"previous good model"


def test_output_must_be_keras_file(small_checkpoints, tmp_path):
    with pytest.raises(ValueError, match=r"\.keras"):
        convert_checkpoint(small_checkpoints["primal"], "drn-s", 4, tmp_path / "model.h5", **SMALL)
    assert_nothing_written(tmp_path)


# --------------------------------------------------------------------------------------------
# errors: a CheckpointError naming the file and the problem, and no output written
# --------------------------------------------------------------------------------------------


def convert_error(
    tmp_path: Path, checkpoint, dual=None, variant="drn-s", scale=4, **overrides
) -> str:
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    with pytest.raises(CheckpointError) as info:
        convert_checkpoint(checkpoint, variant, scale, out_dir / "model.keras", dual, **overrides)
    assert_nothing_written(out_dir)
    return str(info.value)


@needs_reference
def test_wrong_scale(tmp_path):
    message = convert_error(tmp_path, PRIMAL_PT, scale=8, n_blocks=1)
    assert str(PRIMAL_PT) in message
    assert "missing keys" in message
    assert "down.2." in message  # x8 has a third down block, the file has not
    assert "looks like scale 4" in message


@needs_reference
def test_wrong_variant(tmp_path):
    message = convert_error(tmp_path, PRIMAL_PT, variant="drn-l", n_blocks=1)
    assert str(PRIMAL_PT) in message
    assert "drn-l" in message
    assert "n_blocks 30, n_feats 16" in message  # what the file really is


def test_wrong_width_names_key_and_shapes(small_checkpoints, tmp_path):
    message = convert_error(tmp_path, small_checkpoints["primal"], n_blocks=1, n_feats=8)
    assert str(small_checkpoints["primal"]) in message
    assert "head.weight" in message
    assert "(4, 3, 3, 3)" in message and "(8, 3, 3, 3)" in message


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.pt"
    message = convert_error(tmp_path, missing, **SMALL)
    assert str(missing) in message and "no such" in message


@needs_reference
def test_truncated_file(tmp_path):
    raw = PRIMAL_PT.read_bytes()
    truncated = tmp_path / "half.pt"
    truncated.write_bytes(raw[: len(raw) // 2])
    message = convert_error(tmp_path, truncated, **SMALL)
    assert str(truncated) in message and "checkpoint" in message
    assert "truncated or corrupt checkpoint" in message and "not a PyTorch" not in message


def test_truncated_storage(small_checkpoints, tmp_path):
    """A complete zip whose tensor data is shorter than the tensors need."""
    path = tmp_path / "short.pt"
    with zipfile.ZipFile(small_checkpoints["primal"]) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data[: len(data) // 2] if "/data/" in name else data)
    message = convert_error(tmp_path, path, **SMALL)
    assert str(path) in message and "storage" in message


@pytest.mark.parametrize(
    "content",
    [np.random.default_rng(0).bytes(4096), b"hello, this is a text file\nnot a checkpoint\n", b""],
    ids=["random", "text", "empty"],
)
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    message = convert_error(tmp_path, path, **SMALL)
    assert str(path) in message and "not a" in message and "checkpoint" in message


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/version", "3\n")
        zf.writestr("archive/data/0", b"\0" * 16)
    message = convert_error(tmp_path, path, **SMALL)
    assert str(path) in message and "data.pkl" in message


@needs_reference
def test_dual_checkpoint_as_primal(tmp_path):
    message = convert_error(tmp_path, DUAL_PT, **SMALL)
    assert str(DUAL_PT) in message and "state dict" in message and "list" in message


@needs_reference
def test_primal_checkpoint_as_dual(small_checkpoints, tmp_path):
    message = convert_error(tmp_path, small_checkpoints["primal"], PRIMAL_PT, **SMALL)
    assert str(PRIMAL_PT) in message and "list" in message


@pytest.mark.parametrize("count", [1, 3])
def test_dual_checkpoint_wrong_count(small_checkpoints, tmp_path, count):
    dual = write_torch_zip(
        tmp_path / "duals.pt", [to_state_dict(d) for d in authors_dual_states(count, 4)]
    )
    message = convert_error(tmp_path, small_checkpoints["primal"], dual, **SMALL)
    assert str(dual) in message and f"found {count}" in message and "2" in message


def test_dual_checkpoint_wrong_width(small_checkpoints, tmp_path):
    dual = write_torch_zip(
        tmp_path / "duals.pt", [to_state_dict(d) for d in authors_dual_states(2, 5)]
    )
    message = convert_error(tmp_path, small_checkpoints["primal"], dual, **SMALL)
    assert str(dual) in message and "dual_module.0.0.weight" in message
    assert "(5, 3, 3, 3)" in message and "(4, 3, 3, 3)" in message


def test_bad_dual_leaves_model_untouched(small_checkpoints, tmp_path):
    model = build_drn_bundle("drn-s", 4, **SMALL)
    before = [np.array(w) for w in model.get_weights()]
    bad = write_torch_zip(
        tmp_path / "duals.pt", [to_state_dict(d) for d in authors_dual_states(3, 4)]
    )
    with pytest.raises(CheckpointError):
        load_authors_weights(model, small_checkpoints["primal"], bad)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# reading: hand-built files in both layouts
# --------------------------------------------------------------------------------------------


def strided_contents():
    """Tensors sharing storages, with offsets and non-contiguous strides, and their values."""
    floats = np.arange(24, dtype=np.float32) * 1.5 - 7.0
    shared = new_storage(floats)
    longs = new_storage(np.array([3, -1, 2**40, 7, 0, -(2**50)], dtype=np.int64))
    doubles = new_storage(np.linspace(-1, 1, 10))
    contents = OrderedDict(
        [
            ("contiguous", Tensor(shared, 0, (2, 3, 4), (12, 4, 1))),
            ("transposed", Tensor(shared, 0, (4, 6), (1, 4))),
            ("offset_step", Tensor(shared, 5, (3,), (2,))),
            ("offset_2d", Tensor(shared, 2, (2, 2), (8, 3))),
            ("scalar", Tensor(shared, 7, (), ())),
            ("empty", Tensor(shared, 0, (0, 3), (3, 1))),
            ("longs", Tensor(longs, 1, (2, 2), (1, 3))),
            ("doubles", Tensor(doubles, 0, (5,), (2,))),
        ]
    )
    expected = {
        "contiguous": floats.reshape(2, 3, 4),
        "transposed": floats.reshape(6, 4).T,
        "offset_step": floats[5:11:2],
        "offset_2d": np.array([[floats[2], floats[5]], [floats[10], floats[13]]]),
        "scalar": np.array(floats[7]),
        "empty": np.zeros((0, 3), np.float32),
        "longs": np.array([[-1, 0], [2**40, -(2**50)]], dtype=np.int64),
        "doubles": np.linspace(-1, 1, 10)[::2],
    }
    return contents, expected


def assert_contents(got, expected):
    assert list(got) == list(expected)
    for key, want in expected.items():
        value = got[key]
        assert isinstance(value, np.ndarray), key
        assert value.shape == want.shape, key
        # Same element type; a big-endian file may come back in its own byte order.
        assert value.dtype.newbyteorder("=") == want.dtype.newbyteorder("="), key
        np.testing.assert_array_equal(value, want, err_msg=key)


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_read_hand_built_zip(tmp_path, byteorder):
    contents, expected = strided_contents()
    contents._metadata = OrderedDict([("", {"version": 1})])
    path = write_torch_zip(
        tmp_path / "t.pt",
        {"state": contents, "epoch": 3, "names": ["a"]},
        archive="t",
        byteorder=byteorder,
    )
    got = read_checkpoint(path)
    assert got["epoch"] == 3 and got["names"] == ["a"]
    assert_contents(got["state"], expected)
    # Writable copies, not views into the file's bytes.
    got["state"]["contiguous"][0, 0, 0] = 1.0


def test_read_hand_built_legacy(tmp_path):
    contents, expected = strided_contents()
    path = write_torch_legacy(tmp_path / "legacy.pt", contents)
    with open(path, "rb") as file:
        assert pickle.load(file) == LEGACY_MAGIC  # the layout written is the legacy one
    assert_contents(read_checkpoint(path), expected)


def test_read_legacy_list_of_state_dicts(tmp_path):
    duals = authors_dual_states(2, 4)
    path = write_torch_legacy(tmp_path / "legacy_duals.pt", [to_state_dict(d) for d in duals])
    got = read_checkpoint(path)
    assert isinstance(got, list) and len(got) == 2
    for state, want in zip(got, duals, strict=True):
        assert_contents(state, want)


def test_read_legacy_truncated(tmp_path):
    path = write_torch_legacy(tmp_path / "legacy.pt", strided_contents()[0])
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(CheckpointError, match="legacy.pt"):
        read_checkpoint(path)


def test_legacy_checkpoint_converts(small_checkpoints, tmp_path):
    path = write_torch_legacy(tmp_path / "legacy.pt", to_state_dict(small_checkpoints["state"]))
    model = convert_checkpoint(path, "drn-s", 4, tmp_path / "legacy.keras", **SMALL)
    np.testing.assert_array_equal(
        np.asarray(model.primal.get_layer("tail_1").kernel),
        kernel(small_checkpoints["state"]["tail.1.weight"]),
    )


@pytest.mark.parametrize("offset,stride", [(0, -1), (-1, 1)], ids=["neg-stride", "neg-offset"])
def test_out_of_bounds_views_are_rejected(tmp_path, offset, stride):
    storage = new_storage(np.arange(4, dtype=np.float32))
    path = write_torch_zip(tmp_path / "oob.pt", {"x": Tensor(storage, offset, (2,), (stride,))})
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_view_past_storage_end_is_rejected(tmp_path):
    storage = new_storage(np.arange(4, dtype=np.float32))
    path = write_torch_zip(tmp_path / "oob.pt", {"x": Tensor(storage, 2, (3,), (1,))})
    with pytest.raises(CheckpointError, match="oob.pt"):
        read_checkpoint(path)


# --------------------------------------------------------------------------------------------
# security: code in a pickle is never run
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


def _payload_pickle(kind: str, marker: Path, protocol: int) -> bytes:
    payload_cls, _ = PAYLOADS[kind]
    # Hidden inside what otherwise looks like a state dict.
    return pickle.dumps(OrderedDict([("head.weight", payload_cls(marker))]), protocol=protocol)


def test_payloads_really_run_when_unpickled_naively(tmp_path):
    """Sanity check of the payloads themselves: plain pickle.loads would run them."""
    for kind in PAYLOADS:
        marker = tmp_path / f"ran_{kind}"
        pickle.loads(_payload_pickle(kind, marker, 2))
        assert marker.exists(), kind


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_zip_payload_is_refused(tmp_path, kind, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _payload_pickle(kind, marker, protocol))
        zf.writestr("archive/data/0", b"\0" * 16)
        zf.writestr("archive/version", "3\n")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)
    assert re.search(PAYLOADS[kind][1], str(info.value))
    assert not marker.exists()


@pytest.mark.parametrize("position", ["object", "magic"])
@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_legacy_payload_is_refused(tmp_path, kind, position):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as file:
        if position == "object":
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
        file.write(_payload_pickle(kind, marker, 2))
        pickle.dump([], file, protocol=2)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)
    assert re.search(PAYLOADS[kind][1], str(info.value))
    assert not marker.exists()


def test_payload_refused_by_convert_without_output(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("archive/data.pkl", _payload_pickle("system", marker, 2))
    message = convert_error(tmp_path, evil, **SMALL)
    assert "refusing" in message and str(evil) in message
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# files checked before the model is built; swapped files; random duals recorded
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_model_building(monkeypatch):
    """Makes building a model fail, to show that a check came before it."""
    from drn_tf import convert

    def build(*args, **kwargs):
        raise AssertionError("the model was built before the checkpoint files were checked")

    monkeypatch.setattr(convert, "build_drn_bundle", build)


@pytest.mark.parametrize("which", ["primal", "dual"])
def test_missing_file_is_reported_before_the_model_is_built(
    small_checkpoints, tmp_path, no_model_building, which
):
    missing = tmp_path / "nope.pt"
    files = {
        "primal": small_checkpoints["primal"],
        "dual": small_checkpoints["dual"],
        which: missing,
    }
    message = convert_error(tmp_path, files["primal"], files["dual"], **SMALL)
    assert message == f"{missing}: no such checkpoint file"


def test_swapped_checkpoints_get_a_hint(small_checkpoints, tmp_path, no_model_building):
    primal, dual = small_checkpoints["primal"], small_checkpoints["dual"]
    message = convert_error(tmp_path, dual, primal, **SMALL)
    assert message.startswith(f"{dual}: a list of 2 state dicts")
    assert "(is this the dual checkpoint? pass it as --dual-checkpoint)" in message
    message = convert_error(tmp_path, primal, primal, **SMALL)
    assert message.startswith(f"{primal}: a single state dict")
    assert "(is this the primal checkpoint?)" in message


def test_random_duals_are_recorded_in_the_saved_model(small_checkpoints, tmp_path):
    without = tmp_path / "without.keras"
    convert_checkpoint(small_checkpoints["primal"], "drn-s", 4, without, **SMALL)
    info = keras.saving.load_model(without).info
    assert "random" in info["duals"] and "no dual checkpoint" in info["duals"]

    with_duals = tmp_path / "with.keras"
    convert_checkpoint(
        small_checkpoints["primal"], "drn-s", 4, with_duals, small_checkpoints["dual"], **SMALL
    )
    assert "duals" not in keras.saving.load_model(with_duals).info


def test_random_duals_are_refused_where_the_closed_loop_counts(small_checkpoints, tmp_path, capsys):
    from helpers import write_images

    from drn_tf import cli

    path = tmp_path / "no_duals.keras"
    convert_checkpoint(small_checkpoints["primal"], "drn-s", 4, path, **SMALL)
    lr = write_images(tmp_path / "lr", 2, seed=0, size=16)
    hr = write_images(tmp_path / "hr", 2, seed=1, size=48)
    adapt = ["adapt", "--model", str(path), "--paired-dir", str(hr), "--unpaired-dir", str(lr)]
    evaluate = ["evaluate", "--lr-only", "--model", str(path), str(lr)]
    for argv in ([*adapt, "--output", str(tmp_path / "run")], evaluate):
        assert cli.main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert f"{path}: its dual networks are random (converted without --dual-checkpoint)" in err
        assert "\n" not in err
    assert not (tmp_path / "run").exists()
    assert cli.main(["evaluate", "--model", str(path), str(hr)]) == 0  # HR scores need no duals
