"""Progress output that reads well in a terminal and in a log: where the stream is no terminal
(redirected to a file, a pipe, a scheduler's log), bars become plain lines, written now and
then, without the carriage returns and ANSI escape codes that redraw a bar in place.
"""

from __future__ import annotations

import io
import re
import sys
import typing

from tqdm import tqdm

#: Seconds between the lines of a bar written to a log (a terminal's bar redraws far more often).
LOG_INTERVAL = 30.0

# ANSI escape sequences (colours, cursor moves) and backspaces.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x08")


def is_terminal(stream: typing.TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed
        return False


class PlainLines(io.TextIOBase):
    """Passes what a progress bar writes on to ``stream`` as plain lines: without escape codes
    or backspaces, each piece that a ``\\r`` or ``\\n`` ends on a line of its own, blank ones
    (a bar clearing itself) dropped."""

    def __init__(self, stream: typing.TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        for piece in re.split(r"[\r\n]", _CONTROL.sub("", text)):
            if piece.strip():
                self.stream.write(piece.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class Bar(tqdm):
    """tqdm's progress bar (same arguments, default ``file`` stderr); where ``file`` is no
    terminal, a line every :data:`LOG_INTERVAL` seconds instead (and the first and last)."""

    def __init__(self, *args, **kwargs):
        file = kwargs.get("file") or sys.stderr
        if not is_terminal(file):
            kwargs["file"] = PlainLines(file)
            kwargs.setdefault("mininterval", LOG_INTERVAL)
            kwargs.setdefault("maxinterval", LOG_INTERVAL)
        super().__init__(*args, **kwargs)
