"""The ``drn-tf`` command line: ``drn-tf <command> [flags]``.

Each command is a dataclass of settings (its fields are the flags, ``train_dir`` → ``--train-dir``)
and a thin function over the library. Library errors (a bad image, a wrong checkpoint, …) are
printed as one line naming the file and the problem, with exit status 1; flag errors exit 2.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter

from absl import flags  # noqa: E402


def setting(default, help: str, **kwargs):
    """A dataclass field that is also a command-line flag with ``help``."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help},
                                 **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def define_flags(config_cls, flag_values: flags.FlagValues) -> None:
    """Defines one absl flag per field of the dataclass ``config_cls``."""
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        name, help = field.name.replace("_", "-"), field.metadata.get("help", "")
        default = (field.default_factory() if field.default_factory is not dataclasses.MISSING
                   else field.default)
        kind = hints[field.name]
        args = typing.get_args(kind)
        base = next((a for a in args if a is not type(None)), kind) if args else kind
        if typing.get_origin(kind) is list or base is list:
            flags.DEFINE_multi_string(name, default, help, flag_values=flag_values)
        elif kind is bool:
            flags.DEFINE_bool(name, default, help, flag_values=flag_values)
        elif base is int:
            flags.DEFINE_integer(name, default, help, flag_values=flag_values)
        elif base is float:
            flags.DEFINE_float(name, default, help, flag_values=flag_values)
        else:
            flags.DEFINE_string(name, default, help, flag_values=flag_values)


def parse(config_cls, argv: list[str], command: str):
    """Parses ``argv`` (flags and positionals) into ``(config_cls instance, positionals)``."""
    flag_values = flags.FlagValues()
    define_flags(config_cls, flag_values)
    try:
        positionals = flag_values([f"drn-tf {command}", *argv])[1:]
    except flags.Error as error:
        raise UsageError(f"{error}\n\n{flag_values.get_help()}") from error
    values = {f.name: flag_values[f.name.replace("_", "-")].value
              for f in dataclasses.fields(config_cls)}
    return config_cls(**values), positionals


class UsageError(Exception):
    """Wrong flags or arguments: exit status 2 with the command's help."""


# --- convert -----------------------------------------------------------------------------------


@dataclasses.dataclass
class ConvertConfig:
    """Convert the authors' PyTorch checkpoints into one .keras file (primal + dual networks)."""

    checkpoint: str | None = setting(None, "The authors' primal checkpoint, e.g. DRNS4x.pt.")
    dual_checkpoint: str | None = setting(
        None, "The authors' dual checkpoint (a list of state dicts), e.g. DRNS4x_dual_model.pt.")
    variant: str = setting("drn-s", "drn-s or drn-l.")
    scale: int = setting(4, "Upscaling factor, a power of two.")
    n_blocks: int | None = setting(None, "RCABs per up-phase (default: the variant's preset).")
    n_feats: int | None = setting(None, "Base feature width (default: the variant's preset).")
    output: str | None = setting(None, "Where to write the .keras model.")


def convert(config: ConvertConfig, positionals: list[str]) -> None:
    from drn_tf.convert import convert_checkpoint

    if not config.checkpoint or not config.output:
        raise UsageError("--checkpoint and --output are required")
    _no_positionals(positionals)
    convert_checkpoint(config.checkpoint, config.variant, config.scale, config.output,
                       config.dual_checkpoint, n_blocks=config.n_blocks, n_feats=config.n_feats)
    print(f"wrote {config.output}")


def _no_positionals(positionals: list[str]) -> None:
    if positionals:
        raise UsageError(f"unexpected arguments: {' '.join(positionals)}")


COMMANDS: dict[str, tuple[type, Callable]] = {
    "convert": (ConvertConfig, convert),
}


def main(argv: list[str]) -> int:
    """Runs ``drn-tf`` with ``argv`` (without the program name); returns the exit status."""
    usage = "usage: drn-tf {" + ",".join(COMMANDS) + "} [flags]  (drn-tf COMMAND --help)"
    if not argv or argv[0] not in COMMANDS:
        print(usage if not argv or argv[0] in ("-h", "--help") else
              f"drn-tf: unknown command {argv[0]!r}\n{usage}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command = argv[0]
    config_cls, function = COMMANDS[command]
    try:
        if any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
            flag_values = flags.FlagValues()
            define_flags(config_cls, flag_values)
            print(f"drn-tf {command}: {config_cls.__doc__}\n\n{flag_values.get_help()}")
            return 0
        config, positionals = parse(config_cls, argv[1:], command)
        function(config, positionals)
    except UsageError as error:
        print(f"drn-tf {command}: {error}", file=sys.stderr)
        return 2
    except (ValueError, OSError, ImportError) as error:
        print(f"drn-tf {command}: error: {error}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main(sys.argv[1:]))
