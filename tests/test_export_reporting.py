"""Tests for export/reporting.py: the strict metadata JSON and the CPU description."""

from __future__ import annotations

import math

import numpy as np
import pytest

from export import base, reporting, verification

# --- strict metadata -------------------------------------------------------------------------


def test_metadata_is_strict_json_with_null_for_an_infinite_psnr(tmp_path):
    """Identical outputs have an infinite PSNR: ``null`` in the JSON (which JavaScript and jq
    parse), ``inf`` in the summary; the strict reader refuses ``Infinity``/``NaN``."""
    record = {"input": "x", "shape": [1, 2, 2, 3], **verification.agreement(np.ones(3), np.ones(3))}
    report = reporting.Report(
        format="test",
        artifact=str(tmp_path / "a.bin"),
        precision="fp32",
        model={},
        io={"step": np.float32(1.5), "nan": math.nan},
        verification=[{**record, "floor_db": 60.0}],
        timing=None,
        versions={},
    )
    text = report.to_json()
    assert "Infinity" not in text and "NaN" not in text
    (tmp_path / "a.bin.json").write_text(text)
    metadata = reporting.read_metadata(tmp_path / "a.bin")
    assert metadata["verification"][0]["psnr_db"] is None
    assert metadata["io"] == {"step": 1.5, "nan": None}
    assert "on x: inf dB" in report.summary()
    (tmp_path / "a.bin.json").write_text('{"psnr_db": Infinity}')
    with pytest.raises(base.ExportError, match=r"a.bin.json: Infinity is not JSON"):
        reporting.read_metadata(tmp_path / "a.bin")


def test_host_cpu_lists_the_features_onednn_may_use(tmp_path, monkeypatch):
    from drn_tf import cpu

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Test CPU\nflags\t\t: fpu avx2 fma avx512f avx512_vnni\n")
    monkeypatch.setattr(cpu, "CPUINFO", cpuinfo)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    expected = ["avx2", "fma", "avx512f", "avx512_vnni"]
    assert reporting.host_cpu() == {"model": "Test CPU", "features": expected}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    held = {"model": "Test CPU", "features": ["avx2", "fma"], "onednn_max_cpu_isa": "AVX2"}
    assert reporting.host_cpu() == held
