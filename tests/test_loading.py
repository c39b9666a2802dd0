"""Tests for drn_tf.loading: load_model (packaged models by scale, files, the dtype policy, bad
files), model_path and DEFAULT_MODEL_PATHS."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import drn_tf
from drn_tf import bundled, cli, inference, loading
from drn_tf.degrade import imresize
from drn_tf.images import read_image, write_image
from drn_tf.models import DRN, save_model_atomic


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_default_model_paths():
    weights = Path(loading.__file__).parent / "weights"
    assert {s: weights / f"drn_x{s}.keras" for s in (2, 4, 8)} == bundled.DEFAULT_MODEL_PATHS
    assert weights / "drn_x4.keras" == bundled.DEFAULT_MODEL_PATH


def test_load_model_round_trip(tiny):
    model, path = tiny
    loaded = loading.load_model(str(path))
    assert isinstance(loaded, DRN) and loaded.scale == 4
    image = _image(6, 5)
    np.testing.assert_array_equal(inference.upscale(loaded, image), inference.upscale(model, image))


def test_load_model_default_picks_the_model_of_the_scale(tiny, tiny_x2, monkeypatch, tmp_path):
    paths = {2: tiny_x2, 4: tiny[1], 8: tmp_path / "weights" / "drn_x8.keras"}
    monkeypatch.setattr(bundled, "DEFAULT_MODEL_PATHS", paths)
    assert loading.load_model("default", scale=2).scale == 2
    assert loading.load_model("default").scale == 4  # ×4 unless asked
    with pytest.raises(FileNotFoundError, match=r"drn_x8.keras: the packaged ×8 model"):
        loading.load_model("default", scale=8)
    with pytest.raises(ValueError, match=r"no packaged ×16 model \(packaged: ×2, ×4, ×8\)"):
        loading.load_model("default", scale=16)
    # A file's model must have the scale asked for.
    with pytest.raises(ValueError, match=r"tiny_x2.keras: a ×2 model, but the scale asked"):
        loading.load_model(tiny_x2, scale=4)
    assert bundled.model_path(tiny_x2) == tiny_x2


def test_load_model_fast_is_the_packaged_fast_x4_model(tiny, tiny_x2, monkeypatch):
    # "fast" reads FAST_MODEL_PATHS only: the default models of every scale are other files.
    monkeypatch.setattr(bundled, "DEFAULT_MODEL_PATHS", {2: tiny_x2, 4: tiny_x2, 8: tiny_x2})
    monkeypatch.setattr(bundled, "FAST_MODEL_PATHS", {4: tiny[1]})
    for loaded in (loading.load_model("fast"), loading.load_model("fast", scale=4)):
        assert loaded.scale == 4
        for a, b in zip(loaded.get_weights(), tiny[0].get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"^no packaged fast ×2 model \(packaged: ×4\)"):
        loading.load_model("fast", scale=2)
    image = _image(4, 3)
    np.testing.assert_array_equal(
        inference.upscale(image, "fast"), inference.upscale(image, tiny[0])
    )


def _policies(model) -> set[str]:
    return {layer.dtype_policy.name for net in (model.primal, *model.duals) for layer in net.layers}


def test_load_model_computes_in_float32_unless_asked_whatever_the_global_policy(tiny, tmp_path):
    # A file saved by a mixed_bfloat16 run keeps its layers' policy; loaded for inference or
    # export it must compute in float32, and a global policy set by someone else changes nothing.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = drn_tf.build_drn_bundle("drn-s", 4, n_blocks=1, n_feats=4)
        mixed.set_weights(tiny[0].get_weights())
        path = save_model_atomic(mixed, tmp_path / "mixed.keras")
        assert _policies(loading.load_model(tiny[1])) == {"float32"}
    finally:
        keras.mixed_precision.set_global_policy("float32")
    loaded = loading.load_model(path)
    assert _policies(loaded) == {"float32"} and loaded.drn_config == tiny[0].drn_config
    lr = _image(6, 5).astype("float32")[None]
    np.testing.assert_array_equal(loaded.primal(lr)[-1], tiny[0].primal(lr)[-1])


def test_load_model_computes_in_the_policy_asked_for(tiny, tmp_path):
    # policy= wins over the global policy either way, and leaves the global one as it was.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = drn_tf.build_drn_bundle("drn-s", 4, n_blocks=1, n_feats=4)
        mixed.set_weights(tiny[0].get_weights())
        path = save_model_atomic(mixed, tmp_path / "mixed.keras")
        as_float32 = loading.load_model(path, policy="float32")
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert _policies(as_float32) == {"float32"}
    lr = _image(6, 5).astype("float32")[None]
    np.testing.assert_array_equal(as_float32.primal(lr)[-1], tiny[0].primal(lr)[-1])
    as_bfloat16 = loading.load_model(tiny[1], policy="mixed_bfloat16")
    assert "mixed_bfloat16" in _policies(as_bfloat16)
    assert keras.config.dtype_policy().name == "float32"
    for a, b in zip(as_bfloat16.get_weights(), tiny[0].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_cli_scale_picks_the_packaged_model(tiny, tiny_x2, monkeypatch, tmp_path):
    monkeypatch.setattr(bundled, "DEFAULT_MODEL_PATHS", {2: tiny_x2, 4: tiny[1]})
    image = _image(5, 6)
    write_image(tmp_path / "a.png", image)
    assert cli.main(["upscale", str(tmp_path / "a.png"), "--output", str(tmp_path / "o")]) == 0
    assert read_image(tmp_path / "o" / "a_x4.png").shape == (20, 24, 3)
    argv = ["upscale", str(tmp_path / "a.png"), "--output", str(tmp_path / "o"), "--scale", "2"]
    assert cli.main([*argv, "--precision", "float32"]) == 0
    x2 = inference.upscale(image, loading.load_model(tiny_x2), precision="float32")
    np.testing.assert_array_equal(read_image(tmp_path / "o" / "a_x2.png"), x2)
    # bicubic takes any integer factor, byte-exact with MATLAB's imresize
    argv = ["upscale", str(tmp_path / "a.png"), "--output", str(tmp_path / "b"), "--scale", "3"]
    assert cli.main([*argv, "--model", "bicubic"]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "b" / "a_x3.png"), imresize(image, 3))


@pytest.mark.slow
def test_load_model_reads_training_files(tiny, tmp_path):
    from drn_tf.dual_regression import DualRegressionModel

    path = save_model_atomic(DualRegressionModel.from_drn(tiny[0]), tmp_path / "model.keras")
    loaded = loading.load_model(path)
    assert isinstance(loaded, DRN) and loaded.scale == 4
    # In a fresh interpreter that imported nothing but loading (as `drn-tf upscale` does),
    # the class that training saves is registered before the file is read.
    code = (
        "import sys\nfrom drn_tf.loading import load_model\n"
        "print(type(load_model(sys.argv[1])).__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["DualRegressionModel"]


def _truncated(tiny, path):
    data = tiny[1].read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flipped(tiny, path):
    data = bytearray(tiny[1].read_bytes())
    with zipfile.ZipFile(tiny[1]) as archive:  # a byte inside the weights member's data
        info = archive.getinfo("model.weights.h5")
    data[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _sequential(tiny, path):
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(path)


def _no_config(tiny, path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", "{}")


def _bad_config(tiny, path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{not json")
        archive.writestr("metadata.json", "{}")


@pytest.mark.parametrize(
    "make, message",
    [
        (_truncated, "truncated or corrupt"),
        (_flipped, "CRC"),
        (lambda tiny, path: path.write_bytes(b"hello"), "not a valid .keras file"),
        (lambda tiny, path: path.write_bytes(b""), "not a valid .keras file"),
        (_sequential, "not a DRN model .*Sequential"),
        (_no_config, "no config.json"),
        (_bad_config, "cannot load the model"),
    ],
    ids=["truncated", "flipped-byte", "garbage", "empty", "sequential", "no-config", "bad-config"],
)
def test_load_model_rejects_bad_files(tiny, tmp_path, make, message):
    path = tmp_path / "bad.keras"
    make(tiny, path)
    with pytest.raises(ValueError, match=message) as info:
        loading.load_model(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_load_model_rejects_missing_folder_and_other_suffixes(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        loading.load_model(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="a folder"):
        loading.load_model(tmp_path)
    for name, message in (("model.h5", "not a .keras"), ("DRNS4x.pt", "drn-tf convert")):
        path = tmp_path / name
        path.write_bytes(tiny[1].read_bytes())
        with pytest.raises(ValueError, match=message):
            loading.load_model(path)


def test_random_duals_are_recognised_and_forgotten_for_training(tiny):
    """The record :func:`drn_tf.convert.convert_checkpoint` writes without a dual checkpoint
    makes adapt refuse the model, and is dropped (with a note) when a run trains its duals."""
    model, path = tiny
    converted = DRN(model.primal, model.duals, drn_config=model.drn_config)
    assert not loading.has_random_duals(converted)
    assert loading.forget_random_duals(converted, path) is None
    converted.info["duals"] = "random initialisation: no dual checkpoint was converted"
    assert loading.has_random_duals(converted)
    with pytest.raises(ValueError, match="its dual networks are random"):
        loading.check_trained_duals(converted, path, "adapting it")
    note = loading.forget_random_duals(converted, path)
    assert note.startswith(f"note: {path} has random dual networks") and "\n" not in note
    assert converted.info == {} and not loading.has_random_duals(converted)
    loading.check_trained_duals(converted, path, "adapting it")
