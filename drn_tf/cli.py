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
import importlib
import os
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from drn_tf import __version__
from drn_tf.config import VARIANTS, AdaptConfig, TrainConfig, UsageError, run_command, setting
from drn_tf.degrade import KINDS
from export.runtime import RUNTIMES

# --- checks shared by the commands ---------------------------------------------------------


def _check_scale(scale: int, power_of_two: bool = True, flag: str = "--scale") -> None:
    from drn_tf.scales import check_scale

    try:
        check_scale(scale, power_of_two)
    except ValueError:
        rule = "a power of two (2, 4, 8, …)" if power_of_two else "an integer of at least 2"
        raise UsageError(f"{flag} must be {rule}, got {scale}") from None


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


def _keras_output(value: str, overwrite: bool) -> Path:
    """``--output`` as the ``.keras`` file to write: checked (an existing file only with
    ``overwrite``), and its folder cleared of the temporary files of saves killed midway."""
    output = Path(value)
    if output.suffix != ".keras":
        raise UsageError(f"--output must name a .keras file, got {output}")
    _check_output_file(output, "--output")
    if output.exists() and not overwrite:
        raise ValueError(f"{output}: exists; --overwrite replaces it")
    from drn_tf.files import remove_stale_temp_files

    remove_stale_temp_files(output.parent)
    return output


def _fail_if_skipped(count: int) -> None:
    """The rule of every command over many files (upscale, evaluate, degrade): each file it
    could not use is named on its own line, the others are done and written, and then the
    command fails (exit 1) if there was any."""
    if count:
        raise ValueError(f"{count} file(s) skipped (listed above); the others are done")


def _required(**flags: object) -> None:
    missing = ["--" + name.replace("_", "-") for name, value in flags.items() if not value]
    if missing:
        raise UsageError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")


# --- upscale -------------------------------------------------------------------------------


# Mirrors drn_tf.inference (DEFAULT_TILE, …) and drn_tf.images (FORMAT_SUFFIXES), which load
# TensorFlow or PIL; `--help` loads neither. tests/test_upscale.py checks they agree.
_UPSCALE_TILE, _UPSCALE_TILE_OVERLAP = 128, 16
_UPSCALE_FORMATS = ("png", "jpg", "webp", "tiff")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Mirrors drn_tf.frames.VIDEO_EXTENSIONS and drn_tf.video's defaults (they load PyAV).
_VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
_VIDEO_CRF = 18


@dataclasses.dataclass
class UpscaleConfig:
    """Upscale images, videos and folders: drn-tf upscale a.jpg clip.mp4 photos/ --output out/
    writes out/a_x4.png, out/clip_x4.mp4 and, for each image or video under photos/, the same
    path under out/."""

    output: str | None = setting(
        None,
        "Output folder (required; input folders keep their layout), or an image (video) file "
        "name for a single input image (video).",
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
    runtime: str = setting(
        "auto",
        "Where the network runs. auto: the fastest on this CPU (OpenVINO bf16 with AMX, "
        "OpenVINO int8 with AVX-512 or AVX2) if the export extra is installed, else "
        "Keras; keras gives the reference pixels. The converted model is cached in "
        "~/.cache/drn-tf ($DRN_TF_CACHE_DIR).",
        choices=RUNTIMES,
    )
    format: str | None = setting(
        None,
        "Output format (default: png, or the suffix of an --output file name).",
        choices=_UPSCALE_FORMATS,
    )
    video_codec: str | None = setting(
        None,
        "Encoder of video outputs, any FFmpeg has (default: libx264; VP9 for .webm, MPEG-4 for "
        ".avi). Audio and subtitles are copied as they are.",
    )
    crf: int = setting(
        _VIDEO_CRF,
        "Video quality: constant rate factor, lower is better and larger (x264 0-51, VP9 0-63).",
    )
    overwrite: bool = setting(False, "Replace outputs that exist (by default they are kept).")


def upscale(config: UpscaleConfig, inputs: list[str]) -> None:
    if not inputs:
        raise UsageError("no input image or folder given")
    _required(output=config.output)
    if config.tile < 0:
        raise UsageError(f"--tile must be 0 (one pass) or a number of pixels, got {config.tile}")
    if config.tile_overlap < 0:
        raise UsageError(f"--tile-overlap must be 0 or more, got {config.tile_overlap}")
    if config.tile and config.tile_overlap > config.tile // 4:
        raise UsageError(
            f"--tile-overlap {config.tile_overlap} is more than a quarter of --tile "
            f"{config.tile}: give a --tile of at least {4 * config.tile_overlap} or a smaller "
            "--tile-overlap"
        )
    if config.scale is not None:  # a DRN is ×2^k; bicubic also does ×3
        _check_scale(config.scale, power_of_two=config.model != "bicubic")
    if not 0 <= config.crf <= 63:
        raise UsageError(f"--crf must be between 0 and 63 (x264: 0-51), got {config.crf}")
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
    one_video = one_file and Path(inputs[0]).suffix.lower() in _VIDEO_SUFFIXES
    names_image = output.suffix.lower() in _IMAGE_SUFFIXES and not output.is_dir()
    names_video = output.suffix.lower() in _VIDEO_SUFFIXES and not output.is_dir()
    names_file = names_image or names_video
    if output.is_file() and not (one_file and names_file):
        raise ValueError(f"{output}: --output must be a folder, and this is a file")
    if (names_image and (not one_file or one_video)) or (names_video and not one_video):
        what = "image" if names_image else "video"
        raise UsageError(
            f"--output {output} names an {what} file, which takes one input {what}; "
            "give a folder for other inputs"
        )
    _check_output_folder(output.parent if names_file else output)

    from drn_tf.files import remove_stale_temp_files
    from drn_tf.frames import find_videos
    from drn_tf.images import find_images
    from drn_tf.inference import Bicubic, UpscaleSummary, load_model, upscale_files
    from drn_tf.video import check_video_codec, upscale_video_files

    check_video_codec(config.video_codec)
    choice = _runtime(config.runtime, config.precision)
    # Video files, and folders holding videos, go to the video upscaler; the rest (folders
    # with images, and any other file, which fails alone if it is no image) to the images'.
    paths = [Path(p) for p in inputs]
    videos = [p for p in paths if p.is_file() and p.suffix.lower() in _VIDEO_SUFFIXES]
    videos += [p for p in paths if p.is_dir() and find_videos(p)]
    images = [p for p in paths if p.is_file() and p not in videos]
    images += [
        p for p in paths if p.is_dir() and (find_images(p, unreadable=[]) or p not in videos)
    ]  # unreadable sub-folders: named by upscale_files

    remove_stale_temp_files(output.parent if names_file else output, recursive=not names_file)
    if config.model == "bicubic":
        model = Bicubic(config.scale or 4)
    else:
        model = load_model(config.model, scale=config.scale)
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
        "images, or video files): print the closed-loop error |D(P(x)) - x| per image (video "
        "frame) and mean, a no-reference readout of how consistent the model is on them.",
    )
    frames_per_video: int = setting(
        16, "--lr-only: frames sampled from each video, spread evenly over the clip."
    )


def evaluate(config: EvaluateConfig, folders: list[str]) -> None:
    folders = [*config.data, *folders]
    if not folders:
        raise UsageError("no folder to evaluate: give --data FOLDER... (or plain arguments)")
    if config.scale is not None:  # a DRN is ×2^k; bicubic also does ×3
        _check_scale(config.scale, power_of_two=config.model != "bicubic")
    if config.frames_per_video < 1:
        raise UsageError(f"--frames-per-video must be at least 1, got {config.frames_per_video}")
    for folder in folders:
        if not Path(folder).exists():
            raise FileNotFoundError(f"{folder}: evaluation folder does not exist")
        video = Path(folder).suffix.lower() in _VIDEO_SUFFIXES
        if video and not config.lr_only:
            raise UsageError(f"{folder}: a video has no HR frames; --lr-only evaluates it")
        if not Path(folder).is_dir() and not video:
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
        from drn_tf.inference import check_trained_duals

        check_trained_duals(model, config.model, "--lr-only's closed-loop error")

        results = evaluate_closed_loop(
            model, folders, scale, config.lr_kind, frames_per_video=config.frames_per_video
        )
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
    _fail_if_skipped(sum(len(r["skipped"]) for r in results.values()))


# --- train ---------------------------------------------------------------------------------


def train(config, positionals: list[str]) -> None:
    config.check()  # a wrong flag value is told at once, not after TensorFlow loads
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
    overwrite: bool = setting(False, "Replace LR files that exist (by default they are kept).")


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
    overwrite: bool = setting(False, "Replace --output if it exists.")


def convert(config: ConvertConfig, positionals: list[str]) -> None:
    _required(checkpoint=config.checkpoint, output=config.output)
    if config.variant not in VARIANTS:
        raise UsageError(f"--variant must be one of {', '.join(VARIANTS)}, got {config.variant}")
    _check_scale(config.scale)
    for flag, value in (("--n-blocks", config.n_blocks), ("--n-feats", config.n_feats)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
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


@dataclasses.dataclass
class PackageConfig:
    """Save a trained model for shipping: drn-tf package --model runs/x4/best.keras
    --output drn_x4.keras writes its networks alone, in float32, without the optimizer state."""

    model: str | None = setting(None, "The trained .keras model (required), e.g. RUN/best.keras.")
    output: str | None = setting(None, "The .keras file to write (required).")
    overwrite: bool = setting(False, "Replace --output if it exists.")
    note: str | None = setting(None, "How it was trained, kept in the model's info.")


def package(config: PackageConfig, positionals: list[str]) -> None:
    _required(model=config.model, output=config.output)
    output = _keras_output(config.output, config.overwrite)
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
        _check_scale(scale, flag="--scales")
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


def _export_overview() -> str:
    width = max(map(len, EXPORT_FORMATS))
    return "\n".join(
        [
            "usage: drn-tf export FORMAT [flags]",
            "",
            "Writes a model in a serving format, verified against Keras and timed (the same as",
            "python -m export.FORMAT).",
            "",
            "formats:",
            *(f"  {name:<{width}}  {summary}" for name, summary in EXPORT_FORMATS.items()),
            "",
            "`drn-tf export FORMAT --help` lists a format's flags.",
        ]
    )


def export(argv: list[str]) -> int:
    """``drn-tf export FORMAT [flags]``; returns the exit status."""
    if not argv or argv[0] in ("-h", "--help"):
        print(_export_overview(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, *args = argv
    if name not in EXPORT_FORMATS:
        print(
            f"drn-tf export: unknown format {name!r} (choose from {', '.join(EXPORT_FORMATS)})\n"
            "(see drn-tf export --help)",
            file=sys.stderr,
        )
        return 2
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
            f"  {'export':<{width}}  {EXPORT_SUMMARY}",
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
    if name == "export":
        return export(args)
    command = COMMANDS.get(name)
    if command is None:
        print(
            f"drn-tf: unknown command {name!r} (choose from {', '.join([*COMMANDS, 'export'])})\n"
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
