"""Tests for export/base.py: optional dependencies."""

from __future__ import annotations

import json

import pytest
from helpers import run_python

from export import base

# --- require ---------------------------------------------------------------------------------


def test_require():
    assert base.require("json") is json
    with pytest.raises(base.MissingDependency) as error:
        base.require("no_such_module_4242.sub", purpose="the ONNX export")
    message = str(error.value)
    assert isinstance(error.value, ImportError)  # run_command: one line, exit status 1
    assert message.startswith("the ONNX export needs the Python package 'no_such_module_4242'")
    assert message.endswith("install the export extras: pip install '.[export]'")
    with pytest.raises(base.MissingDependency, match="package 'onnx-tool'"):
        base.require("no_such_module_4242", "onnx-tool")


@pytest.mark.parametrize("format", ["onnx", "tflite", "openvino", "saved_model"])
def test_a_scale_with_no_packaged_model_exits_2_before_tensorflow_loads(tmp_path, format):
    code = f"""
        import sys
        from export import {format} as exporter
        status = exporter.main(sys.argv[1:])
        print("exit", status, "tensorflow" in sys.modules)
    """
    result = run_python(code, "--scale", "3", "--output", str(tmp_path / "out"), timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "exit 2 False", result.stderr
    assert result.stderr.startswith(f"python -m export.{format}: --scale 3: no packaged ×3 model")
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())
