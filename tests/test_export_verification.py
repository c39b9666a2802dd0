"""Tests for export/verification.py: agreement against hand-computed PSNRs, verification on every
probe image against the floors, and finish() writing the metadata."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
from pathlib import Path

import numpy as np
import pytest

from drn_tf import bundled
from export import base, photo_sets, reporting, verification


def _upscale_nearest(images: np.ndarray, scale: int = 4) -> np.ndarray:
    """A stand-in "model": nearest-neighbour ×scale, float32 NHWC."""
    return np.repeat(np.repeat(images, scale, axis=1), scale, axis=2).astype(np.float32)


# --- agreement and verify --------------------------------------------------------------------


def test_agreement_against_a_hand_computed_psnr():
    reference = np.zeros((1, 2, 2, 3), np.float32)
    output = reference.copy()
    output[0, 0, 0, 0] = 12.0  # MSE = 144 / 12 = 12
    result = verification.agreement(output, reference)
    assert result["psnr_db"] == pytest.approx(10 * math.log10(255**2 / 12))
    assert result["psnr_db"] == pytest.approx(37.3390, abs=1e-4)
    assert result["max_abs"] == 12.0
    assert verification.agreement(reference, reference) == {"psnr_db": math.inf, "max_abs": 0.0}
    with pytest.raises(base.ExportError, match=r"output shape \(1, 2, 2, 2\) differs"):
        verification.agreement(output[..., :2], reference)


def test_verify_records_every_probe_image():
    # a constant error of 1/64, exact in float32 on 0..255: 20·log10(255 · 64) dB
    records = verification.verify(lambda x: _upscale_nearest(x) + 1 / 64, _upscale_nearest, 4, 60.0)
    names = [name for name, _ in photo_sets.probe_images(4)]
    held_out = sorted(bundled.HELD_OUT_SET.glob("*.png"))
    assert [r["input"] for r in records] == names and len(names) == 2 + len(held_out) >= 6
    assert [n for n in names if n.startswith("held_out_")] == [
        f"held_out_{p.stem}_64x64" for p in held_out
    ]
    shapes = {tuple(r["shape"]) for r in records}
    assert len(shapes) == 3 and all(s[0] == 1 and s[3] == 3 for s in shapes)
    assert any(s[1] % 2 == 1 for s in shapes)  # an odd size among the probes
    for record in records:
        assert record["psnr_db"] == pytest.approx(20 * math.log10(255 * 64), abs=1e-9)
        assert record["max_abs"] == 1 / 64
        assert record["floor_db"] == 60.0


def test_verify_below_the_floor_names_the_input_and_db():
    noise = np.random.default_rng(0)

    def runner(images):  # Gaussian noise of σ = 2.55: about 40 dB
        expected = _upscale_nearest(images)
        return expected + noise.normal(0, 2.55, expected.shape).astype(np.float32)

    name = photo_sets.probe_images(4)[0][0]
    with pytest.raises(base.ExportError) as error:
        verification.verify(runner, _upscale_nearest, 4, 45.0)
    message = str(error.value)
    assert message.startswith(f"verification failed on {name}: 40.")
    assert "below the 45 dB floor" in message and "\n" not in message


def test_verify_shape_mismatch_and_non_finite():
    with pytest.raises(base.ExportError, match="output shape .* differs from Keras's"):
        verification.verify(lambda x: _upscale_nearest(x)[:, :-1], _upscale_nearest, 4, 60.0)

    def nan_pixel(images):
        out = _upscale_nearest(images)
        out[0, 0, 0, 0] = np.nan
        return out

    name = photo_sets.probe_images(4)[0][0]
    with pytest.raises(base.ExportError, match=f"verification on {name}: .* not finite"):
        verification.verify(nan_pixel, _upscale_nearest, 4, 60.0)


# --- the metadata JSON -----------------------------------------------------------------------


def test_finish_writes_the_metadata(tiny, tmp_path):
    source = base.load_source(tiny[1])
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"artifact")
    report = verification.finish(
        format="test",
        source=source,
        staged_path=artifact,
        output=tmp_path / "final.bin",
        runner=verification.keras_runner(source.model),
        precision="fp16",
        io={"input": "images"},
        packages=("pytest",),
        timing_runs=1,
        notes=["a note"],
    )
    metadata = json.loads(Path(f"{artifact}.json").read_text())
    assert metadata == json.loads(report.to_json())
    assert metadata["model"]["source_sha256"] == hashlib.sha256(tiny[1].read_bytes()).hexdigest()
    assert metadata["model"]["scale"] == 4 and metadata["model"]["variant"] == "drn-s"
    versions = metadata["versions"]
    assert versions["keras"] == importlib.metadata.version("keras")
    assert versions["pytest"] == importlib.metadata.version("pytest")
    assert versions["numpy"] == np.__version__ and "python" in versions
    assert "tensorflow" in versions or "tensorflow-cpu" in versions
    assert [r["floor_db"] for r in metadata["verification"]] == [45.0] * len(
        photo_sets.probe_images(4)
    )
    assert metadata["verified_on"] == {"cpu": reporting.host_cpu()}
    assert metadata["timing"]["input_shape"] == [1, 128, 128, 3]
    assert metadata["artifact"] == str(tmp_path / "final.bin") and metadata["notes"] == ["a note"]
    summary = report.summary()
    assert "latency on 128x128" in summary and f"metadata: {tmp_path / 'final.bin.json'}" in summary
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        verification.finish(
            format="test", source=source, staged_path=artifact, output=artifact,
            runner=verification.keras_runner(source.model), precision="fp8", io={},
        )  # fmt: skip
