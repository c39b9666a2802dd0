"""Tests for export/base.py: optional dependencies."""

from __future__ import annotations

import json

import pytest

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
