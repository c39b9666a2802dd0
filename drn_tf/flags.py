"""Settings as dataclasses whose fields double as command-line flags.

A field ``batch_size: int = setting(32, "…")`` is the flag ``--batch-size`` (default 32); a
``bool`` field is ``--augment`` / ``--no-augment``; a ``list`` field takes one or more values;
a field with ``choices`` takes only those. Every command also takes ``-v/--verbose``
(TensorFlow's own log lines, hidden by default). The commands' settings are in
:mod:`drn_tf.settings`; :func:`drn_tf.console.run_command` runs a command over them. This module
imports no TensorFlow, so ``--help`` and usage errors are instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import typing
from collections.abc import Sequence


def setting(default, help: str, choices: Sequence | None = None, **kwargs):
    """A dataclass field that is also a command-line flag with ``help`` (and, if given, only
    the values ``choices``)."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


class UsageError(Exception):
    """Wrong flags or arguments: one line and exit status 2."""


class FlagError(UsageError, ValueError):
    """A wrong flag value found by library code (exit status 2 on the command line); callers
    of the library may catch it as the ``ValueError`` it also is."""


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


def _description(config_cls: type) -> str:
    """The first paragraph of the class docstring; none for the signature that ``dataclass``
    writes into a class without a docstring (a repr is no help text)."""
    doc = inspect.cleandoc(config_cls.__doc__ or "")
    return "" if doc.startswith(f"{config_cls.__name__}(") else doc.split("\n\n")[0]


def _plain(value) -> str:
    """A default as a user would type it: ``a b`` for a list, not ``['a', 'b']``."""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


# The -v/--verbose value's name in the namespace, apart from any field called `verbose`.
_VERBOSE = "_verbose_logs"


def build_parser(
    config_cls: type, prog: str, positionals: str | None = None
) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of the dataclass ``config_cls``.

    ``positionals`` names the plain arguments the command takes (``"INPUT"``), if any. The
    class docstring's first paragraph is the description. ``-v/--verbose`` is added too (only
    ``-v`` when a field is itself called ``verbose``).
    """
    # A short usage line: the flags are listed below it, one by one.
    usage = f"%(prog)s [flags]{f' [{positionals} ...]' if positionals else ''}"
    parser = _Parser(
        prog=prog, usage=usage, description=_description(config_cls), allow_abbrev=False
    )
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
        choices = field.metadata.get("choices")
        element, is_list = _flag_type(hints[field.name])
        if element is bool and not is_list:
            parser.add_argument(
                name, action=argparse.BooleanOptionalAction, default=default,
                help=help_text + f" (default: {'on' if default else 'off'})",
            )  # fmt: skip
            continue
        if default not in (None, [], ""):
            help_text += f" (default: {_plain(default)})"
        metavar = "{" + ",".join(map(str, choices)) + "}" if choices else field.name.upper()
        if is_list:
            parser.add_argument(
                name, nargs="+", action="extend", type=element, default=None, choices=choices,
                metavar=metavar, help=help_text,
            )  # fmt: skip
        else:
            parser.add_argument(
                name, type=element, default=default, choices=choices, metavar=metavar,
                help=help_text,
            )  # fmt: skip
    parser.add_argument(
        "-v",
        "--verbose",
        dest=_VERBOSE,
        action="store_true",
        help="Show TensorFlow's own log lines (hidden by default).",
    )
    return parser


def parse_config(
    config_cls: type, argv: Sequence[str], prog: str, positionals: str | None = None
) -> tuple[typing.Any, list[str], bool]:
    """Parses ``argv`` into ``(config_cls instance, positional arguments, verbose)``.

    Flags and positional arguments may come in any order (``a.png --output o b.png``).
    Raises :class:`UsageError` on a wrong flag or value.
    """
    parser = build_parser(config_cls, prog, positionals)
    namespace = parser.parse_intermixed_args(list(argv))
    values = vars(namespace)
    extra = values.pop("positionals", [])
    verbose = values.pop(_VERBOSE)
    for field in dataclasses.fields(config_cls):
        if values[field.name] is None and field.default_factory is not dataclasses.MISSING:
            values[field.name] = field.default_factory()
    return config_cls(**values), extra, verbose


def flag_name(field: str) -> str:
    """The flag of the field ``field``: ``batch_size`` → ``--batch-size``."""
    return "--" + field.replace("_", "-")


def check_choices(settings: typing.Any) -> None:
    """Raises :class:`FlagError` naming the first field of the dataclass instance ``settings``
    that holds a value outside its ``choices``, None (not given) aside. Argparse refuses those
    on the command line; this catches settings built in code."""
    for field in dataclasses.fields(settings):
        choices, value = field.metadata.get("choices"), getattr(settings, field.name)
        if choices and value is not None and value not in choices:
            raise FlagError(
                f"{flag_name(field.name)} must be one of {', '.join(choices)}, got {value!r}"
            )
