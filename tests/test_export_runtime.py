"""Tests for export.runtime: drn_tf.upscale(..., runtime=) and drn-tf upscale --runtime.

Pixels of every runtime are compared with Keras on the bundled held-out photos (never used
for int8 calibration) at the export floors; the tiling, alpha, gray, 16-bit and self-ensemble
code is checked to be the same for any network with a network whose result is known exactly.
"""

import json
import math

import numpy as np
import pytest
from PIL import Image

import drn_tf
from drn_tf import bundled, inference, tiles
from drn_tf.cli import main
from export import base, runtime
from export.runtime import Runtime

TILES = {"tile": 32, "tile_overlap": 8}  # 64×64 photos: 3×3 tiles


def _photos() -> list[np.ndarray]:
    paths = sorted(bundled.HELD_OUT_SET.glob("*.png"))
    assert paths, bundled.HELD_OUT_SET
    return [np.asarray(Image.open(path).convert("RGB")) for path in paths]


def _psnr(output: np.ndarray, reference: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((output.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


# --- the choice -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"avx2", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}, ("openvino", "bf16")),
        ({"avx2", "avx512_vnni", "avx512_bf16"}, ("openvino", "int8")),
        ({"avx2", "avx512_vnni"}, ("openvino", "int8")),
        ({"avx2", "avx_vnni"}, ("openvino", "int8")),
        ({"avx2"}, ("openvino", "int8")),
        ({"sse4_2"}, ("keras", "auto")),
    ],
    ids=["amx", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx2", "older"],
)
def test_auto_follows_the_cpu_table(flags, expected, monkeypatch):
    monkeypatch.setattr(runtime, "_installed", lambda name: True)
    choice = runtime.choose("auto", "auto", flags)
    assert (choice.name, choice.precision) == expected
    assert choice.note is None


def test_auto_without_the_export_extra_is_keras_with_one_note(monkeypatch):
    monkeypatch.setattr(runtime, "_installed", lambda name: False)
    choice = runtime.choose("auto", "auto", {"avx2"})
    assert choice.name == "keras"
    assert "export extra is not installed" in choice.note
    assert "\n" not in choice.note


def test_named_runtimes_and_precisions():
    avx512 = {"avx2", "avx512_vnni", "avx512_bf16"}
    assert runtime.choose("openvino", "auto", avx512).precision == "int8"  # the table's
    assert runtime.choose("openvino", "auto", {"avx2"}).precision == "int8"
    assert runtime.choose("openvino", "float32", avx512).precision == "fp32"
    assert runtime.choose("onnxruntime", "auto", avx512).precision == "fp32"
    assert runtime.choose("tflite", "auto", avx512).precision == "fp32"
    assert runtime.choose("keras", "bfloat16", avx512) == Runtime("keras", "bfloat16")
    fp32 = runtime.choose("auto", "float32", avx512)
    assert (fp32.name, fp32.precision) == ("tflite", "fp32")
    with pytest.raises(ValueError, match="tflite runs in fp32, not bfloat16"):
        runtime.choose("tflite", "bfloat16", avx512)
    with pytest.raises(ValueError, match="runtime must be one of"):
        runtime.choose("tensorrt")
    with pytest.raises(ValueError, match="precision must be one of"):
        runtime.choose("auto", "int4")


# --- the hook: only the network call changes --------------------------------------------------


def test_a_network_replaces_only_the_network_call(tiny, monkeypatch):
    """Through a nearest-neighbour "network" the result is known exactly: the input repeated
    ×4, for tiled RGB, gray, 16-bit and self-ensemble alike, with tiles batched per call;
    alpha stays Keras's (bicubic)."""
    monkeypatch.setattr(tiles, "TILE_BATCH", 3)
    model = tiny[0]
    batches = []

    def nearest(images: np.ndarray) -> np.ndarray:
        assert images.dtype == np.float32 and images.shape[-1] == 3
        batches.append(len(images))
        return images.repeat(4, axis=1).repeat(4, axis=2)

    def repeated(image):
        return image.repeat(4, axis=0).repeat(4, axis=1)

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (70, 90), dtype=np.uint8)
    deep = rng.integers(0, 65536, (70, 90, 3), dtype=np.uint16)
    for image in (rgb, gray, deep):
        out = inference.upscale(image, model, network=nearest, **TILES)
        np.testing.assert_array_equal(out, repeated(image))
    ensemble = inference.upscale(rgb, model, network=nearest, self_ensemble=True, **TILES)
    np.testing.assert_array_equal(ensemble, repeated(rgb))
    assert set(batches) == {3, 1}  # 90 wide: 4 columns of 32, in calls of 3 and 1

    rgba = np.concatenate([rgb, rng.integers(0, 256, (70, 90, 1), dtype=np.uint8)], -1)
    out = inference.upscale(rgba, model, network=nearest, **TILES)
    np.testing.assert_array_equal(out[..., :3], repeated(rgb))
    keras_alpha = inference.upscale(rgba, model, **TILES)[..., 3]
    np.testing.assert_array_equal(out[..., 3], keras_alpha)


# --- pixels against Keras ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, precision",
    [
        ("openvino", "fp32"),
        ("openvino", "bf16"),
        ("openvino", "int8"),
        ("onnxruntime", "fp32"),
        ("tflite", "fp32"),
    ],
)
def test_each_runtime_agrees_with_keras_on_held_out_photos(name, precision, tiny, tmp_path):
    model = tiny[0]
    network = runtime.network(model, Runtime(name, precision), cache=tmp_path)
    floor = base.FLOORS_DB[precision]
    for photo in _photos():
        expected = drn_tf.upscale(photo, model, precision="float32", **TILES)
        output = inference.upscale(photo, model, network=network, **TILES)
        assert output.dtype == np.uint8 and output.shape == expected.shape
        assert _psnr(output, expected) >= floor, (name, precision)


@pytest.mark.slow
@pytest.mark.slow  # int8 calibration of the packaged model: about a minute on 2 cores
def test_auto_on_the_packaged_model_holds_its_floor():
    """The packaged ×4 model through drn_tf.upscale(runtime="auto") against Keras: 16-bit
    (at 16-bit scale) and 8-bit photos, tiled and in one pass."""
    choice = runtime.choose("auto")
    if choice.name == "keras":
        pytest.skip(f"auto is Keras here ({choice.reason})")
    model = drn_tf.load_model("default")
    floor = base.FLOORS_DB[choice.precision]
    photo = np.concatenate(_photos()[:2], axis=1)  # 64×128: two tiles of 64
    deep = photo.astype(np.uint16) * 257
    for image, peak in ((photo, 255), (deep, 65535)):
        for tile in (64, None):
            expected = drn_tf.upscale(image, model, tile=tile, precision="float32")
            output = drn_tf.upscale(image, model, tile=tile, runtime="auto")
            assert output.dtype == image.dtype
            assert _psnr(output, expected, peak) >= floor, (choice, image.dtype, tile)


# --- the cache --------------------------------------------------------------------------------


def test_a_cached_model_is_reused_and_a_bad_entry_rebuilt(tiny, tmp_path):
    choice = Runtime("tflite", "fp32")
    probe = np.full((1, 8, 8, 3), 100, np.float32)
    conversions = []

    def network():  # a model object of its own each time: past the in-process cache
        run = runtime.network(
            drn_tf.load_model(tiny[1]), choice, cache=tmp_path, progress=conversions.append
        )
        assert run(probe).shape == (1, 32, 32, 3)
        return run

    expected = network()(probe)
    (entry,) = tmp_path.iterdir()  # no temporary folder left
    artifact = entry / "model.tflite"
    assert len(conversions) == 1
    network()
    assert len(conversions) == 1  # from the cache

    (tmp_path / f".{entry.name}.999999999.0123abcd").mkdir()  # a killed process's build
    data = bytearray(artifact.read_bytes())  # corrupt: a byte changed
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    np.testing.assert_array_equal(network()(probe), expected)
    assert len(conversions) == 2

    record = json.loads((entry / "entry.json").read_text())  # stale: another TensorFlow
    record["identity"]["versions"]["tensorflow"] = "0.0"
    (entry / "entry.json").write_text(json.dumps(record))
    network()
    assert len(conversions) == 3

    artifact.write_bytes(b"not a model")  # unloadable, though its recorded hash matches
    record = json.loads((entry / "entry.json").read_text())
    record["files"]["model.tflite"] = base.sha256_of(artifact)
    (entry / "entry.json").write_text(json.dumps(record))
    np.testing.assert_array_equal(network()(probe), expected)
    assert len(conversions) == 4
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]


def test_another_model_gets_another_entry(tiny, tmp_path):
    model = drn_tf.load_model(tiny[1])
    runtime.network(model, Runtime("tflite", "fp32"), cache=tmp_path)
    model.primal.set_weights([w * 1.01 for w in model.primal.get_weights()])
    other = drn_tf.load_model(tiny[1])
    other.primal.set_weights(model.primal.get_weights())
    runtime.network(other, Runtime("tflite", "fp32"), cache=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2


# --- the command line -------------------------------------------------------------------------


def _cli(tiny, photo, out, *flags) -> int:
    tiles = ["--tile", "32", "--tile-overlap", "8"]
    return main(
        ["upscale", str(photo), "--model", str(tiny[1]), "--output", str(out), *tiles, *flags]
    )


def test_cli_runtime_flag(tiny, tmp_path, capsys):
    photo = sorted(bundled.HELD_OUT_SET.glob("*.png"))[0]
    assert _cli(tiny, photo, tmp_path / "keras", "--runtime", "keras") == 0
    assert _cli(tiny, photo, tmp_path / "tflite", "--runtime", "tflite") == 0
    name = f"{photo.stem}_x4.png"
    keras_pixels = np.asarray(Image.open(tmp_path / "keras" / name))
    tflite_pixels = np.asarray(Image.open(tmp_path / "tflite" / name))
    assert _psnr(tflite_pixels, keras_pixels) >= base.FLOORS_DB["fp32"]
    assert "converting the model to tflite fp32" in capsys.readouterr().err
    assert _cli(tiny, photo, tmp_path / "x", "--runtime", "tensorrt") == 2
    assert "--runtime" in capsys.readouterr().err
    bad = ("--runtime", "tflite", "--precision", "bfloat16")
    assert _cli(tiny, photo, tmp_path / "x", *bad) == 2
    assert "tflite runs in fp32, not bfloat16" in capsys.readouterr().err


def test_cli_auto_without_the_export_extra_runs_keras_with_one_note(
    tiny, tmp_path, capsys, monkeypatch
):
    photo = sorted(bundled.HELD_OUT_SET.glob("*.png"))[1]
    assert _cli(tiny, photo, tmp_path / "keras", "--runtime", "keras") == 0
    monkeypatch.setattr(runtime, "_installed", lambda name: False)
    capsys.readouterr()
    assert _cli(tiny, photo, tmp_path / "auto", "--runtime", "auto") == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert len(notes) == 1 and "export extra is not installed" in notes[0]
    name = f"{photo.stem}_x4.png"
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "auto" / name)),
        np.asarray(Image.open(tmp_path / "keras" / name)),
    )


def test_a_runtime_out_of_memory_is_reported_as_such(tiny):
    def exhausted(images):
        raise RuntimeError("Exception from src/inference: std::bad_alloc")

    def broken(images):
        raise RuntimeError("Check 'shape' failed\nat line 3")

    image = np.zeros((40, 30, 3), np.uint8)
    network = runtime._one_line_errors(exhausted, Runtime("openvino", "fp32"))
    with pytest.raises(inference.OutOfMemoryError, match="--tile 32"):
        inference.upscale(image, tiny[0], tile=16, tile_overlap=4, network=network)
    network = runtime._one_line_errors(broken, Runtime("openvino", "fp32"))
    with pytest.raises(ValueError, match=r"^openvino failed at \(1, 16, 16, 3\): Check 'shape'"):
        inference.upscale(image, tiny[0], tile=16, tile_overlap=4, network=network)


@pytest.mark.slow
@pytest.mark.slow  # two fresh TensorFlow processes
def test_the_benchmark_runs_each_runtime_in_a_process_of_its_own(tmp_path):
    from benchmarks import upscale_runtimes

    argv = ["--sizes", "48x40", "--runtimes", "keras", "tflite", "--output", str(tmp_path)]
    assert upscale_runtimes.main(argv) == 0
    rows = json.loads((tmp_path / "upscale_runtimes.json").read_text())["rows"]
    assert [(r["runtime"], r["ran"]) for r in rows] == [
        ("keras", "keras auto"),
        ("tflite", "tflite fp32"),
    ]
    assert all(r["seconds"] > 0 and 100 < r["peak_rss_mb"] < 4096 for r in rows)
    assert rows[1]["psnr_vs_keras_db"] >= 60
    assert "| 48x40 | tflite | tflite fp32 |" in (tmp_path / "upscale_runtimes.md").read_text()
