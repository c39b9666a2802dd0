"""Tests for drn_tf.inference (load_model, upscale, upscale_files) and ``drn-tf upscale``;
upscaling behaviour in depth is in test_upscale.py."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import drn_tf
from drn_tf import cli, inference
from drn_tf.degrade import imresize
from drn_tf.images import load_picture, read_image, write_image
from drn_tf.models import DRN, save_model_atomic


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- load_model --------------------------------------------------------------------------------


def test_default_model_paths():
    weights = Path(inference.__file__).parent / "weights"
    assert {s: weights / f"drn_x{s}.keras" for s in (2, 4, 8)} == inference.DEFAULT_MODEL_PATHS
    assert weights / "drn_x4.keras" == inference.DEFAULT_MODEL_PATH


def test_load_model_round_trip(tiny):
    model, path = tiny
    loaded = inference.load_model(str(path))
    assert isinstance(loaded, DRN) and loaded.scale == 4
    image = _image(6, 5)
    np.testing.assert_array_equal(inference.upscale(loaded, image), inference.upscale(model, image))


def test_load_model_default_picks_the_model_of_the_scale(tiny, tiny_x2, monkeypatch, tmp_path):
    paths = {2: tiny_x2, 4: tiny[1], 8: tmp_path / "weights" / "drn_x8.keras"}
    monkeypatch.setattr(inference, "DEFAULT_MODEL_PATHS", paths)
    assert inference.load_model("default", scale=2).scale == 2
    assert inference.load_model("default").scale == 4  # ×4 unless asked
    with pytest.raises(FileNotFoundError, match=r"drn_x8.keras: the packaged ×8 model"):
        inference.load_model("default", scale=8)
    with pytest.raises(ValueError, match=r"no packaged ×16 model \(packaged: ×2, ×4, ×8\)"):
        inference.load_model("default", scale=16)
    # A file's model must have the scale asked for.
    with pytest.raises(ValueError, match=r"tiny_x2.keras: a ×2 model, but the scale asked"):
        inference.load_model(tiny_x2, scale=4)
    assert inference.model_path(tiny_x2) == tiny_x2


def _policies(model) -> set[str]:
    return {layer.dtype_policy.name for net in (model.primal, *model.duals) for layer in net.layers}


def test_load_model_computes_in_the_global_policy(tiny, tmp_path):
    # A file saved by a mixed_bfloat16 run keeps its layers' policy; loaded for inference or
    # export (global float32) it must compute in float32, and the other way round for training.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = drn_tf.build_drn_bundle("drn-s", 4, n_blocks=1, n_feats=4)
        mixed.set_weights(tiny[0].get_weights())
        path = save_model_atomic(mixed, tmp_path / "mixed.keras")
        assert "mixed_bfloat16" in _policies(inference.load_model(tiny[1]))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    loaded = inference.load_model(path)
    assert _policies(loaded) == {"float32"} and loaded.drn_config == tiny[0].drn_config
    lr = _image(6, 5).astype("float32")[None]
    np.testing.assert_array_equal(loaded.primal(lr)[-1], tiny[0].primal(lr)[-1])


@pytest.mark.slow
def test_cli_scale_picks_the_packaged_model(tiny, tiny_x2, monkeypatch, tmp_path):
    monkeypatch.setattr(inference, "DEFAULT_MODEL_PATHS", {2: tiny_x2, 4: tiny[1]})
    image = _image(5, 6)
    write_image(tmp_path / "a.png", image)
    assert cli.main(["upscale", str(tmp_path / "a.png"), "--output", str(tmp_path / "o")]) == 0
    assert read_image(tmp_path / "o" / "a_x4.png").shape == (20, 24, 3)
    argv = ["upscale", str(tmp_path / "a.png"), "--output", str(tmp_path / "o"), "--scale", "2"]
    assert cli.main([*argv, "--precision", "float32"]) == 0
    x2 = inference.upscale(image, inference.load_model(tiny_x2), precision="float32")
    np.testing.assert_array_equal(read_image(tmp_path / "o" / "a_x2.png"), x2)
    # bicubic takes any integer factor, byte-exact with MATLAB's imresize
    argv = ["upscale", str(tmp_path / "a.png"), "--output", str(tmp_path / "b"), "--scale", "3"]
    assert cli.main([*argv, "--model", "bicubic"]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "b" / "a_x3.png"), imresize(image, 3))


@pytest.mark.slow
def test_load_model_reads_training_files(tiny, tmp_path):
    from drn_tf.dual_regression import DualRegressionModel

    path = save_model_atomic(DualRegressionModel.from_drn(tiny[0]), tmp_path / "model.keras")
    loaded = inference.load_model(path)
    assert isinstance(loaded, DRN) and loaded.scale == 4
    # In a fresh interpreter that imported nothing but inference (as `drn-tf upscale` does),
    # the class that training saves is registered before the file is read.
    code = (
        "import sys\nfrom drn_tf.inference import load_model\n"
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
        inference.load_model(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_load_model_rejects_missing_folder_and_other_suffixes(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        inference.load_model(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="a folder"):
        inference.load_model(tmp_path)
    for name, message in (("model.h5", "not a .keras"), ("DRNS4x.pt", "drn-tf convert")):
        path = tmp_path / name
        path.write_bytes(tiny[1].read_bytes())
        with pytest.raises(ValueError, match=message):
            inference.load_model(path)


# --- upscale -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (5, 3), (9, 16)])
def test_upscale_shape_and_values(tiny, size):
    model = tiny[0]
    image = _image(*size, seed=size[0] * 31 + size[1])
    sr = inference.upscale(model, image)
    assert sr.dtype == np.uint8 and sr.shape == (4 * size[0], 4 * size[1], 3)
    reference = np.asarray(model(image[None].astype(np.float32))[-1])[0]
    expected = np.round(np.clip(reference, 0, 255))
    # Graph and eager execution may differ by float rounding; only exact .5 ties could flip.
    assert np.abs(sr - expected).max() <= 1
    safe = np.abs(np.clip(reference, 0, 255) % 1 - 0.5) > 1e-3
    np.testing.assert_array_equal(sr[safe], expected[safe])


def test_upscale_traces_once_for_all_sizes(tiny):
    model = tiny[0]
    for size in [(2, 3), (4, 4), (7, 1), (3, 8)]:
        inference.upscale(_image(*size), model, precision="float32")
    assert inference._network_function(model, "float32").experimental_get_tracing_count() == 1


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((4, 4, 3), np.int64),
        np.zeros((0, 4, 3), np.uint8),
    ],
    ids=["5-channels", "int64", "empty"],
)
def test_upscale_rejects_bad_arrays(tiny, image):
    with pytest.raises(ValueError):
        inference.upscale(image, tiny[0])


# --- upscale_files -----------------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder with an RGB image, a nested one, a grayscale and an RGBA PNG, and a bad file."""
    root = tmp_path / "photos"
    write_image(root / "a.png", _image(5, 7, seed=1))
    write_image(root / "sub" / "deeper" / "b.jpg", _image(6, 4, seed=2))
    Image.fromarray(_image(4, 3, seed=3)[..., 0]).save(root / "gray.png")
    Image.fromarray(np.dstack([_image(3, 5, seed=4), _image(3, 5, seed=5)[..., :1]]), "RGBA").save(
        root / "rgba.png"
    )
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def test_upscale_files_folder(tiny, photos, tmp_path, capsys):
    model = tiny[0]
    out = tmp_path / "out"
    summary = inference.upscale_files([photos], out, model, progress=False)
    expected = {
        out / "a_x4.png",
        out / "sub" / "deeper" / "b_x4.png",
        out / "gray_x4.png",
        out / "rgba_x4.png",
    }
    assert set(summary.written) == expected
    assert {p for p in out.rglob("*") if p.is_file()} == expected  # no temp files, no bad_x4
    for source in ("a.png", "sub/deeper/b.jpg", "gray.png", "rgba.png"):
        lr = load_picture(photos / source).pixels
        name = Path(source).with_name(Path(source).stem + "_x4.png")
        np.testing.assert_array_equal(load_picture(out / name).pixels, inference.upscale(lr, model))
    assert summary.failed[0][0] == photos / "bad.png"
    err = capsys.readouterr().err
    assert f"failed {photos / 'bad.png'}: " in err


def test_upscale_files_mixed_inputs(tiny, photos, tmp_path):
    other = tmp_path / "other.png"
    write_image(other, _image(3, 3, seed=9))
    summary = inference.upscale_files(
        [other, photos / "a.png"], tmp_path / "o", tiny[0], progress=False
    )
    assert summary.written == [tmp_path / "o" / "other_x4.png", tmp_path / "o" / "a_x4.png"]
    assert read_image(summary.written[0]).shape == (12, 12, 3)


def test_upscale_files_ignores_its_own_outputs(tiny, photos):
    first = inference.upscale_files([photos], photos / "out", tiny[0], progress=False)
    second = inference.upscale_files([photos], photos / "out", tiny[0], progress=False)
    assert len(first.written) == 4 and second.written == []
    assert sorted(second.kept) == sorted(first.written)
    assert sorted(second.earlier_outputs) == sorted(first.written)


def test_upscale_files_errors(tiny, photos, tmp_path):
    model = tiny[0]
    with pytest.raises(FileNotFoundError, match="nope.png"):
        inference.upscale_files([photos / "a.png", tmp_path / "nope.png"], tmp_path / "o", model)
    assert not (tmp_path / "o").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        inference.upscale_files([tmp_path / "empty"], tmp_path / "o", model)
    summary = inference.upscale_files([photos / "bad.png"], tmp_path / "o", model, progress=False)
    assert summary.written == [] and summary.failed[0][0] == photos / "bad.png"
    write_image(photos / "a.jpg", _image(3, 3))
    summary = inference.upscale_files([photos], tmp_path / "o", model, progress=False)
    (clash,) = [reason for path, reason in summary.failed if path.name == "a.png"]
    assert "a.jpg has the same output" in clash


# --- drn-tf upscale ----------------------------------------------------------------------------


def test_cli_upscale(tiny, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        cli.main(["upscale", str(photos / "a.png"), "--output", str(out), "--model", str(tiny[1])])
        == 0
    )
    assert read_image(out / "a_x4.png").shape == (20, 28, 3)
    assert "wrote 1 image" in capsys.readouterr().out


def test_cli_upscale_missing_input_is_exit_1(tiny, tmp_path, capsys):
    missing = tmp_path / "missing.png"
    assert (
        cli.main(
            ["upscale", str(missing), "--output", str(tmp_path / "out"), "--model", str(tiny[1])]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err
    assert not (tmp_path / "out").exists()


def test_cli_upscale_bad_model_is_exit_1(photos, tmp_path, capsys):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"junk")
    assert (
        cli.main(["upscale", str(photos), "--output", str(tmp_path / "o"), "--model", str(bad)])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err


@pytest.mark.parametrize(
    "argv", [["upscale", "--output", "o"], ["upscale", "a.png"]], ids=["no-input", "no-output"]
)
def test_cli_upscale_usage_errors(argv, capsys):
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip()


def test_cli_upscale_help(capsys):
    assert cli.main(["upscale", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--output" in out and "--model" in out
