"""Tests for drn_tf.cpu: the CPU's model and flags, and oneDNN's ISA cap."""

from __future__ import annotations

import pytest

from drn_tf import cpu

CPUINFO = (
    "processor\t: 0\nmodel name\t: Test CPU 9000\n"
    "flags\t\t: fpu sse avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_tile amx_bf16\n\n"
    "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n"
)


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    return path


def test_reads_the_first_cpus_model_and_flags(cpuinfo):
    assert cpu.cpu_model(cpuinfo) == "Test CPU 9000"
    assert cpu.cpu_flags(cpuinfo) == {
        "fpu", "sse", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
        "amx_tile", "amx_bf16",
    }  # fmt: skip


def test_an_unreadable_cpuinfo_has_no_flags(tmp_path, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert cpu.cpu_flags(tmp_path / "missing") == frozenset()
    assert cpu.cpu_model(tmp_path / "missing")  # the platform's name, or "unknown CPU"


@pytest.mark.parametrize(
    "cap, kept, dropped",
    [
        ("AVX2", {"avx2", "fma"}, {"avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"}),
        ("avx512_core", {"avx512f", "avx512bw"}, {"avx512_vnni", "avx512_bf16", "amx_tile"}),
        ("AVX512_CORE_VNNI", {"avx512_vnni"}, {"avx512_bf16", "amx_bf16"}),
        ("AVX512_CORE_BF16", {"avx512_bf16"}, {"amx_tile", "amx_bf16"}),
        ("AVX512_CORE_AMX", {"amx_bf16", "avx512_bf16"}, set()),
        ("ALL", {"amx_bf16"}, set()),
        ("NOT_AN_ISA", {"amx_bf16"}, set()),  # oneDNN ignores a name it does not know
    ],
)
def test_onednn_cap_drops_the_flags_above_it(cpuinfo, monkeypatch, cap, kept, dropped):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    flags = cpu.cpu_flags(cpuinfo)
    assert kept <= flags and not dropped & flags
    assert {"fpu", "sse"} <= flags  # flags oneDNN does not decide on are kept


def test_describe_names_the_model_features_and_cap(cpuinfo, monkeypatch):
    assert cpu.describe_cpu(cpuinfo) == (
        "Test CPU 9000 (avx2, fma, avx512f, avx512bw, avx512_vnni, avx512_bf16, amx_tile, amx_bf16)"
    )
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert cpu.describe_cpu(cpuinfo) == "Test CPU 9000 (avx2, fma; oneDNN held to AVX2)"


def test_native_bf16_needs_avx512_bf16_or_amx_and_follows_the_cap(cpuinfo, monkeypatch):
    monkeypatch.setattr(cpu, "CPUINFO", cpuinfo)
    assert cpu.native_bf16()
    assert cpu.native_bf16({"avx512_bf16"}) and cpu.native_bf16(["amx_bf16", "avx2"])
    assert not cpu.native_bf16({"avx2", "avx512f", "avx512_vnni", "amx_int8"})
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert not cpu.native_bf16()


def test_auto_precision_follows_the_cap(cpuinfo, monkeypatch):
    """An AMX CPU held below AMX is not an AMX CPU for ``--precision auto``."""
    from drn_tf import precision

    monkeypatch.setattr(cpu, "CPUINFO", cpuinfo)
    monkeypatch.setattr(precision, "_has_gpu", lambda: False)
    assert precision.resolve_precision("auto", training=True) == "mixed_bfloat16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # AVX-512 BF16 still native
    assert precision.resolve_precision("auto", training=True) == "mixed_bfloat16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert precision.resolve_precision("auto", training=True) == "float32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert precision.resolve_precision("auto") == "float32"
