"""What every command (``drn-tf``, ``python -m export.<format>``, ``python -m benchmarks.<name>``)
shares as a process: :func:`run_command` parses its flags, keeps TensorFlow's start-up log lines
out of the user's terminal (:func:`quiet_tensorflow`), and turns errors, Ctrl-C and SIGTERM into
one line and an exit status (0 done, 1 a library error, 2 a usage error, 130 interrupted).

This module imports no TensorFlow: a command imports it itself, after :func:`quiet_tensorflow`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.util
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import typing
import warnings
from collections.abc import Callable, Sequence

from drn_tf.flags import UsageError, parse_config

#: What a command (and ``drn_tf.NAME``) says when TensorFlow (or Keras) is not installed.
NEEDS_TENSORFLOW = (
    "drn-tf needs TensorFlow: install it with `pip install 'drn-tf[cpu]'` "
    "(or `'drn-tf[gpu]'` on a CUDA machine)"
)

# TensorFlow's C++ log lines (absl format: `I0000 00:00:… port.cc:153] …`, absl's notice that
# logging is not initialised yet, LiteRT's delegate notices and its quantizer's settings).
_TF_LOG_LINE = re.compile(
    r"^(?:WARNING: All log messages before absl::InitializeLog\(\)|[IWEF]\d{4} \d\d:\d\d:\d\d"
    r"|INFO: (?:Created|Initialized) TensorFlow Lite|fully_quantize: \d)"
)


def tensorflow_logs_hidden() -> bool:
    """Whether :func:`quiet_tensorflow` (or the environment) asked for quiet TensorFlow."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") not in ("0", "1")


@contextlib.contextmanager
def without_tensorflow_log_lines() -> typing.Iterator[None]:
    """Holds back everything written to file descriptor 2 (C++ code included), then passes on
    all of it but TensorFlow's log lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode(errors="replace")
            sys.stderr.write("".join(
                line for line in text.splitlines(keepends=True) if not _TF_LOG_LINE.match(line)
            ))  # fmt: skip


class _QuietLoader(importlib.abc.Loader):
    """Runs the ``tensorflow`` package's import without its start-up log lines."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # the package sees its own
        with without_tensorflow_log_lines():
            self.loader.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, with :class:`_QuietLoader` around its real loader."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow(verbose: bool = False) -> None:
    """Hides TensorFlow's C++ and Python log lines unless ``verbose``; call before the first
    ``import tensorflow`` (anywhere, Keras's included), which it does not do itself.

    ``TF_CPP_MIN_LOG_LEVEL=3`` hides what TensorFlow logs once running, but not the oneDNN
    notice that its libraries print while loading, whatever the level: those lines are held
    back from the import itself. A level set in the environment is kept unless ``verbose``.
    """
    finders = [f for f in sys.meta_path if isinstance(f, _QuietTensorFlowFinder)]
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        logging.getLogger("tensorflow").setLevel(logging.NOTSET)
        for finder in finders:
            sys.meta_path.remove(finder)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not finders:
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


#: The stop signals received since the running command started (see :func:`check_interrupted`).
_received: list[int] = []


def _raise_interrupt(signum, frame):
    _received.append(signum)
    raise KeyboardInterrupt


def check_interrupted() -> None:
    """Raises ``KeyboardInterrupt`` if Ctrl-C or SIGTERM reached the running command, even when
    the ``KeyboardInterrupt`` its handler raised was lost: raised inside a finalizer (Python
    then prints "Exception ignored" and goes on) or caught by a library. Long work calls it
    between stages and before moving a result into place."""
    if _received:
        raise KeyboardInterrupt


def _drop_lost_interrupts(unraisable) -> None:
    """``sys.unraisablehook`` while a command runs: a ``KeyboardInterrupt`` raised in a
    finalizer is recorded in ``_received`` (and acted on), not printed as a traceback."""
    if not (_received or isinstance(unraisable.exc_value, KeyboardInterrupt)):
        sys.__unraisablehook__(unraisable)


def _quiet_after_interrupt(excepthook, kind, value, traceback) -> None:
    """``sys.excepthook`` while a command runs: after Ctrl-C or SIGTERM, the tracebacks that C
    extensions print (``PyErr_Print``) when the ``KeyboardInterrupt`` broke a call back into
    Python (TensorFlow: "SystemError: <built-in function __import__> returned a result with
    an exception set") are the interrupt's doing: not shown."""
    if not _received:
        excepthook(kind, value, traceback)


def _show_warning(prog: str, message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` while a command runs: one line, without the source line that
    Python's own prints (numpy's RuntimeWarning, PIL's DecompressionBombWarning, …)."""
    text = " ".join(str(message).split())
    print(f"{prog}: warning: {text} ({category.__name__})", file=file or sys.stderr)


def _print_usage_error(prog: str, error: UsageError) -> None:
    print(f"{prog}: {error}\n(see {prog} --help)", file=sys.stderr)


def run_command(
    prog: str,
    config_cls: type,
    function: Callable[[typing.Any, list[str]], None],
    argv: Sequence[str],
    positionals: str | None = None,
    interrupted: str = "interrupted",
) -> int:
    """Parses ``argv`` into ``config_cls`` and runs ``function(config, positionals)``.

    Returns the exit status: 0 on success; 2 on a usage error (one line and a hint to
    ``--help``); 1 on a library error (``ValueError``, ``OSError``, ``ImportError``: one line,
    no traceback); 130 on Ctrl-C or SIGTERM, after printing ``interrupted``. TensorFlow's logs
    are hidden (:func:`quiet_tensorflow`) unless ``-v`` is given, so ``function`` should import
    TensorFlow itself rather than at module level.
    """
    try:
        config, extra, verbose = parse_config(config_cls, argv, prog, positionals)
        if extra and not positionals:
            raise UsageError(f"unexpected arguments: {' '.join(extra)}")
    except UsageError as error:
        _print_usage_error(prog, error)
        return 2
    except SystemExit as done:  # --help printed
        return int(done.code or 0)
    quiet_tensorflow(verbose)
    # SIGTERM (kill, a scheduler's stop) ends the command like Ctrl-C, so `finally` blocks run
    # and no temporary file is left; handlers can only be set from the main thread. Both are
    # recorded too, so that an interrupt lost in a finalizer still stops the command. SIGINT
    # inherited as ignored (a background job) stays ignored.
    stops = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        stops.append(signal.SIGINT)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _raise_interrupt) for s in stops} if main_thread else {}
    sys.unraisablehook, unraisablehook = _drop_lost_interrupts, sys.unraisablehook
    excepthook = sys.excepthook
    sys.excepthook = functools.partial(_quiet_after_interrupt, excepthook)
    _received.clear()
    try:
        with warnings.catch_warnings():  # restores the filters and showwarning afterwards
            warnings.showwarning = functools.partial(_show_warning, prog)
            function(config, extra)
        check_interrupted()
    except UsageError as error:
        _print_usage_error(prog, error)
        return 2
    except BaseException as error:
        # After an interrupt, whatever failed (a C extension turns a KeyboardInterrupt raised
        # in its call back into Python into another error) failed because of it.
        if _received or isinstance(error, KeyboardInterrupt):
            print(f"\n{prog}: {interrupted}", file=sys.stderr)
            return 130
        if not isinstance(error, (ValueError, OSError, ImportError)):
            raise
        if isinstance(error, ModuleNotFoundError) and error.name in ("tensorflow", "keras"):
            error = NEEDS_TENSORFLOW
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    finally:
        _received.clear()
        sys.unraisablehook, sys.excepthook = unraisablehook, excepthook
        for stop, handler in previous.items():
            signal.signal(stop, handler)
    return 0
