"""The ``drn-tf`` command line: ``drn-tf COMMAND [flags]``; ``drn-tf --help`` lists the commands.

Each command is a dataclass of settings whose fields are its flags (``train_dir`` →
``--train-dir``, see :mod:`drn_tf.config`) and a thin function over the library, run by
:func:`drn_tf.config.run_command`: a usage error is one line and exit status 2, a library error
(a bad image, a wrong checkpoint, …) one line naming the file and exit status 1, Ctrl-C or
SIGTERM one line and exit status 130. The functions import the library, and with it TensorFlow,
themselves: ``--help`` needs none of it, and TensorFlow's logs are silenced before it loads.
Paths are checked before a model loads, so a typo costs no waiting.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from drn_tf import __version__
from drn_tf.config import AdaptConfig, TrainConfig, UsageError, run_command, setting
from drn_tf.degrade import KINDS

# --- checks shared by the commands ---------------------------------------------------------


def _check_scale(scale: int, power_of_two: bool = True) -> None:
    from drn_tf.scales import check_scale

    try:
        check_scale(scale, power_of_two)
    except ValueError:
        rule = "a power of two (2, 4, 8, …)" if power_of_two else "an integer of at least 2"
        raise UsageError(f"--scale must be {rule}, got {scale}") from None


def _check_output_folder(folder: Path, what: str = "output folder") -> None:
    """Raises ValueError unless ``folder`` is a writable folder or can be created as one."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # where creating the folder would start
    if existing == folder:
        if not folder.is_dir():
            raise ValueError(f"{folder}: the {what} is a file")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"{folder}: {what} is not writable")
    elif not existing.is_dir():
        raise ValueError(f"{folder}: cannot create the {what}: {existing} is a file")
    elif not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{folder}: cannot create the {what}: {existing} is not writable")


def _check_output_file(path: Path, flag: str) -> None:
    """Raises ValueError unless a file can be written at ``path``."""
    if path.is_dir():
        raise ValueError(f"{path}: {flag} is a folder; give a file name")
    _check_output_folder(path.parent, f"folder for {flag}")


def _keras_output(value: str) -> Path:
    """``--output`` as the ``.keras`` file to write: checked, and its folder cleared of the
    temporary files of saves killed midway."""
    output = Path(value)
    if output.suffix != ".keras":
        raise UsageError(f"--output must name a .keras file, got {output}")
    _check_output_file(output, "--output")
    from drn_tf.files import remove_stale_temp_files

    remove_stale_temp_files(output.parent)
    return output


def _required(**flags: object) -> None:
    missing = ["--" + name.replace("_", "-") for name, value in flags.items() if not value]
    if missing:
        raise UsageError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")


# --- upscale -------------------------------------------------------------------------------


# Mirrors drn_tf.inference (DEFAULT_TILE, …) and drn_tf.images (FORMAT_SUFFIXES), which load
# TensorFlow or PIL; `--help` loads neither. tests/test_upscale.py checks they agree.
_UPSCALE_TILE, _UPSCALE_TILE_OVERLAP = 128, 16
_UPSCALE_FORMATS = ("png", "jpg", "webp", "tiff")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclasses.dataclass
class UpscaleConfig:
    """Upscale images and folders: drn-tf upscale a.jpg photos/ --output out/ writes
    out/a_x4.png and, for each image under photos/, the same path under out/."""

    output: str | None = setting(
        None,
        "Output folder (required; input folders keep their layout), or an image file name for "
        "a single input image.",
    )
    model: str = setting(
        "default",
        "A .keras model, 'default' (the packaged model for --scale) or 'bicubic' (MATLAB "
        "bicubic, the baseline).",
    )
    scale: int | None = setting(
        None,
        "Upscaling factor: picks the packaged model (2, 4 or 8; default 4), or must be the "
        ".keras model's; bicubic takes any integer >= 2 (default 4).",
    )
    tile: int = setting(
        _UPSCALE_TILE,
        "Larger images go through the network in tiles of this many input pixels, so memory "
        "depends on the tile, not the image; 0 runs each image in one pass.",
    )
    tile_overlap: int = setting(
        _UPSCALE_TILE_OVERLAP, "Overlap of neighbouring tiles in input pixels (blended)."
    )
    self_ensemble: bool = setting(
        False, "Average the outputs of the 8 flips and rotations (8x the time; +0.1 dB on Set5)."
    )
    precision: str = setting(
        "auto",
        "auto: bfloat16 where the CPU has AMX, else float32.",
        choices=("auto", "float32", "bfloat16"),
    )
    format: str | None = setting(
        None,
        "Output format (default: png, or the suffix of an --output file name).",
        choices=_UPSCALE_FORMATS,
    )
    overwrite: bool = setting(False, "Replace outputs that exist (by default they are kept).")


def upscale(config: UpscaleConfig, inputs: list[str]) -> None:
    if not inputs:
        raise UsageError("no input image or folder given")
    _required(output=config.output)
    if config.tile < 0:
        raise UsageError(f"--tile must be 0 (one pass) or a number of pixels, got {config.tile}")
    if config.tile and not 0 <= config.tile_overlap <= config.tile // 4:
        raise UsageError(
            f"--tile-overlap must be between 0 and a quarter of --tile ({config.tile // 4}), "
            f"got {config.tile_overlap}"
        )
    if config.scale is not None:  # a DRN is ×2^k; bicubic also does ×3
        _check_scale(config.scale, power_of_two=config.model != "bicubic")
    missing = [p for p in inputs if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: input does not exist")
    output = Path(config.output)
    one_file = len(inputs) == 1 and Path(inputs[0]).is_file()
    names_file = output.suffix.lower() in _IMAGE_SUFFIXES and not output.is_dir()
    if output.is_file() and not (one_file and names_file):
        raise ValueError(f"{output}: --output must be a folder, and this is a file")
    if names_file and not one_file:
        raise UsageError(
            f"--output {output} names an image file, which takes one input image; "
            "give a folder for several images or a folder"
        )
    _check_output_folder(output.parent if names_file else output)

    from drn_tf.files import remove_stale_temp_files
    from drn_tf.inference import Bicubic, load_model, upscale_files

    remove_stale_temp_files(output.parent if names_file else output, recursive=not names_file)
    if config.model == "bicubic":
        model = Bicubic(config.scale or 4)
    else:
        model = load_model(config.model, scale=config.scale)
    summary = upscale_files(
        inputs,
        output,
        model,
        tile=config.tile or None,
        tile_overlap=config.tile_overlap,
        self_ensemble=config.self_ensemble,
        precision=config.precision,
        image_format=config.format,
        overwrite=config.overwrite,
    )
    print(summary.line())
    if summary.failed:
        total = len(summary.written) + len(summary.kept) + len(summary.failed)
        raise ValueError(f"{len(summary.failed)} of {total} image(s) failed (listed above)")


# --- evaluate ------------------------------------------------------------------------------


@dataclasses.dataclass
class EvaluateConfig:
    """Y-channel PSNR/SSIM of a DRN model (or bicubic) on benchmark sets or image folders:
    drn-tf evaluate --model default --data Set5 Set14."""

    model: str = setting(
        "default",
        "A .keras model, 'default' (the packaged model for --scale) or 'bicubic' (the "
        "MATLAB-bicubic baseline).",
    )
    data: list[str] = setting(
        [],
        "Benchmark set(s) (HR/ + LR_bicubic/X<s>/) or folder(s) of HR images; folders may also "
        "be given as plain arguments.",
    )
    scale: int | None = setting(
        None,
        "Upscaling factor: picks the packaged model (2, 4 or 8; default 4), or must be the "
        ".keras model's; bicubic takes any integer >= 2 (default 4).",
    )
    json: str | None = setting(None, "Also write the results (per image and mean) to this file.")
    lr_kind: str = setting(
        "bicubic",
        "LR inputs of benchmark sets: their LR_<kind>/X<s> folder (nearest, bilinear, blur, DN, "
        "... as written by drn-tf degrade); only bicubic is computed where missing.",
    )
    lr_only: bool = setting(
        False,
        "The folders hold LR images without HR (a set's LR_<kind>/X<s>, or any folder of "
        "images): print the closed-loop error |D(P(x)) - x| per image and mean, a "
        "no-reference readout of how consistent the model is on them.",
    )


def evaluate(config: EvaluateConfig, folders: list[str]) -> None:
    folders = [*config.data, *folders]
    if not folders:
        raise UsageError("no folder to evaluate: give --data FOLDER... (or plain arguments)")
    if config.scale is not None:  # a DRN is ×2^k; bicubic also does ×3
        _check_scale(config.scale, power_of_two=config.model != "bicubic")
    for folder in folders:
        if not Path(folder).exists():
            raise FileNotFoundError(f"{folder}: evaluation folder does not exist")
        if not Path(folder).is_dir():
            raise NotADirectoryError(f"{folder}: not a folder (--data takes folders of images)")
    if config.json:
        _check_output_file(Path(config.json), "--json")
    if config.lr_only and config.model == "bicubic":
        raise UsageError("--lr-only needs a DRN model (its dual networks), not bicubic")

    from drn_tf.evaluation import evaluate as run_evaluation
    from drn_tf.evaluation import format_table, write_json
    from drn_tf.files import remove_stale_temp_files
    from drn_tf.inference import load_model

    if config.model == "bicubic":
        model, scale = "bicubic", config.scale or 4
    else:
        model = load_model(config.model, scale=config.scale)
        scale = model.scale
    if config.lr_only:
        from drn_tf.evaluation import evaluate_closed_loop, format_loop_table

        results = evaluate_closed_loop(model, folders, scale, config.lr_kind)
        print(format_loop_table(results))
    else:
        results = run_evaluation(model, folders, scale, lr_kind=config.lr_kind)
        print(format_table(results))
    if config.json:
        remove_stale_temp_files(Path(config.json).parent)
        write_json(
            config.json,
            {"model": config.model, "scale": scale, "lr_kind": config.lr_kind, "sets": results},
        )
        print(f"wrote {config.json}")


# --- train ---------------------------------------------------------------------------------


def train(config, positionals: list[str]) -> None:
    from drn_tf.training import train as run_training

    run_training(config)  # a TrainConfig trains, an AdaptConfig adapts (same run machinery)
    print(f"wrote {Path(config.output) / 'model.keras'}")


# --- degrade -------------------------------------------------------------------------------


@dataclasses.dataclass
class DegradeConfig:
    """Write synthetic LR images of an HR folder in the benchmark layout: drn-tf degrade
    --hr-dir Set5 --kind nearest --scale 4 --output Set5 writes Set5/LR_nearest/X4/<name>x4.png
    (then: drn-tf evaluate Set5 --lr-kind nearest)."""

    hr_dir: str | None = setting(
        None, "HR images: a benchmark set (its HR/) or a plain folder (required)."
    )
    kind: str = setting("nearest", "The degradation.", choices=KINDS)
    scale: int = setting(4, "Downsampling factor, an integer >= 2.")
    seed: int = setting(0, "Seed of the noise (DN); the same seed gives the same files.")
    jpeg_quality: int | None = setting(
        None, "Also JPEG-compress each LR image at this quality (1-95): LR_<kind>_jpeg<Q>/."
    )
    output: str | None = setting(None, "Folder that receives LR_<kind>/X<s>/ (required).")


def degrade(config: DegradeConfig, positionals: list[str]) -> None:
    _required(hr_dir=config.hr_dir, output=config.output)
    _check_scale(config.scale, power_of_two=False)
    if config.jpeg_quality is not None and not 1 <= config.jpeg_quality <= 95:
        raise UsageError(f"--jpeg-quality must be 1..95, got {config.jpeg_quality}")
    if not Path(config.hr_dir).is_dir():
        problem = "not a folder" if Path(config.hr_dir).exists() else "folder does not exist"
        raise ValueError(f"--hr-dir {config.hr_dir}: {problem}")
    _check_output_folder(Path(config.output))

    from drn_tf.files import remove_stale_temp_files
    from drn_tf.image_sets import write_degraded_set

    remove_stale_temp_files(Path(config.output), recursive=True)  # left by a killed earlier run
    folder, written, skipped = write_degraded_set(
        config.hr_dir, config.kind, config.scale, config.output, config.seed, config.jpeg_quality
    )
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"wrote {len(written)} image(s) to {folder}")


# --- convert -------------------------------------------------------------------------------


@dataclasses.dataclass
class ConvertConfig:
    """Convert the authors' PyTorch checkpoints into one .keras file (primal + dual networks):
    drn-tf convert --checkpoint DRNS4x.pt --dual-checkpoint DRNS4x_dual_model.pt
    --output drn_s_x4.keras."""

    checkpoint: str | None = setting(None, "The authors' primal checkpoint (required), DRNS4x.pt.")
    dual_checkpoint: str | None = setting(
        None,
        "The authors' dual checkpoint, DRNS4x_dual_model.pt (without it the dual networks are "
        "randomly initialised: fine for upscaling, not for fine-tuning).",
    )
    variant: str = setting("drn-s", "drn-s or drn-l.")
    scale: int = setting(4, "Upscaling factor, a power of two.")
    n_blocks: int | None = setting(None, "RCABs per up-phase (default: the variant's preset).")
    n_feats: int | None = setting(None, "Base feature width (default: the variant's preset).")
    output: str | None = setting(None, "The .keras file to write (required).")


def convert(config: ConvertConfig, positionals: list[str]) -> None:
    _required(checkpoint=config.checkpoint, output=config.output)
    from drn_tf.models import VARIANTS

    if config.variant not in VARIANTS:
        raise UsageError(f"--variant must be one of {', '.join(VARIANTS)}, got {config.variant}")
    _check_scale(config.scale)
    for flag, value in (("--n-blocks", config.n_blocks), ("--n-feats", config.n_feats)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    output = _keras_output(config.output)
    from drn_tf.convert import convert_checkpoint

    convert_checkpoint(
        config.checkpoint,
        config.variant,
        config.scale,
        output,
        config.dual_checkpoint,
        n_blocks=config.n_blocks,
        n_feats=config.n_feats,
    )
    print(f"wrote {output}")
    if config.dual_checkpoint is None:
        print(
            "note: no --dual-checkpoint, so the dual networks are randomly initialised "
            "(recorded in the model): upscaling works; fine-tuning and adaptation want the "
            "authors' dual checkpoint"
        )


# --- package -------------------------------------------------------------------------------


@dataclasses.dataclass
class PackageConfig:
    """Save a trained model for shipping: drn-tf package --model runs/x4/best.keras
    --output drn_x4.keras writes its networks alone, in float32, without the optimizer state."""

    model: str | None = setting(None, "The trained .keras model (required), e.g. RUN/best.keras.")
    output: str | None = setting(None, "The .keras file to write (required).")
    note: str | None = setting(None, "How it was trained, kept in the model's info.")


def package(config: PackageConfig, positionals: list[str]) -> None:
    _required(model=config.model, output=config.output)
    output = _keras_output(config.output)
    from drn_tf.inference import load_model
    from drn_tf.models import package_model

    model = load_model(config.model)
    package_model(model, output, config.note)
    size = output.stat().st_size / 1e6
    print(f"wrote {output}: ×{model.scale} {model.drn_config.variant}, float32, {size:.1f} MB")


# --- demo ----------------------------------------------------------------------------------


@dataclasses.dataclass
class DemoConfig:
    """Super-resolve the bundled sample photo: DRN against bicubic, scored and pictured."""

    output: str = setting("demo_output", "Folder for the SR images and comparison pictures.")
    model: str = setting(
        "default", "A .keras model, or 'default' (the packaged models, one per --scales)."
    )
    scales: list[int] = setting(
        [2, 4, 8], "Upscaling factors to show with the packaged models (a .keras model: its own)."
    )


def demo(config: DemoConfig, positionals: list[str]) -> None:
    for scale in config.scales:
        _check_scale(scale)
    _check_output_folder(Path(config.output))
    from drn_tf.demo import run_demo

    scales = config.scales if config.model == "default" else [None]
    runs = [run_demo(config.output, config.model, scale) for scale in scales]
    print(f"{'':6} {'':8} {'PSNR (Y)':>9} {'SSIM (Y)':>9}")
    for results in runs:
        scale = f"×{results['scale']}"
        for name in ("bicubic", "drn"):
            scores = results[name]
            print(f"{scale:6} {name:8} {scores['psnr']:9.2f} {scores['ssim']:9.4f}")
    for results in runs:
        for path in results["files"]:
            print(f"wrote {path}")


# --- the commands ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Command:
    """A ``drn-tf`` command: its one-line summary for ``drn-tf --help``, its settings class,
    the function that runs it, the name of its plain arguments if any, and its Ctrl-C line."""

    summary: str
    config: type
    function: Callable[[typing.Any, list[str]], None]
    positionals: str | None = None
    interrupted: str = "interrupted"


COMMANDS: dict[str, Command] = {
    "upscale": Command(
        "Upscale images and folders with a DRN model.", UpscaleConfig, upscale, "INPUT"
    ),
    "evaluate": Command(
        "Y-PSNR/SSIM of a model or bicubic on benchmark sets or folders.",
        EvaluateConfig,
        evaluate,
        "FOLDER",
    ),
    "train": Command(
        "Train a DRN model (the authors' recipe by default); resumes a stopped run.",
        TrainConfig,
        train,
        interrupted="interrupted; run the same command again to resume",
    ),
    "adapt": Command(
        "Adapt a trained model to LR images that have no HR (DRN-Adapt); resumes a stopped run.",
        AdaptConfig,
        train,
        interrupted="interrupted; run the same command again to resume",
    ),
    "degrade": Command(
        "Write LR_<kind>/X<s> images (nearest, blur, noise, ...) of an HR folder.",
        DegradeConfig,
        degrade,
    ),
    "convert": Command(
        "Convert the authors' PyTorch checkpoints into a .keras model.", ConvertConfig, convert
    ),
    "package": Command(
        "Save a trained model for shipping (float32, no optimizer state).", PackageConfig, package
    ),
    "demo": Command("Super-resolve the bundled photo: DRN against bicubic.", DemoConfig, demo),
}


def _overview() -> str:
    width = max(map(len, COMMANDS))
    return "\n".join(
        [
            "usage: drn-tf COMMAND [flags]",
            "",
            "Dual Regression Networks (Guo et al., CVPR 2020) for super-resolution.",
            "",
            "commands:",
            *(f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()),
            "",
            "`drn-tf COMMAND --help` lists a command's flags.",
        ]
    )


def main(argv: Sequence[str]) -> int:
    """Runs ``drn-tf`` with ``argv`` (without the program name); returns the exit status."""
    argv = list(argv)
    if not argv:
        print(_overview(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(_overview())
        return 0
    if argv[0] == "--version":
        print(f"drn-tf {__version__}")
        return 0
    name, *args = argv
    command = COMMANDS.get(name)
    if command is None:
        print(
            f"drn-tf: unknown command {name!r} (choose from {', '.join(COMMANDS)})\n"
            "(see drn-tf --help)",
            file=sys.stderr,
        )
        return 2
    return run_command(
        f"drn-tf {name}",
        command.config,
        command.function,
        args,
        command.positionals,
        command.interrupted,
    )


def run() -> None:
    """Console-script entry point."""
    sys.exit(main(sys.argv[1:]))
