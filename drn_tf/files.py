"""Writing files so that nothing is lost: a reader sees the old file or the complete new one."""

from __future__ import annotations

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
    parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The stem is cut short: a legal 255-byte name must not make an illegal temporary one.
    temp = path.with_name(f".{path.stem[:32]}.{os.getpid()}.{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
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
    running; with ``folders``, also temporary folders named alike (as ``export.base.staged``
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
