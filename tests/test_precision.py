"""Tests for drn_tf.precision: which Keras dtype policy ``--precision`` stands for."""

from __future__ import annotations

import pytest

from drn_tf import precision


@pytest.mark.parametrize("flags, expected", [("fpu sse2 amx_bf16 amx_tile", True), ("fpu", False)])
def test_cpu_has_amx_bf16_reads_the_flags_line(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: amx_bf16 in a name\nflags\t\t: {flags}\n")
    assert precision.cpu_has_amx_bf16(cpuinfo) is expected
    assert precision.cpu_has_amx_bf16(tmp_path / "missing") is False


@pytest.mark.parametrize("amx", [True, False])
@pytest.mark.parametrize("gpu", [True, False])
def test_auto_precision_with_the_capabilities_faked(monkeypatch, tmp_path, amx, gpu):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"flags\t: sse2 {'amx_bf16' if amx else 'avx512f'}\n")
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    monkeypatch.setattr(precision, "_has_gpu", lambda: gpu)
    cpu_choice = "mixed_bfloat16" if amx else "float32"
    assert precision.resolve_precision("auto") == ("float32" if gpu else cpu_choice)
    training = precision.resolve_precision("auto", training=True)
    assert training == ("mixed_float16" if gpu else cpu_choice)


def test_resolve_precision_names():
    assert precision.resolve_precision("bfloat16") == "mixed_bfloat16"
    assert precision.resolve_precision("float32") == "float32"
    assert precision.resolve_precision("mixed_float16", training=True) == "mixed_float16"
    for bad, training in (("mixed_float16", False), ("float16", False), ("bfloat16", True)):
        with pytest.raises(ValueError, match="precision must be one of"):
            precision.resolve_precision(bad, training)
