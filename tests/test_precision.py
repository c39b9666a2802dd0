"""Tests for drn_tf.precision: which Keras dtype policy ``--precision`` stands for."""

from __future__ import annotations

import pytest

from drn_tf import cpu, precision


@pytest.mark.parametrize(
    "flags, upscaling, training",
    [
        ("amx_bf16 avx512_bf16", "mixed_bfloat16", "mixed_bfloat16"),
        ("avx512_bf16 avx512f", "mixed_bfloat16", "mixed_bfloat16"),
        ("avx512f avx2", "float32", "float32"),
    ],
)
@pytest.mark.parametrize("gpu", [True, False])
def test_auto_precision_with_the_capabilities_faked(
    monkeypatch, tmp_path, flags, upscaling, training, gpu
):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"flags\t: sse2 {flags}\n")
    monkeypatch.setattr(cpu, "CPUINFO", cpuinfo)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(precision, "_has_gpu", lambda: gpu)
    assert precision.resolve_precision("auto") == ("float32" if gpu else upscaling)
    trained = precision.resolve_precision("auto", training=True)
    assert trained == ("mixed_float16" if gpu else training)


def test_resolve_precision_names(monkeypatch):
    monkeypatch.setattr(precision, "_has_gpu", lambda: True)  # mixed_float16 needs one
    assert precision.resolve_precision("bfloat16") == "mixed_bfloat16"
    assert precision.resolve_precision("float32") == "float32"
    assert precision.resolve_precision("mixed_float16", training=True) == "mixed_float16"
    for bad, training in (("mixed_float16", False), ("float16", False), ("bfloat16", True)):
        with pytest.raises(ValueError, match="precision must be one of"):
            precision.resolve_precision(bad, training)


def test_mixed_float16_training_needs_a_gpu(monkeypatch):
    """Asked for by name, mixed_float16 is refused without a GPU (CPUs emulate float16: a
    DRN-S ×4 training step took 8.5× float32's) and kept with one; ``auto`` never picks it
    there (test above)."""
    monkeypatch.setattr(precision, "_has_gpu", lambda: False)
    with pytest.raises(ValueError, match="mixed_float16 needs a GPU.*use auto, float32 or"):
        precision.resolve_precision("mixed_float16", training=True)
    assert precision.resolve_precision("float32", training=True) == "float32"
    assert precision.resolve_precision("mixed_bfloat16", training=True) == "mixed_bfloat16"
    monkeypatch.setattr(precision, "_has_gpu", lambda: True)
    assert precision.resolve_precision("mixed_float16", training=True) == "mixed_float16"
