"""Writing files so that nothing is lost: a reader sees the old file or the complete new one."""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` (same suffix) to write to.

    When the block succeeds the temporary file replaces ``path`` in one ``os.replace``; when it
    fails or is interrupted the temporary file is removed and ``path`` is untouched. Missing
    parent folders are created. A full disk met in the block is a :class:`DiskFull` naming
    ``path`` (:func:`naming_full_disk`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The stem is cut short: a legal 255-byte name must not make an illegal temporary one.
    temp = path.with_name(f".{path.stem[:32]}.{os.getpid()}.{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        with naming_full_disk(path):
            yield temp
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


# `.{stem}.{pid}.{8 hex}{suffix}`, as atomic_path names its temporary files.
_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}(\.[^.]+)?$")


def remove_stale_temp_files(
    folder: str | os.PathLike, recursive: bool = False, folders: bool = False
) -> list[Path]:
    """Removes temporary files that :func:`atomic_path` left behind in ``folder`` when its
    process was killed (SIGKILL, power loss), judged by the writer's process id no longer
    running; with ``folders``, also temporary folders named alike (as ``export.staging.staged``
    writes folder artifacts). Returns the removed paths. A missing folder is fine."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.rglob(".*") if recursive else folder.glob(".*"):
        match = _TEMP_NAME.match(path.name)
        if not match or process_alive(int(match.group(1))):
            continue
        if path.is_file():
            path.unlink(missing_ok=True)
        elif folders and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            continue
        removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (this one counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def unwritable_folder(folder: str | os.PathLike) -> tuple[Path, str] | None:
    """Why files cannot be written in ``folder``, asked before any work: None when it is a
    folder we may write in or can be created as one; else ``(where, problem)``, ``where`` being
    ``folder`` itself or the existing folder above it where creating it would start, and
    ``problem`` ``"not a folder"`` or ``"not writable"``. Callers word the message."""
    folder = existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return existing, "not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return existing, "not writable"
    return None


def check_output_folder(folder: str | os.PathLike, what: str = "output folder") -> None:
    """Raises ValueError unless ``folder`` is a writable folder or can be created as one."""
    folder = Path(folder)
    found = unwritable_folder(folder)
    if found is None:
        return
    where, problem = found
    a_file = problem == "not a folder"
    if where == folder:
        message = f"the {what} is a file" if a_file else f"{what} is not writable"
    else:
        message = f"cannot create the {what}: {where} is {'a file' if a_file else 'not writable'}"
    raise ValueError(f"{folder}: {message}")


def check_output_file(path: str | os.PathLike, flag: str) -> None:
    """Raises ValueError unless a file can be written at ``path``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: {flag} is a folder; give a file name")
    check_output_folder(path.parent, f"folder for {flag}")


def is_disk_full(error: BaseException, folder: str | os.PathLike | None = None) -> bool:
    """Whether ``error`` is a full disk (or quota): an ``OSError`` with that errno, an error
    that only says so (TensorFlow's ``ResourceExhaustedError``, h5py's), or, given the
    ``folder`` being written, a C++ writer's bare failure (OpenVINO: "basic_ios::clear:
    iostream error") with under 1 MiB left there."""
    if isinstance(error, DiskFull) or (
        isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    ):
        return True
    if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
        return True
    if folder is None or not isinstance(error, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


class DiskFull(OSError):
    """A file or folder could not be written: its disk (or quota) is full. The message is one
    line that starts with the path."""


@contextmanager
def naming_full_disk(path: str | os.PathLike) -> Iterator[None]:
    """Turns a full disk (or quota) met in the block (:func:`is_disk_full`) into
    :class:`DiskFull` naming ``path``; any other error, and a :class:`DiskFull` raised within
    (naming its own path), goes through as it is."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as error:
        if is_disk_full(error):
            raise DiskFull(f"{path}: cannot write, no space left on device") from error
        raise
