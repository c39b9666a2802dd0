"""The ``drn-tf`` command line: ``drn-tf COMMAND [flags]``; ``drn-tf --help`` lists the commands.

Each command is a dataclass of settings whose fields are its flags (``train_dir`` →
``--train-dir``; :mod:`drn_tf.settings`) and a thin function over the library, run by
:func:`drn_tf.console.run_command`: a usage error is one line and exit status 2, a library error
(a bad image, a wrong checkpoint, …) one line naming the file and exit status 1, Ctrl-C or
SIGTERM one line and exit status 130. The functions import the library, and with it TensorFlow,
themselves: ``--help`` needs none of it, and TensorFlow's logs are silenced before it loads.
Flag values (the settings' ``check()``) and then paths are checked before a model loads, so a
typo costs no waiting.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from drn_tf import __version__
from drn_tf.console import run_command
from drn_tf.files import check_output_file, check_output_folder, remove_stale_temp_files
from drn_tf.flags import UsageError
from drn_tf.settings import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    AdaptConfig,
    ConvertConfig,
    DegradeConfig,
    DemoConfig,
    EvaluateConfig,
    PackageConfig,
    TrainConfig,
    UpscaleConfig,
)

# --- helpers of the commands --------------------------------------------------------------


def _keras_output(value: str, overwrite: bool) -> Path:
    """``--output`` (a ``.keras`` name, see the settings' ``check()``) as the file to write:
    checked (an existing file only with ``overwrite``), and its folder cleared of the temporary
    files of saves killed midway."""
    output = Path(value)
    check_output_file(output, "--output")
    if output.exists() and not overwrite:
        raise ValueError(f"{output}: exists; --overwrite replaces it")
    remove_stale_temp_files(output.parent)
    return output


def _fail_if_skipped(count: int) -> None:
    """The rule of every command over many files (upscale, evaluate, degrade): each file it
    could not use is named on its own line, the others are done and written, and then the
    command fails (exit 1) if there was any."""
    if count:
        raise ValueError(f"{count} file(s) skipped (listed above); the others are done")


# --- upscale -------------------------------------------------------------------------------


def upscale(config: UpscaleConfig, inputs: list[str]) -> None:
    if not inputs:
        raise UsageError("no input image or folder given")
    config.check()
    missing = [p for p in inputs if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: input does not exist")
    output = Path(config.output)
    if output.suffix.lower() in (".bmp", ".gif") and not output.is_dir():
        raise UsageError(
            f"--output {output}: upscale writes .png, .jpg, .webp or .tif files, "
            f"not {output.suffix}; give one of those names or a folder"
        )
    one_file = len(inputs) == 1 and Path(inputs[0]).is_file()
    one_video = one_file and Path(inputs[0]).suffix.lower() in VIDEO_SUFFIXES
    names_image = output.suffix.lower() in IMAGE_SUFFIXES and not output.is_dir()
    names_video = output.suffix.lower() in VIDEO_SUFFIXES and not output.is_dir()
    names_file = names_image or names_video
    if output.is_file() and not (one_file and names_file):
        raise ValueError(f"{output}: --output must be a folder, and this is a file")
    if (names_image and (not one_file or one_video)) or (names_video and not one_video):
        what = "image" if names_image else "video"
        raise UsageError(
            f"--output {output} names an {what} file, which takes one input {what}; "
            "give a folder for other inputs"
        )
    check_output_folder(output.parent if names_file else output)

    from drn_tf.frames import find_videos
    from drn_tf.images import find_images
    from drn_tf.inference import Bicubic
    from drn_tf.loading import load_model
    from drn_tf.upscale_files import UpscaleSummary, upscale_files
    from drn_tf.video import check_video_codec, upscale_video_files

    check_video_codec(config.video_codec)
    choice = _runtime(config.runtime, config.precision)
    # Video files, and folders holding videos, go to the video upscaler; the rest (folders
    # with images, and any other file, which fails alone if it is no image) to the images'.
    paths = [Path(p) for p in inputs]
    videos = [p for p in paths if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    videos += [p for p in paths if p.is_dir() and find_videos(p)]
    images = [p for p in paths if p.is_file() and p not in videos]
    images += [
        p for p in paths if p.is_dir() and (find_images(p, unreadable=[]) or p not in videos)
    ]  # unreadable sub-folders: named by upscale_files

    remove_stale_temp_files(output.parent if names_file else output, recursive=not names_file)
    if config.model == "bicubic":
        model = Bicubic(config.scale or 4)
    else:
        model = load_model(config.model, scale=config.scale, policy="float32")
    settings = {
        "network": _network(model, choice),
        "tile": config.tile or None,
        "tile_overlap": config.tile_overlap,
        "self_ensemble": config.self_ensemble,
        "precision": config.precision,
        "overwrite": config.overwrite,
    }
    summaries: list[UpscaleSummary] = []
    if images:
        summaries.append(
            upscale_files(images, output, model, image_format=config.format, **settings)
        )
        print(summaries[-1].line())
    if videos:
        summaries.append(
            upscale_video_files(
                videos, output, model, video_codec=config.video_codec, crf=config.crf, **settings
            )
        )
        print(summaries[-1].line())
    failed = [f for s in summaries for f in s.failed]
    if failed:
        total = sum(len(s.written) + len(s.kept) + len(s.failed) for s in summaries)
        unit = summaries[0].unit if len(summaries) == 1 else "file"
        raise ValueError(f"{len(failed)} of {total} {unit}(s) failed (listed above)")


def _runtime(runtime: str, precision: str):
    """``--runtime`` and ``--precision`` as an :class:`export.runtime.Runtime`, its note (if
    any) printed; a precision the runtime lacks is a usage error."""
    from export import runtime as runtimes

    try:
        choice = runtimes.choose(runtime, precision)
    except ValueError as error:
        raise UsageError(str(error)) from error
    if choice.note:
        print(choice.note, file=sys.stderr)
    return choice


def _network(model, choice):
    """``model``'s network in ``choice`` (:func:`export.runtime.network`); None for Keras."""
    from drn_tf.inference import Bicubic
    from export import runtime as runtimes

    if isinstance(model, Bicubic):
        return None
    return runtimes.network(model, choice, progress=lambda line: print(line, file=sys.stderr))


# --- evaluate ------------------------------------------------------------------------------


def evaluate(config: EvaluateConfig, folders: list[str]) -> None:
    folders = [*config.data, *folders]
    if not folders:
        raise UsageError("no folder to evaluate: give --data FOLDER... (or plain arguments)")
    config.check()
    for folder in folders:
        if not Path(folder).exists():
            raise FileNotFoundError(f"{folder}: evaluation folder does not exist")
        video = Path(folder).suffix.lower() in VIDEO_SUFFIXES
        if video and not config.lr_only:
            raise UsageError(f"{folder}: a video has no HR frames; --lr-only evaluates it")
        if not Path(folder).is_dir() and not video:
            raise NotADirectoryError(f"{folder}: not a folder (--data takes folders of images)")
    if config.json:
        check_output_file(Path(config.json), "--json")

    from drn_tf.evaluation import evaluate as run_evaluation
    from drn_tf.evaluation import format_table, write_json
    from drn_tf.loading import load_model

    if config.model == "bicubic":
        model, scale = "bicubic", config.scale or 4
    else:
        model = load_model(config.model, scale=config.scale, policy="float32")
        scale = model.scale
    if config.lr_only:
        from drn_tf.evaluation import evaluate_closed_loop, format_loop_table
        from drn_tf.loading import check_trained_duals

        check_trained_duals(model, config.model, "--lr-only's closed-loop error")

        results = evaluate_closed_loop(
            model, folders, scale, config.lr_kind, frames_per_video=config.frames_per_video
        )
        print(format_loop_table(results))
    else:
        results = run_evaluation(
            model, folders, scale, lr_kind=config.lr_kind, self_ensemble=config.self_ensemble
        )
        print(format_table(results))
    if config.json:
        remove_stale_temp_files(Path(config.json).parent)
        write_json(
            config.json,
            {
                "model": config.model,
                "scale": scale,
                "lr_kind": config.lr_kind,
                "self_ensemble": config.self_ensemble,
                "sets": results,
            },
        )
        print(f"wrote {config.json}")
    _fail_if_skipped(sum(len(r["skipped"]) for r in results.values()))


# --- train ---------------------------------------------------------------------------------


def train(config, positionals: list[str]) -> None:
    config.check()  # a wrong flag value is told at once, not after TensorFlow loads
    from drn_tf.training import train as run_training

    run_training(config)  # a TrainConfig trains, an AdaptConfig adapts (same run machinery)
    print(f"wrote {Path(config.output) / 'model.keras'}")


# --- degrade -------------------------------------------------------------------------------


def degrade(config: DegradeConfig, positionals: list[str]) -> None:
    config.check()
    if not Path(config.hr_dir).is_dir():
        problem = "not a folder" if Path(config.hr_dir).exists() else "folder does not exist"
        raise ValueError(f"--hr-dir {config.hr_dir}: {problem}")
    check_output_folder(Path(config.output))

    from drn_tf.image_sets import write_degraded_set

    remove_stale_temp_files(Path(config.output), recursive=True)  # left by a killed earlier run
    kept: list[Path] = []
    folder, written, skipped = write_degraded_set(
        config.hr_dir, config.kind, config.scale, config.output, config.seed,
        config.jpeg_quality, overwrite=config.overwrite, kept=kept,
    )  # fmt: skip
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    kept_note = f"; {len(kept)} kept (already there; --overwrite replaces them)" if kept else ""
    print(f"wrote {len(written)} image(s) to {folder}{kept_note}")
    _fail_if_skipped(len(skipped))


# --- convert -------------------------------------------------------------------------------


def convert(config: ConvertConfig, positionals: list[str]) -> None:
    config.check()
    output = _keras_output(config.output, config.overwrite)
    for flag, value in (
        ("--checkpoint", config.checkpoint),
        ("--dual-checkpoint", config.dual_checkpoint),
    ):
        if value is not None and not Path(value).exists():
            raise FileNotFoundError(f"{value}: {flag} file does not exist")
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


def package(config: PackageConfig, positionals: list[str]) -> None:
    config.check()
    output = _keras_output(config.output, config.overwrite)
    from drn_tf.loading import load_model
    from drn_tf.models import package_model

    model = load_model(config.model, policy="float32")
    package_model(model, output, config.note)
    size = output.stat().st_size / 1e6
    print(f"wrote {output}: ×{model.scale} {model.drn_config.variant}, float32, {size:.1f} MB")


# --- demo ----------------------------------------------------------------------------------


def demo(config: DemoConfig, positionals: list[str]) -> None:
    config.check()
    check_output_folder(Path(config.output))
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


# --- export --------------------------------------------------------------------------------

#: ``drn-tf export FORMAT`` is ``python -m export.FORMAT``: the same flags, the same library
#: function (the module is imported only to run it).
EXPORT_FORMATS = {
    "saved_model": "SavedModel for TF Serving (float32, uint8 and encoded-image signatures).",
    "tflite": "TFLite / LiteRT: float32, float16, dynamic-range or int8.",
    "onnx": "ONNX (tf2onnx), run in onnxruntime.",
    "openvino": "OpenVINO IR: fp32, bf16 or int8.",
    "trt": "TensorRT: a TF-TRT SavedModel or an engine, or a TensorRT-ready ONNX.",
}
EXPORT_SUMMARY = f"Export a model for serving: {', '.join(EXPORT_FORMATS)}."


def export(argv: list[str]) -> int:
    """``drn-tf export FORMAT [flags]``; returns the exit status."""
    if not argv or argv[0] in ("-h", "--help"):
        about = (
            "Writes a model in a serving format, verified against Keras and timed (the same as\n"
            "python -m export.FORMAT)."
        )
        print(_overview("drn-tf export", "format", about, EXPORT_FORMATS), file=_help_to(argv))
        return 0 if argv else 2
    name, *args = argv
    if name not in EXPORT_FORMATS:
        return _unknown("drn-tf export", "format", name, EXPORT_FORMATS)
    return importlib.import_module(f"export.{name}").main(args, prog=f"drn-tf export {name}")


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


def _overview(prog: str, kind: str, about: str, entries: dict[str, str]) -> str:
    """The help of ``prog`` (``drn-tf``, ``drn-tf export``), which runs one of ``entries``
    (name → one-line summary), each a ``kind`` (command, format) with flags of its own."""
    width = max(map(len, entries))
    return "\n".join(
        [
            f"usage: {prog} {kind.upper()} [flags]",
            "",
            about,
            "",
            f"{kind}s:",
            *(f"  {name:<{width}}  {summary}" for name, summary in entries.items()),
            "",
            f"`{prog} {kind.upper()} --help` lists a {kind}'s flags.",
        ]
    )


def _help_to(argv: list[str]) -> typing.TextIO:
    """Where an overview goes: stdout when asked for (``--help``), stderr when nothing was."""
    return sys.stdout if argv else sys.stderr


def _unknown(prog: str, kind: str, name: str, entries: typing.Iterable[str]) -> int:
    """Says that ``name`` is not one of ``entries``; returns the exit status, 2."""
    print(
        f"{prog}: unknown {kind} {name!r} (choose from {', '.join(entries)})\n(see {prog} --help)",
        file=sys.stderr,
    )
    return 2


def main(argv: Sequence[str]) -> int:
    """Runs ``drn-tf`` with ``argv`` (without the program name); returns the exit status."""
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        about = "Dual Regression Networks (Guo et al., CVPR 2020) for super-resolution."
        summaries = {name: command.summary for name, command in COMMANDS.items()}
        summaries["export"] = EXPORT_SUMMARY
        print(_overview("drn-tf", "command", about, summaries), file=_help_to(argv))
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"drn-tf {__version__}")
        return 0
    name, *args = argv
    if name == "export":
        return export(args)
    command = COMMANDS.get(name)
    if command is None:
        return _unknown("drn-tf", "command", name, [*COMMANDS, "export"])
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
    try:
        status = main(sys.argv[1:])
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`drn-tf --help | head`): no traceback, and none again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    sys.exit(status)
