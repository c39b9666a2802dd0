"""Tests for drn_tf.files: atomic writes, the sweep of temporary files of killed writers, and
the check that a destination folder can be written."""

from __future__ import annotations

import collections
import errno
import os
import subprocess
import sys

import pytest

from drn_tf import files
from drn_tf.files import atomic_path, remove_stale_temp_files, unwritable_folder


def dead_pid() -> int:
    """The id of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "model.keras"
    with atomic_path(target) as temp:
        assert temp.parent == target.parent and temp.suffix == ".keras"
        assert temp.name.startswith(".model.") and not target.exists()
        temp.write_text("new")
    assert target.read_text() == "new"

    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_text("partial")
        raise RuntimeError("killed")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.keras"]


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    dead, alive = dead_pid(), os.getpid()
    nested = tmp_path / "backup"
    nested.mkdir()
    stale = [
        tmp_path / f".img02_x4.{dead}.9a1eacc9.png",
        tmp_path / f".best.{dead}.0123abcd.keras",
        nested / f".run.{dead}.ffffffff.json",
    ]
    kept = [
        tmp_path / f".latest.{alive}.0123abcd.keras",  # a writer still running
        tmp_path / ".gitignore",
        tmp_path / f"img02_x4.{dead}.9a1eacc9.png",  # not hidden: not ours
        tmp_path / f".notes.{dead}.not-hex.txt",
    ]
    for path in [*stale, *kept]:
        path.write_text("x")

    assert sorted(remove_stale_temp_files(tmp_path)) == sorted(stale[:2])
    assert not any(path.exists() for path in stale[:2])
    assert stale[2].exists()  # not recursive by default
    assert remove_stale_temp_files(tmp_path, recursive=True) == [stale[2]]
    assert all(path.exists() for path in kept)
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_a_legal_long_name_gets_a_legal_temporary_name(tmp_path):
    target = tmp_path / ("a" * 250 + ".png")  # 254 bytes: legal
    with atomic_path(target) as temp:
        assert len(temp.name) < 80
        temp.write_bytes(b"png")
    assert target.read_bytes() == b"png"
    # Such a temporary file of a killed writer is still recognised and swept.
    stale = temp.with_name(temp.name.replace(f".{os.getpid()}.", f".{dead_pid()}."))
    stale.write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path) == [stale] and list(tmp_path.iterdir()) == [target]


def test_upscale_of_a_long_file_name(tmp_path):
    import numpy as np
    from PIL import Image

    from drn_tf.upscale_files import upscale_files

    source = tmp_path / ("p" * 236 + ".png")  # its output, ppp…_x4.png, is 243 bytes
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(source)
    summary = upscale_files([source], tmp_path / "out", "bicubic", progress=False)
    assert summary.failed == [] and [p.name for p in summary.written] == ["p" * 236 + "_x4.png"]


def test_unwritable_folder_says_where_and_why(tmp_path, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root ignores the mode: make access() tell the truth
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda path, mode: path != locked and real_access(path, mode)
        )
    assert unwritable_folder(tmp_path) is None
    assert unwritable_folder(tmp_path / "new" / "deeper") is None  # can be created
    assert unwritable_folder(a_file) == (a_file, "not a folder")
    assert unwritable_folder(a_file / "sub" / "deeper") == (a_file, "not a folder")
    assert unwritable_folder(locked) == (locked, "not writable")
    assert unwritable_folder(locked / "new") == (locked, "not writable")
    assert unwritable_folder(str(tmp_path / "new")) is None  # a str is a path too


def test_is_disk_full_knows_the_ways_a_full_disk_is_reported(tmp_path, monkeypatch):
    assert files.is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert files.is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert files.is_disk_full(RuntimeError("ResourceExhaustedError: ... No space left on device"))
    assert not files.is_disk_full(OSError(errno.EACCES, "Permission denied"), tmp_path)
    bare = RuntimeError("basic_ios::clear: iostream error")  # OpenVINO's writer says no more
    assert not files.is_disk_full(bare)  # no folder to look at
    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: Usage(1 << 30, 1 << 30, 4096))
    assert files.is_disk_full(bare, tmp_path)
    assert not files.is_disk_full(ValueError("bad value"), tmp_path)


def test_a_full_disk_while_writing_atomically_names_the_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "out" / "model.keras"
    with pytest.raises(files.DiskFull) as error, atomic_path(target) as temp:
        temp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(error.value) == f"{target}: cannot write, no space left on device"
    assert files.is_disk_full(error.value)
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(ValueError, match="^other$"), atomic_path(target):
        raise ValueError("other")  # anything else goes through as it is
