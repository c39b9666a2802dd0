"""Tests for drn_tf.torch_checkpoints: reading both of PyTorch's layouts (offsets, strides,
byte orders, truncation, views outside their storage) and refusing code in a pickle.

PyTorch is not needed: the files are written by ``torch_files`` with the standard library.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
from helpers import DUAL_PT, PRIMAL_PT, needs_reference
from torch_files import (
    LEGACY_MAGIC,
    PAYLOADS,
    Tensor,
    authors_dual_states,
    new_storage,
    payload_pickle,
    to_state_dict,
    write_legacy_header,
    write_torch_legacy,
    write_torch_zip,
)

from drn_tf.torch_checkpoints import CheckpointError, read_checkpoint


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


def test_payloads_really_run_when_unpickled_naively(tmp_path):
    """Sanity check of the payloads themselves: plain pickle.loads would run them."""
    for kind in PAYLOADS:
        marker = tmp_path / f"ran_{kind}"
        pickle.loads(payload_pickle(kind, marker, 2))
        assert marker.exists(), kind


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_zip_payload_is_refused(tmp_path, kind, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload_pickle(kind, marker, protocol))
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
            write_legacy_header(file)
        file.write(payload_pickle(kind, marker, 2))
        pickle.dump([], file, protocol=2)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)
    assert re.search(PAYLOADS[kind][1], str(info.value))
    assert not marker.exists()
