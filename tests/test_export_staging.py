"""Tests for export/staging.py: staged writing (atomic replacement, failures, interrupts, sweeping
what killed exports left, full disks) and destination checks."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export import base, reporting, staging


def _leftovers(folder: Path) -> list[str]:
    """Hidden entries (temporaries, renamed-aside old artifacts) left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- staged ----------------------------------------------------------------------------------


def test_staged_moves_a_file_and_its_metadata_into_place(tmp_path):
    output = tmp_path / "sub" / "model.onnx"
    with staging.staged(output) as temp:
        assert temp.parent == output.parent and temp.name.startswith(".")
        temp.write_text("new")
        reporting.metadata_path(temp).write_text('{"m": 1}')
    assert output.read_text() == "new"
    assert reporting.metadata_path(output) == tmp_path / "sub" / "model.onnx.json"
    assert json.loads(reporting.metadata_path(output).read_text()) == {"m": 1}
    assert _leftovers(output.parent) == []


def test_staged_folder_keeps_its_metadata_inside(tmp_path):
    output = tmp_path / "ir"
    with staging.staged(output) as temp:
        temp.mkdir()
        (temp / "model.xml").write_text("xml")
        reporting.metadata_path(temp).write_text("{}")
    assert sorted(p.name for p in output.iterdir()) == ["export.json", "model.xml"]
    assert reporting.metadata_path(output) == output / "export.json"
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
    with pytest.raises(error), staging.staged(output, overwrite=True) as temp:
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
    with staging.staged(output, overwrite=True) as temp:
        temp.write_text("new")
        Path(f"{temp}.json").write_text("new metadata")
    assert output.read_text() == "new"
    assert Path(f"{output}.json").read_text() == "new metadata"
    assert _leftovers(tmp_path) == []


def test_staged_overwrite_replaces_a_folder(tmp_path):
    output = tmp_path / "1"
    output.mkdir()
    (output / "stale.pb").write_text("old")
    with staging.staged(output, overwrite=True) as temp:
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
        staging.staged(output) as temp,
    ):
        ran.append(temp)
    assert ran == [] and output.read_text() == "old"


def test_staged_exporter_that_wrote_nothing(tmp_path):
    with (
        pytest.raises(base.ExportError, match="model.onnx: the exporter wrote nothing"),
        staging.staged(tmp_path / "model.onnx"),
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
    with staging.staged(tmp_path / "new.onnx") as temp:
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
        staging.staged(output) as temp,
    ):
        temp.mkdir()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(error.value) == f"{output}: cannot write, no space left on device"
    assert list(tmp_path.iterdir()) == []  # models/ was made for the export: removed too
    with pytest.raises(ValueError, match="wrong"), staging.staged(output):
        raise ValueError("wrong")  # any other failure as it was
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("free", [4096, 1 << 30])
def test_staged_a_bare_cpp_write_failure_on_a_full_disk(tmp_path, monkeypatch, free):
    """OpenVINO's writer says only "basic_ios::clear: iostream error": a full disk when (almost)
    nothing is left on the destination's filesystem, else the error as it was."""
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda path: usage._replace(free=free))
    output = tmp_path / "ir"
    expected = base.ExportError if free < 1 << 20 else RuntimeError
    with pytest.raises(expected, match="no space left|iostream"), staging.staged(output) as temp:
        temp.mkdir()
        raise RuntimeError("basic_ios::clear: iostream error")
    assert list(tmp_path.iterdir()) == []


# --- check_destination -----------------------------------------------------------------------


def test_check_destination_existing_needs_overwrite(tmp_path):
    (tmp_path / "a.onnx").write_text("x")
    with pytest.raises(base.ExportError, match=r"a\.onnx: already exists; pass --overwrite"):
        staging.check_destination(tmp_path / "a.onnx", overwrite=False)
    assert staging.check_destination(tmp_path / "a.onnx", overwrite=True) == tmp_path / "a.onnx"
    assert staging.check_destination(tmp_path / "new" / "deeper" / "b.onnx", False).name == "b.onnx"


def test_check_destination_not_writable(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores permission bits: emulate a read-only mount
        real_access = os.access
        monkeypatch.setattr(
            staging.os, "access", lambda p, m: False if Path(p) == locked else real_access(p, m)
        )
    try:
        # the nearest existing folder is checked: a missing sub-folder could not be created
        with pytest.raises(base.ExportError, match=r"locked/sub: output folder is not writable"):
            staging.check_destination(locked / "sub" / "m.onnx", overwrite=False)
        with pytest.raises(base.ExportError, match=r"locked: output folder is not writable"):
            staging.check_destination(locked / "m.onnx", overwrite=False)
    finally:
        locked.chmod(0o700)
