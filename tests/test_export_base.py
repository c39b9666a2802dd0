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


def test_packaged_or_path_takes_scale_with_default_or_fast_only(tmp_path, monkeypatch):
    from drn_tf import bundled
    from drn_tf.flags import UsageError

    fast, x2 = tmp_path / "fast_x4.keras", tmp_path / "x2.keras"
    for path in (fast, x2):
        path.write_bytes(b"")
    monkeypatch.setattr(bundled, "DEFAULT_MODEL_PATHS", {2: x2, 4: fast.with_name("x4.keras")})
    monkeypatch.setattr(bundled, "FAST_MODEL_PATHS", {4: fast})
    assert base.packaged_or_path("fast", None) == base.packaged_or_path("fast", 4) == str(fast)
    assert base.packaged_or_path("default", 2) == str(x2)
    assert base.packaged_or_path(str(x2), None) == str(x2)
    with pytest.raises(UsageError, match=r"^--scale 2: no packaged fast ×2 model \(packaged: ×4\)"):
        base.packaged_or_path("fast", 2)
    with pytest.raises(UsageError, match="goes with --model default or fast only"):
        base.packaged_or_path(str(x2), 2)
