"""TFLite / LiteRT export (export/tflite.py): each quantization of the packaged model, LiteRT
agreement at two sizes, op list, Set5 task PSNR, CLI."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from helpers import SET5, photo_batch

from drn_tf import serving
from export import base, photo_sets, reporting, tflite, verification

MODES = list(tflite.QUANTIZATIONS)


@pytest.fixture(scope="module")
def exports(default_source, tmp_path_factory):
    """The packaged model exported in a quantization, once per mode: ``exports(mode)`` →
    ``(report, path)``."""
    folder = tmp_path_factory.mktemp("tflite")
    done = {}

    def get(mode: str):
        if mode not in done:
            path = folder / f"drn_{mode}.tflite"
            report = tflite.export_tflite(default_source, path, quantization=mode, timing_runs=0)
            done[mode] = report, path
        return done[mode]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_each_quantization_verifies_above_its_floor(exports, default_source, mode):
    report, path = exports(mode)
    floor = base.FLOORS_DB[tflite.QUANTIZATIONS[mode]]
    assert report.precision == tflite.QUANTIZATIONS[mode]
    assert [r["floor_db"] for r in report.verification] == [floor] * len(photo_sets.probe_images(4))
    assert all(r["psnr_db"] >= floor for r in report.verification)
    metadata = reporting.read_metadata(path)  # strict: no Infinity/NaN
    assert metadata["format"] == "tflite" and metadata["io"]["quantization"] == mode
    assert metadata["verification"] == json.loads(reporting.strict_json(report.verification))
    assert metadata["verified_on"] == {"cpu": reporting.host_cpu()}
    assert tflite.embedded_metadata(path) == metadata  # the flatbuffer holds the same fields
    assert metadata["model"]["source_sha256"] == base.sha256_of(default_source.path)


@pytest.mark.slow
def test_quantized_sizes_and_tensor_types(exports):
    """float16 stores half-size weights, dynamic and int8 quarter-size ones; only int8 has
    int8 activations (the input of every CONV_2D but the first three and last two, which read
    and write raw pixels, and the down path's four, which stay float)."""
    sizes = {mode: exports(mode)[1].stat().st_size for mode in MODES}
    assert 0.45 < sizes["float16"] / sizes["none"] < 0.6
    assert 0.2 < sizes["dynamic"] / sizes["none"] < 0.35
    assert 0.2 < sizes["int8"] / sizes["none"] < 0.35
    for mode, weight, activation in [
        ("none", np.float32, np.float32),
        ("float16", np.float16, np.float32),
        ("dynamic", np.int8, np.float32),
        ("int8", np.int8, np.int8),
    ]:
        interpreter = Interpreter(model_path=str(exports(mode)[1]))
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        ops = interpreter._get_ops_details()
        # float16 weights reach the convolutions through DEQUANTIZE (to float32).
        stored = {op["outputs"][0]: op["inputs"][0] for op in ops if op["op_name"] == "DEQUANTIZE"}
        convs = [op for op in ops if op["op_name"] == "CONV_2D"]
        if mode == "int8":  # ×4: upsample, sub_mean, head, 2 × 2 down; tail, add_mean
            reads = [tensors[op["inputs"][0]]["dtype"] for op in convs]
            floats = [i for i, dtype in enumerate(reads) if dtype != np.int8]
            assert floats == [*range(7), len(convs) - 2, len(convs) - 1]
            assert {tensors[convs[i]["inputs"][1]]["dtype"] for i in floats} == {np.float32}
            leaky = [op for op in ops if op["op_name"] == "LEAKY_RELU"]  # the down path's
            assert len(leaky) == 2
            assert {tensors[op["inputs"][0]]["dtype"] for op in leaky} == {np.float32}
            convs = convs[7:-2]
        kernels = [tensors[stored.get(op["inputs"][1], op["inputs"][1])] for op in convs]
        # Dynamic-range quantization leaves kernels under 1024 values (1×1 attention) in float.
        large = {k["dtype"] for k in kernels if mode != "dynamic" or np.prod(k["shape"]) >= 1024}
        assert large == {weight}, mode
        assert {tensors[op["inputs"][0]]["dtype"] for op in convs} == {activation}, mode


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [(33, 47), (24, 40)], ids=["odd", "even"])
def test_runs_in_litert_at_two_sizes_batch_2(exports, default_source, mode, size):
    _, path = exports(mode)
    interpreter = Interpreter(model_path=str(path))
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["images"], "outputs": ["sr"]}
    }
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [-1, -1, -1, 3]
    images = photo_batch(*size)
    output = tflite.litert_runner(path, threads=2)(images)
    expected = verification.keras_runner(default_source.model)(images)
    assert output.shape == (2, 4 * size[0], 4 * size[1], 3) == expected.shape
    assert output.dtype == np.float32
    floor = base.FLOORS_DB[tflite.QUANTIZATIONS[mode]]
    assert verification.agreement(output, expected)["psnr_db"] >= floor
    by_signature = interpreter.get_signature_runner("serving_default")(images=images)
    np.testing.assert_array_equal(by_signature["sr"], output)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_only_builtin_operators(exports, mode):
    ops = tflite.op_names(exports(mode)[1])
    assert not any(op == "CUSTOM" or op.startswith("Flex") for op in ops), ops
    # The bicubic layer is convolutions and PixelShuffle is DEPTH_TO_SPACE.
    assert {"CONV_2D", "DEPTH_TO_SPACE"} <= ops and not any("RESIZE" in op for op in ops)
    assert ("QUANTIZE" in ops) == (mode == "int8")


@pytest.fixture(scope="module")
def keras_set5_psnr(default_source) -> float:
    return verification.task_psnr(verification.keras_runner(default_source.model), 4, SET5)


DROPS = [("float16", 0.05), ("dynamic", 0.3), ("int8", 0.15)]
# Integer-only (--io uint8) has no float operator to keep the ends in: the bicubic upsampling,
# the head and the tail all run on int8 activations (a step of about 1.2 gray levels across
# the upsampled image's range), which the float-I/O int8 keeps in float. Its own bound.
INTEGER_ONLY_DROP_DB = 0.25


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "max_drop"), DROPS)
def test_set5_x4_task_psnr_drop(exports, keras_set5_psnr, mode, max_drop):
    keras_psnr = keras_set5_psnr
    psnr = verification.task_psnr(tflite.litert_runner(exports(mode)[1]), 4, SET5)
    assert keras_psnr - psnr <= max_drop, (keras_psnr, psnr)


@pytest.mark.slow
def test_uint8_io_runs_on_pixels(default_source, keras_set5_psnr, tmp_path):
    """``--io uint8``: full int8 with uint8 pixels in and out (scale 1, zero point 0), which
    LiteRT runs within the int8 floor of Keras's pixels and the integer-only Set5 bound."""
    path = tmp_path / "drn_uint8.tflite"
    report = tflite.export_tflite(
        default_source, path, quantization="int8", io="uint8", timing_runs=0
    )
    assert all(r["psnr_db"] >= base.FLOORS_DB["int8"] for r in report.verification)
    metadata = reporting.read_metadata(path)
    assert metadata["io"]["input"]["dtype"] == metadata["io"]["output"]["dtype"] == "uint8"
    interpreter = Interpreter(model_path=str(path))
    (given,), (returned,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert given["dtype"] == returned["dtype"] == np.uint8
    assert given["quantization"] == returned["quantization"] == (1.0, 0)
    assert np.float32 not in {t["dtype"] for t in interpreter.get_tensor_details()}
    images = photo_batch(33, 47)
    pixels = images.astype(np.uint8)
    np.testing.assert_array_equal(pixels, images)  # the photo is whole pixel values
    output = interpreter.get_signature_runner("serving_default")(images=pixels)["sr"]
    expected = serving.to_pixels(verification.keras_runner(default_source.model)(images)).numpy()
    assert output.dtype == np.uint8 and output.shape == expected.shape == (2, 132, 188, 3)
    assert verification.agreement(output, expected)["psnr_db"] >= base.FLOORS_DB["int8"]
    psnr = verification.task_psnr(tflite.litert_runner(path), 4, SET5)
    assert keras_set5_psnr - psnr <= INTEGER_ONLY_DROP_DB, (keras_set5_psnr, psnr)


def test_empty_calibration_range_is_widened(tmp_path):
    """A ReLU that is zero on every calibration image (its calibrated range is [0, 0]) still
    gives an int8 model that XNNPACK runs, and that computes zeros there."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    dead = keras.layers.Conv2D(4, 1, activation="relu", bias_initializer="zeros")
    top = keras.layers.Conv2D(3, 1, bias_initializer=keras.initializers.Constant(50.0))
    model = keras.Model(inputs, top(dead(inputs)))
    dead.kernel.assign(-np.abs(dead.kernel.numpy()))  # negative weights, positive inputs: 0
    rng = np.random.default_rng(0)
    calibration = [rng.uniform(0, 255, (1, 8, 8, 3)).astype(np.float32) for _ in range(4)]
    path = tmp_path / "dead.tflite"
    path.write_bytes(tflite.to_tflite(model, "int8", calibration))
    images = rng.uniform(0, 255, (1, 12, 10, 3)).astype(np.float32)
    output = tflite.litert_runner(path)(images)
    # The output is the constant bias 50, which int8 on 0..50 represents within a step.
    np.testing.assert_allclose(output, np.full((1, 12, 10, 3), 50.0), atol=50 / 255)


@pytest.mark.slow
def test_cli(tmp_path, capsys):
    output = tmp_path / "out" / "drn.tflite"
    argv = ["--output", str(output), "--quantization", "dynamic", "--threads", "1"]
    assert tflite.main([*argv, "--timing-runs", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {output} (tflite, int8)" in printed and "latency on 128x128" in printed
    metadata = reporting.read_metadata(output)
    assert metadata["io"]["quantization"] == "dynamic" and "1 threads" in metadata["notes"][0]
    assert metadata["timing"]["artifact_ms"] > 0 and metadata["timing"]["keras_ms"] > 0
    assert sorted(p.name for p in output.parent.iterdir()) == ["drn.tflite", "drn.tflite.json"]


def test_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    output = tmp_path / "m.tflite"
    output.write_bytes(b"old")
    assert tflite.main(["--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert output.read_bytes() == b"old"


def test_flag_errors(tmp_path, capsys):
    output = str(tmp_path / "m.tflite")
    assert tflite.main(["--output", output, "--quantization", "bogus"]) == 2
    assert "--quantization" in capsys.readouterr().err
    assert tflite.main(["--quantization", "int8"]) == 2
    assert "--output is required" in capsys.readouterr().err
    for argv in (["--calibration-data", str(tmp_path)], ["--threads", "0"], ["--io", "uint8"]):
        assert tflite.main(["--output", output, *argv]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and argv[0] in err
    with pytest.raises(base.ExportError, match="--quantization 'bogus'"):
        tflite.export_tflite("default", output, quantization="bogus")
    assert not list(tmp_path.iterdir())


def test_bad_calibration_folder_is_one_line(tmp_path, capsys):
    argv = ["--output", str(tmp_path / "m.tflite"), "--quantization", "int8"]
    assert tflite.main([*argv, "--calibration-data", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err and "calibration" in err


def test_bad_models_are_one_line_errors(tmp_path, capsys):
    not_drn = tmp_path / "plain.keras"
    keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 3)]).save(not_drn)
    for model in (not_drn, tmp_path / "missing.keras"):
        assert tflite.main(["--model", str(model), "--output", str(tmp_path / "m.tflite")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(model) in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "m.tflite").exists()


def test_missing_litert_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails
    assert tflite.main(["--output", str(tmp_path / "m.tflite")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ai-edge-litert" in err and "pip install" in err


@pytest.mark.slow
def test_command_prints_our_lines_only(tmp_path):
    """A user sees the report, not LiteRT's delegate notice or the quantizer's C++ settings;
    `-v` brings them back."""

    def run(*extra):
        output = tmp_path / f"m{len(extra)}.tflite"
        argv = ["--output", str(output), "--quantization", "int8", "--timing-runs", "1", *extra]
        return subprocess.run(
            [sys.executable, "-m", "export.tflite", *argv], capture_output=True, text=True
        )

    quiet = run()
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and quiet.stdout.startswith("wrote ")
    verbose = run("-v")
    assert verbose.returncode == 0, verbose.stderr
    assert "XNNPACK" in verbose.stderr
