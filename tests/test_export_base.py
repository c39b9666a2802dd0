"""Tests for export/base.py: staged writing, destination checks, verification against the floors,
agreement, calibration images, optional dependencies and the metadata JSON."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export import base


def _leftovers(folder: Path) -> list[str]:
    """Hidden entries (temporaries, renamed-aside old artifacts) left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _upscale_nearest(images: np.ndarray, scale: int = 4) -> np.ndarray:
    """A stand-in "model": nearest-neighbour ×scale, float32 NHWC."""
    return np.repeat(np.repeat(images, scale, axis=1), scale, axis=2).astype(np.float32)


# --- staged ----------------------------------------------------------------------------------


def test_staged_moves_a_file_and_its_metadata_into_place(tmp_path):
    output = tmp_path / "sub" / "model.onnx"
    with base.staged(output) as temp:
        assert temp.parent == output.parent and temp.name.startswith(".")
        temp.write_text("new")
        base.metadata_path(temp).write_text('{"m": 1}')
    assert output.read_text() == "new"
    assert base.metadata_path(output) == tmp_path / "sub" / "model.onnx.json"
    assert json.loads(base.metadata_path(output).read_text()) == {"m": 1}
    assert _leftovers(output.parent) == []


def test_staged_folder_keeps_its_metadata_inside(tmp_path):
    output = tmp_path / "ir"
    with base.staged(output) as temp:
        temp.mkdir()
        (temp / "model.xml").write_text("xml")
        base.metadata_path(temp).write_text("{}")
    assert sorted(p.name for p in output.iterdir()) == ["export.json", "model.xml"]
    assert base.metadata_path(output) == output / "export.json"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("kind", ["file", "folder"])
def test_staged_failure_leaves_the_old_artifact_and_no_temporaries(tmp_path, error, kind):
    output = tmp_path / "artifact"
    if kind == "file":
        output.write_text("old")
        Path(f"{output}.json").write_text("old metadata")
    else:
        output.mkdir()
        (output / "old.txt").write_text("old")
    with pytest.raises(error), base.staged(output, overwrite=True) as temp:
        if kind == "file":
            temp.write_text("half written")
            Path(f"{temp}.json").write_text("new metadata")
        else:
            temp.mkdir()
            (temp / "new.txt").write_text("half written")
        raise error("conversion failed")
    if kind == "file":
        assert output.read_text() == "old"
        assert Path(f"{output}.json").read_text() == "old metadata"
    else:
        assert [p.name for p in output.iterdir()] == ["old.txt"]
    assert _leftovers(tmp_path) == []


def test_staged_overwrite_replaces_a_file(tmp_path):
    output = tmp_path / "model.tflite"
    output.write_text("old")
    Path(f"{output}.json").write_text("old metadata")
    with base.staged(output, overwrite=True) as temp:
        temp.write_text("new")
        Path(f"{temp}.json").write_text("new metadata")
    assert output.read_text() == "new"
    assert Path(f"{output}.json").read_text() == "new metadata"
    assert _leftovers(tmp_path) == []


def test_staged_overwrite_replaces_a_folder(tmp_path):
    output = tmp_path / "1"
    output.mkdir()
    (output / "stale.pb").write_text("old")
    with base.staged(output, overwrite=True) as temp:
        temp.mkdir()
        (temp / "saved_model.pb").write_text("new")
    assert [p.name for p in output.iterdir()] == ["saved_model.pb"]
    assert _leftovers(tmp_path) == []


def test_staged_refuses_an_existing_artifact_before_any_work(tmp_path):
    output = tmp_path / "model.onnx"
    output.write_text("old")
    ran = []
    with (
        pytest.raises(base.ExportError, match="model.onnx: already exists; pass --overwrite"),
        base.staged(output) as temp,
    ):
        ran.append(temp)
    assert ran == [] and output.read_text() == "old"


def test_staged_exporter_that_wrote_nothing(tmp_path):
    with (
        pytest.raises(base.ExportError, match="model.onnx: the exporter wrote nothing"),
        base.staged(tmp_path / "model.onnx"),
    ):
        pass
    assert list(tmp_path.iterdir()) == []


# --- check_destination -----------------------------------------------------------------------


def test_check_destination_existing_needs_overwrite(tmp_path):
    (tmp_path / "a.onnx").write_text("x")
    with pytest.raises(base.ExportError, match=r"a\.onnx: already exists; pass --overwrite"):
        base.check_destination(tmp_path / "a.onnx", overwrite=False)
    assert base.check_destination(tmp_path / "a.onnx", overwrite=True) == tmp_path / "a.onnx"
    assert base.check_destination(tmp_path / "new" / "deeper" / "b.onnx", False).name == "b.onnx"


def test_check_destination_not_writable(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores permission bits: emulate a read-only mount
        real_access = os.access
        monkeypatch.setattr(
            base.os, "access", lambda p, m: False if Path(p) == locked else real_access(p, m)
        )
    try:
        # the nearest existing folder is checked: a missing sub-folder could not be created
        with pytest.raises(base.ExportError, match=r"locked/sub: output folder is not writable"):
            base.check_destination(locked / "sub" / "m.onnx", overwrite=False)
        with pytest.raises(base.ExportError, match=r"locked: output folder is not writable"):
            base.check_destination(locked / "m.onnx", overwrite=False)
    finally:
        locked.chmod(0o700)


# --- agreement and verify --------------------------------------------------------------------


def test_agreement_against_a_hand_computed_psnr():
    reference = np.zeros((1, 2, 2, 3), np.float32)
    output = reference.copy()
    output[0, 0, 0, 0] = 12.0  # MSE = 144 / 12 = 12
    result = base.agreement(output, reference)
    assert result["psnr_db"] == pytest.approx(10 * math.log10(255**2 / 12))
    assert result["psnr_db"] == pytest.approx(37.3390, abs=1e-4)
    assert result["max_abs"] == 12.0
    assert base.agreement(reference, reference) == {"psnr_db": math.inf, "max_abs": 0.0}
    with pytest.raises(base.ExportError, match=r"output shape \(1, 2, 2, 2\) differs"):
        base.agreement(output[..., :2], reference)


def test_verify_records_every_probe_image():
    # a constant error of 1/64, exact in float32 on 0..255: 20·log10(255 · 64) dB
    records = base.verify(lambda x: _upscale_nearest(x) + 1 / 64, _upscale_nearest, 4, 60.0)
    names = [name for name, _ in base.probe_images(4)]
    assert [r["input"] for r in records] == names and len(names) == 2
    shapes = {tuple(r["shape"]) for r in records}
    assert len(shapes) == 2 and all(s[0] == 1 and s[3] == 3 for s in shapes)
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

    name = base.probe_images(4)[0][0]
    with pytest.raises(base.ExportError) as error:
        base.verify(runner, _upscale_nearest, 4, 45.0)
    message = str(error.value)
    assert message.startswith(f"verification failed on {name}: 40.")
    assert "below the 45 dB floor" in message and "\n" not in message


def test_verify_shape_mismatch_and_non_finite():
    with pytest.raises(base.ExportError, match="output shape .* differs from Keras's"):
        base.verify(lambda x: _upscale_nearest(x)[:, :-1], _upscale_nearest, 4, 60.0)

    def nan_pixel(images):
        out = _upscale_nearest(images)
        out[0, 0, 0, 0] = np.nan
        return out

    name = base.probe_images(4)[0][0]
    with pytest.raises(base.ExportError, match=f"verification on {name}: .* not finite"):
        base.verify(nan_pixel, _upscale_nearest, 4, 60.0)


# --- calibration images ----------------------------------------------------------------------


def _photos(folder: Path, sizes: list[tuple[int, int]]) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate(sizes):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"p{i}.{'png' if i % 2 else 'jpg'}")


def test_calibration_images_count_and_shapes(tmp_path):
    _photos(tmp_path / "a", [(200, 160), (128, 256)])
    _photos(tmp_path / "b" / "nested", [(300, 300)])
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    crops = base.calibration_images([tmp_path / "a", tmp_path / "b"], scale=4, count=7, size=16)
    assert len(crops) == 7
    for crop in crops:
        assert crop.shape == (1, 16, 16, 3) and crop.dtype == np.float32
        assert crop.min() >= 0 and crop.max() <= 255
    default = base.calibration_images([], scale=4, count=5, size=24)  # the bundled sample
    assert len(default) == 5 and {c.shape for c in default} == {(1, 24, 24, 3)}


def test_calibration_images_bad_folders(tmp_path):
    with pytest.raises(base.ExportError, match="missing: calibration folder does not exist"):
        base.calibration_images([tmp_path / "missing"], scale=4)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(base.ExportError, match="empty: no images found for calibration"):
        base.calibration_images([tmp_path / "empty"], scale=4)
    _photos(tmp_path / "small", [(40, 40)])
    with pytest.raises(base.ExportError, match="at least 192 pixels on a side"):
        base.calibration_images([tmp_path / "small"], scale=4, size=48)


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


# --- the metadata JSON -----------------------------------------------------------------------


def test_finish_writes_the_metadata(tiny, tmp_path):
    source = base.load_source(tiny[1])
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"artifact")
    report = base.finish(
        format="test",
        source=source,
        staged_path=artifact,
        output=tmp_path / "final.bin",
        runner=base.keras_runner(source.model),
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
    assert [r["floor_db"] for r in metadata["verification"]] == [45.0, 45.0]
    assert metadata["timing"]["input_shape"] == [1, 128, 128, 3]
    assert metadata["artifact"] == str(tmp_path / "final.bin") and metadata["notes"] == ["a note"]
    summary = report.summary()
    assert "latency on 128x128" in summary and f"metadata: {tmp_path / 'final.bin.json'}" in summary
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        base.finish(
            format="test", source=source, staged_path=artifact, output=artifact,
            runner=base.keras_runner(source.model), precision="fp8", io={},
        )  # fmt: skip
