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
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter

from absl import flags  # noqa: E402

from drn_tf.config import setting  # noqa: E402
from drn_tf.convert import convert_checkpoint  # noqa: E402
from drn_tf.demo import run_demo  # noqa: E402
from drn_tf.evaluation import evaluate as run_evaluation  # noqa: E402
from drn_tf.evaluation import format_table, write_json  # noqa: E402
from drn_tf.inference import load_model, upscale_files  # noqa: E402
from drn_tf.training import TrainConfig  # noqa: E402
from drn_tf.training import train as run_training  # noqa: E402


def define_flags(config_cls, flag_values: flags.FlagValues) -> None:
    """Defines one absl flag per field of the dataclass ``config_cls``."""
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        name, help = field.name.replace("_", "-"), field.metadata.get("help", "")
        default = (
            field.default_factory()
            if field.default_factory is not dataclasses.MISSING
            else field.default
        )
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
    values = {
        f.name: flag_values[f.name.replace("_", "-")].value for f in dataclasses.fields(config_cls)
    }
    return config_cls(**values), positionals


class UsageError(Exception):
    """Wrong flags or arguments: exit status 2 with the command's help."""


# --- convert -----------------------------------------------------------------------------------


@dataclasses.dataclass
class ConvertConfig:
    """Convert the authors' PyTorch checkpoints into one .keras file (primal + dual networks)."""

    checkpoint: str | None = setting(None, "The authors' primal checkpoint, e.g. DRNS4x.pt.")
    dual_checkpoint: str | None = setting(
        None, "The authors' dual checkpoint (a list of state dicts), e.g. DRNS4x_dual_model.pt."
    )
    variant: str = setting("drn-s", "drn-s or drn-l.")
    scale: int = setting(4, "Upscaling factor, a power of two.")
    n_blocks: int | None = setting(None, "RCABs per up-phase (default: the variant's preset).")
    n_feats: int | None = setting(None, "Base feature width (default: the variant's preset).")
    output: str | None = setting(None, "Where to write the .keras model.")


def convert(config: ConvertConfig, positionals: list[str]) -> None:
    if not config.checkpoint or not config.output:
        raise UsageError("--checkpoint and --output are required")
    _no_positionals(positionals)
    convert_checkpoint(
        config.checkpoint,
        config.variant,
        config.scale,
        config.output,
        config.dual_checkpoint,
        n_blocks=config.n_blocks,
        n_feats=config.n_feats,
    )
    print(f"wrote {config.output}")


def _no_positionals(positionals: list[str]) -> None:
    if positionals:
        raise UsageError(f"unexpected arguments: {' '.join(positionals)}")


# --- train -------------------------------------------------------------------------------------


def train(config: TrainConfig, positionals: list[str]) -> None:
    _no_positionals(positionals)
    run_training(config)
    print(f"wrote {config.output}/model.keras")


# --- evaluate ----------------------------------------------------------------------------------


@dataclasses.dataclass
class EvaluateConfig:
    """Y-channel PSNR/SSIM of a DRN model (or bicubic) on benchmark sets or image folders."""

    model: str = setting(
        "default",
        "A .keras model, 'default' (the packaged model) or "
        "'bicubic' (the MATLAB-bicubic baseline).",
    )
    data: list[str] = setting(
        [],
        "Benchmark set(s) (HR/ + LR_bicubic/X<s>/) or folder(s) of "
        "HR images; more folders may follow as plain arguments.",
    )
    scale: int | None = setting(None, "Upscaling factor (default: the model's; 4 for bicubic).")
    json: str | None = setting(None, "Also write the results (per image and mean) to this file.")


def evaluate(config: EvaluateConfig, positionals: list[str]) -> None:
    folders = [*config.data, *positionals]  # `--data A B` leaves B as a positional
    if not folders:
        raise UsageError("--data is required")
    for folder in folders:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{folder}: evaluation folder does not exist")
    if config.model == "bicubic":
        model, scale = "bicubic", config.scale or 4
    else:
        model = load_model(config.model)
        scale = config.scale or model.scale
        if model.scale != scale:
            raise ValueError(f"{config.model}: a ×{model.scale} model, but --scale is {scale}")
    results = run_evaluation(model, folders, scale)
    print(format_table(results))
    if config.json:
        write_json(config.json, {"model": config.model, "scale": scale, "sets": results})
        print(f"wrote {config.json}")


# --- upscale -----------------------------------------------------------------------------------


@dataclasses.dataclass
class UpscaleConfig:
    """Upscale images and folders (drn-tf upscale INPUT... --output DIR): a.jpg -> DIR/a_x4.png."""

    output: str | None = setting(None, "Output folder; folders keep their layout inside it.")
    model: str = setting("default", "A .keras model, or 'default' (the packaged model).")


def upscale(config: UpscaleConfig, positionals: list[str]) -> None:
    if not positionals:
        raise UsageError("no input image or folder given")
    if not config.output:
        raise UsageError("--output is required")
    missing = [p for p in positionals if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: input does not exist")
    model = load_model(config.model)
    written = upscale_files(positionals, config.output, model)
    print(f"wrote {len(written)} image(s) to {config.output}")


# --- demo --------------------------------------------------------------------------------------


@dataclasses.dataclass
class DemoConfig:
    """Super-resolve the bundled sample photo: DRN against bicubic, scored and pictured."""

    output: str = setting("demo_output", "Folder for the SR image and comparison.png.")
    model: str = setting("default", "A .keras model, or 'default' (the packaged model).")


def demo(config: DemoConfig, positionals: list[str]) -> None:
    _no_positionals(positionals)
    results = run_demo(config.output, config.model)
    print(f"{'':8} {'PSNR (Y)':>9} {'SSIM (Y)':>9}")
    for name in ("bicubic", "drn"):
        print(f"{name:8} {results[name]['psnr']:9.2f} {results[name]['ssim']:9.4f}")
    for path in results["files"]:
        print(f"wrote {path}")


COMMANDS: dict[str, tuple[type, Callable]] = {
    "convert": (ConvertConfig, convert),
    "train": (TrainConfig, train),
    "evaluate": (EvaluateConfig, evaluate),
    "upscale": (UpscaleConfig, upscale),
    "demo": (DemoConfig, demo),
}


def main(argv: list[str]) -> int:
    """Runs ``drn-tf`` with ``argv`` (without the program name); returns the exit status."""
    usage = "usage: drn-tf {" + ",".join(COMMANDS) + "} [flags]  (drn-tf COMMAND --help)"
    if not argv or argv[0] not in COMMANDS:
        print(
            usage
            if not argv or argv[0] in ("-h", "--help")
            else f"drn-tf: unknown command {argv[0]!r}\n{usage}",
            file=sys.stderr,
        )
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
