"""Writing an artifact so that nothing is lost.

:func:`check_destination` refuses an unusable destination before any work; :func:`staged` gives
the exporter a hidden temporary path beside the destination and renames the artifact (a file
or a folder) and its metadata into place only when the block succeeds: an existing artifact is
kept unless ``overwrite`` and replaced only by a complete one, a full disk is one line naming
the destination, Ctrl-C or SIGTERM waits until both renames are done, and what a killed export
left is cleared by the next (:func:`sweep`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from drn_tf.console import check_interrupted
from drn_tf.files import is_disk_full, unwritable_folder
from export import base


def check_destination(output: str | os.PathLike, overwrite: bool) -> Path:
    """Checks ``output`` before any work: an existing artifact needs ``overwrite``; its folder
    must be creatable and writable."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise base.ExportError(f"{output}: already exists; pass --overwrite to replace it")
    found = unwritable_folder(output.parent)
    if found is not None:
        where, problem = found
        if problem == "not a folder":
            message = f"cannot create the output folder: {where} is a file"
            raise base.ExportError(f"{output.parent}: {message}")
        raise base.ExportError(f"{output.parent}: output folder is not writable")
    return output


@contextmanager
def staged(output: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yields a hidden temporary path beside ``output`` to write the artifact (a file or a
    folder) and its metadata to; when the block succeeds, moves them into place.

    An existing artifact is replaced only with ``overwrite``, and only by a complete one: the
    old one is renamed aside, the new one renamed in, then the old one deleted. When the block
    fails or is interrupted, the temporary path and the folders made for ``output`` are
    removed and ``output`` is untouched; a full disk is one :class:`base.ExportError` naming
    ``output``. What exports killed midway left beside ``output`` is cleared first
    (:func:`sweep`).
    """
    output = check_destination(output, overwrite)
    sweep(output.parent)
    made = [p for p in (output.parent, *output.parent.parents) if not p.exists()]
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    temp = output.with_name(f".{output.name}.{tag}")
    temp_metadata = Path(f"{temp}.json")  # a file artifact's metadata (a folder holds its own)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        yield temp
        if not temp.exists():
            raise base.ExportError(f"{output}: the exporter wrote nothing")
        base.progress(f"writing {output}")
        with _stop_signals_held():  # the artifact and its metadata move in together
            check_interrupted()
            _replace(temp, output, tag)
            if temp_metadata.exists():
                _replace(temp_metadata, Path(f"{output}.json"), tag)
        made.clear()
    except Exception as error:
        if is_disk_full(error, output.parent):
            raise base.ExportError(f"{output}: cannot write, no space left on device") from error
        raise
    finally:
        _remove(temp)
        _remove(temp_metadata)
        for folder in made:  # innermost first; only if still empty
            with suppress(OSError):
                folder.rmdir()
        base.end_progress()


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Holds Ctrl-C and SIGTERM back (in the main thread) until the block is done; one that
    arrived meanwhile is delivered then."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


#: ``.{name}.old.{pid}.{8 hex}``: an artifact :func:`_replace` renamed aside.
_ASIDE = re.compile(r"^\.(.+)\.old\.(\d+)\.[0-9a-f]{8}$")


def sweep(folder: str | os.PathLike) -> list[Path]:
    """Clears what exports killed midway (SIGKILL, power loss) left in ``folder``: their hidden
    temporary files and folders (:func:`drn_tf.files.remove_stale_temp_files`). An old
    artifact renamed aside whose replacement never arrived is renamed back, not deleted.
    Returns the removed paths; those of running processes are kept."""
    from drn_tf.files import process_alive, remove_stale_temp_files

    folder = Path(folder)
    if not folder.is_dir():
        return []
    for path in folder.glob(".*.old.*"):
        match = _ASIDE.match(path.name)
        original = folder / match[1] if match else None
        if original and not process_alive(int(match[2])) and not original.exists():
            path.rename(original)
    return remove_stale_temp_files(folder, folders=True)


def _replace(source: Path, destination: Path, tag: str) -> None:
    """Renames ``source`` to ``destination``; an existing destination (a file or a folder) is
    renamed aside first and deleted only once the new one is in place."""
    old = destination.with_name(f".{destination.name}.old.{tag}")
    if destination.exists():
        destination.rename(old)
    try:
        source.rename(destination)
    except BaseException:
        if old.exists() and not destination.exists():
            old.rename(destination)
        raise
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
