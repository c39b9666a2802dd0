"""Tests for export/base.py: staged writing, destination checks, verification against the floors,
agreement, calibration images, optional dependencies and the metadata JSON."""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import sys
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


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_staged_sweeps_what_killed_exports_left(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    (tmp_path / "kept.onnx").write_text("complete")  # renamed aside, the new one then arrived
    (tmp_path / f".kept.onnx.old.{dead}.0123abcd").write_text("replaced")
    (tmp_path / f".lost.onnx.old.{dead}.0123abcd").write_text("the only copy")  # killed between
    (tmp_path / f".lost.onnx.json.old.{dead}.0123abcd").write_text("{}")  # the two renames
    (tmp_path / f".m.onnx.{dead}.9a1eacc9").write_text("half written")
    (tmp_path / f".m.onnx.{dead}.9a1eacc9.json").write_text("{}")
    for folder in (f".ir.{dead}.ffffffff", f".1.{dead}.00000000"):  # OpenVINO, TF Serving
        (tmp_path / folder / "variables").mkdir(parents=True)
        (tmp_path / folder / "variables" / "data").write_text("x")
    running = tmp_path / f".other.onnx.{alive}.0123abcd"  # an export still running
    running.write_text("in progress")
    with base.staged(tmp_path / "new.onnx") as temp:
        temp.write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["kept.onnx", "lost.onnx", "lost.onnx.json", "new.onnx", running.name]
    )
    assert (tmp_path / "lost.onnx").read_text() == "the only copy"
    assert (tmp_path / "kept.onnx").read_text() == "complete"


def test_staged_full_disk_names_the_destination_and_leaves_nothing(tmp_path):
    output = tmp_path / "models" / "1"  # neither folder exists yet
    with (
        pytest.raises(base.ExportError) as error,
        base.staged(output) as temp,
    ):
        temp.mkdir()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(error.value) == f"{output}: cannot write, no space left on device"
    assert list(tmp_path.iterdir()) == []  # models/ was made for the export: removed too
    with pytest.raises(ValueError, match="wrong"), base.staged(output):
        raise ValueError("wrong")  # any other failure as it was
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("free", [4096, 1 << 30])
def test_staged_a_bare_cpp_write_failure_on_a_full_disk(tmp_path, monkeypatch, free):
    """OpenVINO's writer says only "basic_ios::clear: iostream error": a full disk when (almost)
    nothing is left on the destination's filesystem, else the error as it was."""
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(base.shutil, "disk_usage", lambda path: usage._replace(free=free))
    output = tmp_path / "ir"
    expected = base.ExportError if free < 1 << 20 else RuntimeError
    with pytest.raises(expected, match="no space left|iostream"), base.staged(output) as temp:
        temp.mkdir()
        raise RuntimeError("basic_ios::clear: iostream error")
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
    held_out = sorted(base.HELD_OUT_SET.glob("*.png"))
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


def test_default_calibration_is_the_bundled_set_never_a_probe_image():
    """No folders: the 32 bundled LR crops as they are, at any scale; none of them is (a crop
    of) a verification photo, so int8 is verified on photos it was not calibrated on."""
    files = sorted(base.CALIBRATION_SET.glob("*.png"))
    assert len(files) == 32
    for scale in (2, 4):
        crops = base.calibration_images([], scale=scale)
        assert len(crops) == 32 and {c.shape for c in crops} == {(1, 48, 48, 3)}
        assert all(c.dtype == np.float32 for c in crops)
    for crop, path in zip(crops, files, strict=True):
        np.testing.assert_array_equal(crop[0], np.asarray(Image.open(path).convert("RGB")))
    sources = {p.stem for p in files}
    assert len({name.split("_")[0] for name in sources}) == 2  # BSD200 and T91 photos
    assert sources.isdisjoint(p.stem for p in base.HELD_OUT_SET.glob("*.png"))
    # No calibration crop appears inside any probe image (the sample photo, the held-out crops).
    for _, probe in base.probe_images(4):
        if min(probe.shape[1:3]) < 48:
            continue  # the crop of the sample photo: the sample photo is checked whole
        windows = np.lib.stride_tricks.sliding_window_view(probe[0], (48, 48, 3))
        for crop in crops:
            assert not np.any(np.all(windows == crop[0], axis=(-3, -2, -1)))
    # Bundled files stay small, and their source file names every one.
    assert sum(p.stat().st_size for p in files) < 500_000
    listed = (base.CALIBRATION_SET / "SOURCE.md").read_text()
    assert all(f"/{p.name} |" in listed for p in [*files, *base.HELD_OUT_SET.glob("*.png")])


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
    assert [r["floor_db"] for r in metadata["verification"]] == [45.0] * len(base.probe_images(4))
    assert metadata["verified_on"] == {"cpu": base.host_cpu()}
    assert metadata["timing"]["input_shape"] == [1, 128, 128, 3]
    assert metadata["artifact"] == str(tmp_path / "final.bin") and metadata["notes"] == ["a note"]
    summary = report.summary()
    assert "latency on 128x128" in summary and f"metadata: {tmp_path / 'final.bin.json'}" in summary
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        base.finish(
            format="test", source=source, staged_path=artifact, output=artifact,
            runner=base.keras_runner(source.model), precision="fp8", io={},
        )  # fmt: skip


# --- strict metadata -------------------------------------------------------------------------


def test_metadata_is_strict_json_with_null_for_an_infinite_psnr(tmp_path):
    """Identical outputs have an infinite PSNR: ``null`` in the JSON (which JavaScript and jq
    parse), ``inf`` in the summary; the strict reader refuses ``Infinity``/``NaN``."""
    record = {"input": "x", "shape": [1, 2, 2, 3], **base.agreement(np.ones(3), np.ones(3))}
    report = base.Report(
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
    metadata = base.read_metadata(tmp_path / "a.bin")
    assert metadata["verification"][0]["psnr_db"] is None
    assert metadata["io"] == {"step": 1.5, "nan": None}
    assert "on x: inf dB" in report.summary()
    (tmp_path / "a.bin.json").write_text('{"psnr_db": Infinity}')
    with pytest.raises(base.ExportError, match=r"a.bin.json: Infinity is not JSON"):
        base.read_metadata(tmp_path / "a.bin")


def test_host_cpu_reads_proc_cpuinfo():
    cpu = base.host_cpu()
    assert set(cpu["features"]) <= set(base.CPU_FEATURES) and cpu["model"]
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo")
    flags = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags"))
    words = flags.split(":", 1)[1].split()
    assert cpu["features"] == [f for f in base.CPU_FEATURES if f in words]
