"""Tests for export/trt_gpu_check.py, the engine check for a GPU host: without tensorrt (here
and in CI) it fails with one line; its flags are checked before any file is read."""

import os

import pytest

from export import trt_gpu_check, trt_routes

HAS_TENSORRT = trt_routes.tensorrt_version() is not None


def test_gpu_check_script_reports_missing_tensorrt(tmp_path, capsys):
    if HAS_TENSORRT:
        pytest.skip("tensorrt is installed")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    assert trt_gpu_check.main([str(model)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install tensorrt" in err
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_gpu_check_script_refuses_a_malformed_shape_in_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.onnx"
    assert trt_gpu_check.main([str(missing), "--opt-shape", "1x1"]) == 1
    err = capsys.readouterr().err
    expected = "--opt-shape '1x1': expected NxHxWx3 with positive sizes"
    assert err == f"python -m export.trt_gpu_check: error: {expected}\n"
