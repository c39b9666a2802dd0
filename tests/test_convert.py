"""Tests for drn_tf.convert: parity with the authors' PyTorch model, weights landing in place,
errors naming the file, and nothing written on failure.

PyTorch is not needed: the checkpoint files are written by ``torch_files`` with the standard
library (reading them is tested in test_torch_checkpoints.py).
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import DUAL_PT, IO_NPZ, PRIMAL_PT, REFERENCE, SMALL, needs_reference
from torch_files import (
    authors_dual_states,
    authors_state_dict,
    payload_pickle,
    to_state_dict,
    write_torch_legacy,
    write_torch_zip,
)

from drn_tf import build_drn_bundle
from drn_tf.convert import convert_checkpoint, load_authors_weights
from drn_tf.torch_checkpoints import CheckpointError


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


def test_legacy_checkpoint_converts(small_checkpoints, tmp_path):
    path = write_torch_legacy(tmp_path / "legacy.pt", to_state_dict(small_checkpoints["state"]))
    model = convert_checkpoint(path, "drn-s", 4, tmp_path / "legacy.keras", **SMALL)
    np.testing.assert_array_equal(
        np.asarray(model.primal.get_layer("tail_1").kernel),
        kernel(small_checkpoints["state"]["tail.1.weight"]),
    )


def test_payload_refused_by_convert_without_output(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("archive/data.pkl", payload_pickle("system", marker, 2))
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
