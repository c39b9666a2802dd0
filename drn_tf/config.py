"""Settings as dataclasses whose fields double as command-line flags, and the runner that every
command (``drn-tf``, ``python -m export.<format>``, ``python -m benchmarks.<name>``) shares.

A field ``batch_size: int = setting(32, "…")`` is the flag ``--batch-size`` (default 32); a
``bool`` field is ``--augment`` / ``--no-augment``; a ``list`` field takes one or more values.
This module imports no TensorFlow, so ``--help`` and usage errors are instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import typing
from collections.abc import Callable, Sequence


def setting(default, help: str, **kwargs):
    """A dataclass field that is also a command-line flag with ``help``."""
    if isinstance(default, list):
        return dataclasses.field(
            default_factory=lambda: list(default), metadata={"help": help}, **kwargs
        )
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


class UsageError(Exception):
    """Wrong flags or arguments: one line and exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


def _flag_type(kind) -> tuple[type, bool]:
    """``(element type, is_list)`` of a field annotation such as ``int | None`` or ``list[str]``."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is list:
        return (args[0] if args else str), True
    base = args[0] if args else kind
    if typing.get_origin(base) is list:
        return (typing.get_args(base) or (str,))[0], True
    return base, False


def build_parser(
    config_cls: type, prog: str, positionals: str | None = None
) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of the dataclass ``config_cls``.

    ``positionals`` names the plain arguments the command takes (``"INPUT"``), if any. The
    class docstring's first paragraph is the description.
    """
    description = (config_cls.__doc__ or "").strip().split("\n\n")[0]
    parser = _Parser(prog=prog, description=description, allow_abbrev=False)
    if positionals:
        parser.add_argument("positionals", nargs="*", metavar=positionals)
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        name = "--" + field.name.replace("_", "-")
        default = (
            field.default_factory()
            if field.default_factory is not dataclasses.MISSING
            else field.default
        )
        help_text = field.metadata.get("help", "")
        if default not in (None, [], "") and not isinstance(default, bool):
            help_text += f" (default: {default})"
        element, is_list = _flag_type(hints[field.name])
        if element is bool and not is_list:
            parser.add_argument(
                name, action=argparse.BooleanOptionalAction, default=default,
                help=help_text + f" (default: {'on' if default else 'off'})",
            )  # fmt: skip
        elif is_list:
            parser.add_argument(
                name, nargs="+", action="extend", type=element, default=None,
                metavar=field.name.upper(), help=help_text,
            )  # fmt: skip
        else:
            parser.add_argument(
                name, type=element, default=default, metavar=field.name.upper(), help=help_text
            )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="Show TensorFlow's own log lines too."
    )
    return parser


def parse_config(
    config_cls: type, argv: Sequence[str], prog: str, positionals: str | None = None
) -> tuple[typing.Any, list[str], bool]:
    """Parses ``argv`` into ``(config_cls instance, positional arguments, verbose)``.

    Raises :class:`UsageError` on a wrong flag or value.
    """
    namespace = build_parser(config_cls, prog, positionals).parse_args(list(argv))
    values = vars(namespace)
    extra = values.pop("positionals", [])
    verbose = values.pop("verbose")
    for field in dataclasses.fields(config_cls):
        if values[field.name] is None and field.default_factory is not dataclasses.MISSING:
            values[field.name] = field.default_factory()
    return config_cls(**values), extra, verbose


def quiet_tensorflow(verbose: bool = False) -> None:
    """Hides TensorFlow's C++ and Python start-up logs unless ``verbose``; call before the
    first ``import tensorflow``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    if not verbose:
        import logging

        logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


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
    no traceback); 130 on Ctrl-C or SIGTERM, after printing ``interrupted``.
    """
    try:
        config, extra, verbose = parse_config(config_cls, argv, prog, positionals)
        if extra and not positionals:
            raise UsageError(f"unexpected arguments: {' '.join(extra)}")
    except UsageError as error:
        print(f"{prog}: {error}\n(see {prog} --help)", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help printed
        return int(done.code or 0)
    quiet_tensorflow(verbose)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        function(config, extra)
    except UsageError as error:
        print(f"{prog}: {error}\n(see {prog} --help)", file=sys.stderr)
        return 2
    except (ValueError, OSError, ImportError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{prog}: {interrupted}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
