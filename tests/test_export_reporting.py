"""Tests for export/reporting.py: the strict metadata JSON and the CPU description."""

from __future__ import annotations

import math
from pathlib import Path

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


def test_host_cpu_reads_proc_cpuinfo():
    cpu = reporting.host_cpu()
    assert set(cpu["features"]) <= set(reporting.CPU_FEATURES) and cpu["model"]
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo")
    flags = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags"))
    words = flags.split(":", 1)[1].split()
    assert cpu["features"] == [f for f in reporting.CPU_FEATURES if f in words]
