"""TensorRT export (export/trt.py): the command line (wrong flags exit 2 before TensorFlow
loads, no route exit 2), the route-2 flow with the GPU parts faked.

No GPU and no tensorrt exist here or in CI: the probes and the engine are faked where needed.
"""

from pathlib import Path

import pytest
from helpers import run_python
from test_export_trt_routes import fake_probes

from export import base, reporting, trt
from export import onnx as onnx_export


def test_no_route_is_exit_2_with_one_line(monkeypatch, tmp_path, capsys):
    fake_probes(monkeypatch)
    output = tmp_path / "drn.engine"
    assert trt.main(["--output", str(output)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("python -m export.trt: no TensorRT route here")
    for needed in ("TF-TRT", "tensorrt", "CUDA GPU", "--onnx-only"):
        assert needed in captured.err
    assert "Traceback" not in captured.err and not list(tmp_path.iterdir())


# --- flags ---------------------------------------------------------------------------------


def test_flag_errors(monkeypatch, tmp_path, capsys):
    fake_probes(monkeypatch, False, "10.8.0", 1)
    output = str(tmp_path / "m.engine")
    assert trt.main(["--output", output, "--calibration-data", str(tmp_path)]) == 2
    assert "--calibration-data is used only with --precision int8" in capsys.readouterr().err
    assert trt.main(["--output", output, "--min-shape", "1x64x64x3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must admit the verification and timing inputs" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--opt-shape", "1x1"], "--opt-shape '1x1': expected NxHxWx3 with positive sizes"),
        (["--max-shape", "1x64x64x4"], "--max-shape '1x64x64x4': expected NxHxWx3"),
        (["--min-shape", "1x256x256x3"], "shape range: need min <= opt <= max"),
        (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
        (["--precision", "int8"], "--precision int8 needs --calibration-data"),
    ],
)
def test_wrong_flag_values_exit_2_before_tensorflow_loads(tmp_path, flags, message):
    """Issue #22 item 16: a wrong flag value is told at once (exit 2), not after TensorFlow and
    the model have loaded (a malformed shape was exit 1, seconds later)."""
    code = """
        import sys
        from export import trt
        status = trt.main(sys.argv[1:])
        print("exit", status, "tensorflow" in sys.modules)
    """
    result = run_python(code, "--output", str(tmp_path / "m.engine"), *flags, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "exit 2 False", result.stderr
    assert result.stderr.startswith(f"python -m export.trt: {message}"), result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


def test_int8_needs_calibration_data(tmp_path, capsys):
    with pytest.raises(base.ExportError, match="needs --calibration-data"):
        trt.export_trt("default", tmp_path / "m.onnx", precision="int8", onnx_only=True)
    argv = ["--output", str(tmp_path / "m.onnx"), "--precision", "int8", "--onnx-only"]
    assert trt.main(argv) == 2
    assert "needs --calibration-data" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# --- route 2 wiring, with the GPU parts faked ----------------------------------------------


@pytest.mark.slow
def test_route_2_flow_with_a_fake_engine(monkeypatch, tiny, tmp_path, capsys):
    """Route 2 end to end with the two GPU steps replaced: the "engine" is the ONNX run in
    onnxruntime. Checks what reaches the builder and what the report says."""
    fake_probes(monkeypatch, False, "10.8.0", 1)
    built = {}

    def fake_build(onnx_path, shapes):
        built["ops"] = onnx_export.op_types(onnx_path)
        built["shapes"] = shapes
        return Path(onnx_path).read_bytes()

    def fake_runner(engine: bytes):
        scratch = tmp_path / "engine_as.onnx"
        scratch.write_bytes(engine)
        return onnx_export.onnxruntime_runner(scratch)

    monkeypatch.setattr(trt, "build_engine", fake_build)
    monkeypatch.setattr(trt, "EngineRunner", fake_runner)
    output = tmp_path / "tiny_fp16.engine"
    _, model_path = tiny
    argv = ["--model", str(model_path), "--output", str(output), "--precision", "fp16"]
    assert trt.main([*argv, "--timing-runs", "1", "--max-shape", "2x256x300x3"]) == 0
    printed = capsys.readouterr().out
    assert "(tensorrt-engine, fp16)" in printed and "route: onnx-tensorrt" in printed
    assert "its ONNX in onnxruntime against Keras" in printed
    assert built["shapes"] == [(1, 16, 16, 3), (1, 128, 128, 3), (2, 256, 300, 3)]
    assert ("", "Cast") in built["ops"]  # the fp16 ONNX went to the builder
    assert output.is_file() and reporting.metadata_path(output).is_file()
