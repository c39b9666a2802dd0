"""Every command's settings, and the rules their values must follow.

Each ``drn-tf`` command has a dataclass here whose fields are its flags (:mod:`drn_tf.flags`):
``train`` and ``adapt`` (also the settings of :func:`drn_tf.training.train`), ``upscale``,
``evaluate``, ``degrade``, ``convert``, ``package`` and ``demo``. A field's ``choices`` are
what argparse accepts; every other rule on a value is written once here, in the ``check()``
of the settings (or a function they share), which a command calls before any work. A check
reads no file, so a wrong flag is told before TensorFlow loads: the paths are checked by the
commands (:mod:`drn_tf.cli`, :func:`drn_tf.runs.validate_config`). This module imports no
TensorFlow, so ``drn-tf COMMAND --help`` is instant.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from drn_tf.degrade import KINDS
from drn_tf.flags import FlagError, check_choices, flag_name, setting
from drn_tf.precision import TRAINING_PRECISIONS, UPSCALE_PRECISIONS
from drn_tf.scales import check_scale

#: The model variants (drn_tf.models uses these; here so that flags are checked without it).
VARIANTS = ("drn-s", "drn-l")
#: What ``--runtime`` takes (:mod:`export.runtime`; here so that flags are checked without it).
RUNTIMES = ("auto", "keras", "openvino", "onnxruntime", "tflite")

# Mirrors drn_tf.tiles (DEFAULT_TILE, …), drn_tf.pictures (FORMAT_SUFFIXES) and drn_tf.images
# (IMAGE_EXTENSIONS), which load TensorFlow or PIL; `--help` loads neither.
# tests/test_upscale_files.py checks they agree.
UPSCALE_TILE, UPSCALE_TILE_OVERLAP = 128, 16
UPSCALE_FORMATS = ("png", "jpg", "webp", "tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Mirrors drn_tf.frames.VIDEO_EXTENSIONS and drn_tf.video's defaults (they load PyAV);
# tests/test_video.py checks they agree.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
VIDEO_CRF = 18


# --- rules shared by several commands ---------------------------------------------------------


def require(**flags: object) -> None:
    """Raises :class:`FlagError` naming the flags (given as ``field=value``) left empty."""
    missing = [flag_name(name) for name, value in flags.items() if not value]
    if missing:
        raise FlagError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")


def check_at_least(flag: str, value: float, minimum: float = 1) -> None:
    """Raises :class:`FlagError` unless ``value >= minimum`` (NaN fails too)."""
    if not value >= minimum:
        raise FlagError(f"{flag} must be at least {minimum}, got {value}")


def check_scale_flag(scale: int, power_of_two: bool = True, flag: str = "--scale") -> None:
    """Raises :class:`FlagError` unless ``scale`` is an upscaling factor
    (:func:`drn_tf.scales.check_scale`): a power of two, or any integer >= 2."""
    try:
        check_scale(scale, power_of_two)
    except ValueError:
        rule = "a power of two (2, 4, 8, …)" if power_of_two else "an integer of at least 2"
        raise FlagError(f"{flag} must be {rule}, got {scale}") from None


def check_keras_name(output: str) -> None:
    """Raises :class:`FlagError` unless ``--output`` names a ``.keras`` file."""
    if Path(output).suffix != ".keras":
        raise FlagError(f"--output must name a .keras file, got {Path(output)}")


def unpaired_count(batch_size: int, unpaired_ratio: float) -> int:
    """LR-only samples per batch: ``round(ρ · batch_size)`` (halves up), which must leave at least
    one sample of each kind.

    Raises:
        FlagError: naming ``--unpaired-ratio`` / ``--batch-size`` when that is not possible.
    """
    if not 0 < unpaired_ratio < 1:
        raise FlagError(
            f"--unpaired-ratio must be more than 0 and less than 1, got {unpaired_ratio}"
        )
    count = math.floor(unpaired_ratio * batch_size + 0.5)
    if not 1 <= count <= batch_size - 1:
        raise FlagError(
            f"--unpaired-ratio {unpaired_ratio} of --batch-size {batch_size} gives {count} "
            "LR-only sample(s) per batch; each batch needs both kinds (raise the batch size)"
        )
    return count


def check_patch_size(patch_size: int, scale: int, what: str) -> None:
    """Raises :class:`FlagError` unless ``--patch-size`` is a multiple of the scale ``what``."""
    if patch_size % scale:
        raise FlagError(f"--patch-size {patch_size} is not a multiple of {what} {scale}")


#: LR-only closed loops of ``adapt`` (:class:`drn_tf.dual_regression.DualRegressionModel`).
UNPAIRED_LOOPS = ("first", "cascade", "kernel")


@dataclasses.dataclass
class ModelSize:
    """The DRN a command builds: variant, scale and, if not the variant's, depth and width."""

    variant: str = setting("drn-s", "drn-s or drn-l.", choices=VARIANTS)
    scale: int = setting(4, "Upscaling factor, a power of two.")
    n_blocks: int | None = setting(None, "RCABs per up-phase (default: the variant's preset).")
    n_feats: int | None = setting(None, "Base feature width (default: the variant's preset).")

    def check_size(self) -> None:
        """Raises :class:`FlagError` for a depth or width below 1."""
        for name in ("n_blocks", "n_feats"):
            value = getattr(self, name)
            if value is not None:
                check_at_least(flag_name(name), value)


# --- train and adapt ---------------------------------------------------------------------------


@dataclasses.dataclass
class _TrainData:
    train_dir: list[str] = setting([], "Folder(s) of HR training images (recursive).")


# Base classes listed last come first in the fields, hence in --help.
@dataclasses.dataclass
class _TrainModel(ModelSize, _TrainData):
    """What ``train`` trains, and on what."""

    init: str | None = setting(
        None,
        "Start from this .keras model (e.g. a converted checkpoint); with more --n-blocks than "
        "it has, a deeper copy whose new RCABs start as identities.",
    )


@dataclasses.dataclass
class _AdaptModel:
    """What ``adapt`` adapts, and on what."""

    model: str = setting(
        "default", "The trained .keras model to adapt, or 'default' or 'fast' (packaged)."
    )
    scale: int | None = setting(
        None,
        "Upscaling factor: picks the packaged model of --model default (2, 4 or 8; default 4), "
        "or must be the .keras model's.",
    )
    paired_dir: list[str] = setting(
        [], "Folder(s) of HR images for the paired samples (bicubic LR; required)."
    )
    unpaired_dir: list[str] = setting(
        [],
        "Folder(s) of LR-only images, any size and format, and/or video files (or folders "
        "holding them): the data to adapt to (required).",
    )
    frames_per_video: int = setting(
        16, "Frames sampled from each video of --unpaired-dir, spread evenly over the clip."
    )
    unpaired_ratio: float = setting(
        0.3, "Share of LR-only samples in every batch, exact up to rounding (the paper's best)."
    )
    unpaired_loop: str = setting(
        "cascade",
        "Closed loop of the LR-only samples: 'cascade' |D0(SR_x2) - LR| + |D0(D1(...(SR_top))) "
        "- LR| (measured best, docs/adaptation.md), 'first' the first term alone, or 'kernel' "
        "a learned blur kernel in place of the duals (an experiment: no better than cascade).",
        choices=UNPAIRED_LOOPS,
    )


@dataclasses.dataclass
class _RunSettings:
    """Optimisation, precision and run-folder settings shared by ``train`` and ``adapt``."""

    val_dir: list[str] = setting([], "Folder(s) of validation images (benchmark layout or plain).")
    output: str = setting("runs/drn", "Run directory: model, checkpoints, logs, curves.")
    steps: int = setting(1_000_000, "Training steps (batches) in all.")
    steps_per_epoch: int = setting(1000, "Steps between validations, checkpoints and backups.")
    batch_size: int = setting(32, "Global batch size (split over replicas).")
    patch_size: int = setting(384, "HR patch size; the LR input is patch_size / scale.")
    learning_rate: float = setting(1e-4, "Initial Adam learning rate.")
    min_learning_rate: float = setting(1e-7, "Learning rate at the end of the cosine decay.")
    beta_1: float = setting(0.9, "Adam beta 1.")
    beta_2: float = setting(0.999, "Adam beta 2.")
    epsilon: float = setting(1e-8, "Adam epsilon.")
    dual_weight: float = setting(0.1, "Weight of the dual (closed-loop) loss.")
    augment: bool = setting(True, "Random flips and transposes.")
    scale_augment: list[float] = setting(
        [], "Factors in (0, 1), e.g. 0.9 0.8 0.7 0.6: bicubic copies of each training image join."
    )
    precision: str = setting(
        "auto",
        "float32, mixed_float16 (GPU only), mixed_bfloat16 or auto (mixed_float16 on a GPU, "
        "mixed_bfloat16 on a CPU with AMX or AVX-512 BF16, else float32).",
        choices=TRAINING_PRECISIONS,
    )
    strategy: str = setting(
        "default",
        "Devices: 'default' one device, 'mirrored' every GPU of this machine, 'multi_worker' "
        "the machines of the TF_CONFIG cluster (run the command on each; README 'Training on "
        "a cluster'). --batch-size stays the global batch.",
        choices=("default", "mirrored", "multi_worker"),  # drn_tf.distribute.STRATEGIES
    )
    cluster_timeout: int = setting(
        300, "--strategy multi_worker: seconds to wait for every worker of TF_CONFIG to join."
    )
    cache_dir: str | None = setting(None, "On-disk cache of the computed LR pyramids.")
    seed: int = setting(1, "Random seed (data order, crops, initialisation).")
    tensorboard: bool = setting(True, "Write TensorBoard scalars and SR sample images.")
    progress: int = setting(1, "Keras progress output: 0 silent, 1 progress bar, 2 one line/epoch.")
    overwrite: bool = setting(
        False, "Start afresh in an --output folder that holds another run (deletes that run)."
    )

    def check(self) -> None:
        """Raises :class:`FlagError` naming the first flag whose value is wrong or missing. Reads
        no file (so a command says it before loading TensorFlow); the paths are checked by
        :func:`drn_tf.runs.validate_config`."""
        check_choices(self)
        if self.scale is not None:
            check_scale_flag(self.scale)
        for name in ("steps", "steps_per_epoch", "batch_size", "patch_size", "cluster_timeout"):
            check_at_least(flag_name(name), getattr(self, name))
        # `not x > 0` rather than `x <= 0`, so that NaN fails too.
        if not self.learning_rate > 0:
            raise FlagError(f"--learning-rate must be positive, got {self.learning_rate}")
        if not 0 <= self.min_learning_rate <= self.learning_rate:
            raise FlagError(
                f"--min-learning-rate must be between 0 and --learning-rate "
                f"{self.learning_rate}, got {self.min_learning_rate}"
            )
        for name in ("beta_1", "beta_2"):
            if not 0 <= getattr(self, name) < 1:
                raise FlagError(f"{flag_name(name)} must be in [0, 1), got {getattr(self, name)}")
        if not self.epsilon > 0:
            raise FlagError(f"--epsilon must be positive, got {self.epsilon}")
        check_at_least("--dual-weight", self.dual_weight, 0)
        if not all(0 < factor < 1 for factor in self.scale_augment):
            raise FlagError(f"--scale-augment factors must be in (0, 1), got {self.scale_augment}")
        if self.progress not in (0, 1, 2):
            raise FlagError(f"--progress must be 0, 1 or 2, got {self.progress}")


@dataclasses.dataclass
class TrainConfig(_RunSettings, _TrainModel):
    """A training run. Defaults are the authors' recipe (docs/drn-reference.md §3)."""

    def check(self) -> None:
        if not self.train_dir:
            raise FlagError("no training folder given: --train-dir is required")
        super().check()
        self.check_size()
        check_patch_size(self.patch_size, self.scale, "--scale")


@dataclasses.dataclass
class AdaptConfig(_RunSettings, _AdaptModel):
    """A DRN-Adapt run (docs/drn-reference.md §1.5): a trained model fine-tuned on mixed batches
    of paired HR images and LR-only images, which count only through the closed loop."""

    output: str = setting("runs/adapt", "Run directory: model, checkpoints, logs, curves.")
    steps: int = setting(10_000, "Adaptation steps (batches) in all.")

    def check(self) -> None:
        """(``--patch-size`` against the model's scale is checked once the model is loaded.)"""
        for name, what in (("paired_dir", "paired"), ("unpaired_dir", "LR-only")):
            if not getattr(self, name):
                raise FlagError(f"no {what} folder given: {flag_name(name)} is required")
        super().check()
        check_at_least("--frames-per-video", self.frames_per_video)
        unpaired_count(self.batch_size, self.unpaired_ratio)


# --- upscale, evaluate, degrade ------------------------------------------------------------------


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
        "A .keras model, 'default' (the packaged model for --scale), 'fast' (the packaged "
        "fast ×4 model, about 1/16 of the compute) or 'bicubic' (MATLAB bicubic, the baseline).",
    )
    scale: int | None = setting(
        None,
        "Upscaling factor: picks the packaged model (2, 4 or 8; default 4), or must be the "
        ".keras model's; bicubic takes any integer >= 2 (default 4).",
    )
    tile: int = setting(
        UPSCALE_TILE,
        "Larger images go through the network in tiles of this many input pixels, so memory "
        "depends on the tile, not the image; 0 runs each image in one pass.",
    )
    tile_overlap: int = setting(
        UPSCALE_TILE_OVERLAP, "Overlap of neighbouring tiles in input pixels (blended)."
    )
    self_ensemble: bool = setting(
        False, "Average the outputs of the 8 flips and rotations (8x the time; +0.1 dB on Set5)."
    )
    precision: str = setting(
        "auto",
        "auto: bfloat16 where the CPU computes it natively (AMX or AVX-512 BF16), else float32.",
        choices=UPSCALE_PRECISIONS,
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
        choices=UPSCALE_FORMATS,
    )
    video_codec: str | None = setting(
        None,
        "Encoder of video outputs, any FFmpeg has (default: libx264; VP9 for .webm, MPEG-4 for "
        ".avi). Audio and subtitles are copied as they are.",
    )
    crf: int = setting(
        VIDEO_CRF,
        "Video quality: constant rate factor, lower is better and larger (x264 0-51, VP9 0-63).",
    )
    overwrite: bool = setting(False, "Replace outputs that exist (by default they are kept).")

    def check(self) -> None:
        check_choices(self)
        require(output=self.output)
        if self.tile < 0:
            raise FlagError(f"--tile must be 0 (one pass) or a number of pixels, got {self.tile}")
        if self.tile_overlap < 0:
            raise FlagError(f"--tile-overlap must be 0 or more, got {self.tile_overlap}")
        if self.tile and self.tile_overlap > self.tile // 4:
            raise FlagError(
                f"--tile-overlap {self.tile_overlap} is more than a quarter of --tile "
                f"{self.tile}: give a --tile of at least {4 * self.tile_overlap} or a smaller "
                "--tile-overlap"
            )
        if self.scale is not None:  # a DRN is ×2^k; bicubic also does ×3
            check_scale_flag(self.scale, power_of_two=self.model != "bicubic")
        if not 0 <= self.crf <= 63:
            raise FlagError(f"--crf must be between 0 and 63 (x264: 0-51), got {self.crf}")


@dataclasses.dataclass
class EvaluateConfig:
    """Y-channel PSNR/SSIM of a DRN model (or bicubic) on benchmark sets or image folders:
    drn-tf evaluate --model default --data Set5 Set14."""

    model: str = setting(
        "default",
        "A .keras model, 'default' (the packaged model for --scale), 'fast' (the packaged "
        "fast ×4 model) or 'bicubic' (the MATLAB-bicubic baseline).",
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
    self_ensemble: bool = setting(
        False,
        "Score the mean of the 8 flips and rotations of each input (8x the time), reported "
        "apart from the plain model's score.",
    )

    def check(self) -> None:
        if self.self_ensemble and (self.model == "bicubic" or self.lr_only):
            raise FlagError(
                "--self-ensemble scores a DRN's SR output: not with bicubic or --lr-only"
            )
        if self.scale is not None:  # a DRN is ×2^k; bicubic also does ×3
            check_scale_flag(self.scale, power_of_two=self.model != "bicubic")
        check_at_least("--frames-per-video", self.frames_per_video)
        if self.lr_only and self.model == "bicubic":
            raise FlagError("--lr-only needs a DRN model (its dual networks), not bicubic")


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

    def check(self) -> None:
        check_choices(self)
        require(hr_dir=self.hr_dir, output=self.output)
        check_scale_flag(self.scale, power_of_two=False)
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 95:
            raise FlagError(f"--jpeg-quality must be 1..95, got {self.jpeg_quality}")


# --- convert, package, demo ----------------------------------------------------------------------


@dataclasses.dataclass
class _Checkpoints:
    checkpoint: str | None = setting(None, "The authors' primal checkpoint (required), DRNS4x.pt.")
    dual_checkpoint: str | None = setting(
        None,
        "The authors' dual checkpoint, DRNS4x_dual_model.pt (without it the dual networks are "
        "randomly initialised: fine for upscaling, not for fine-tuning).",
    )


@dataclasses.dataclass
class ConvertConfig(ModelSize, _Checkpoints):
    """Convert the authors' PyTorch checkpoints into one .keras file (primal + dual networks):
    drn-tf convert --checkpoint DRNS4x.pt --dual-checkpoint DRNS4x_dual_model.pt
    --output drn_s_x4.keras."""

    output: str | None = setting(None, "The .keras file to write (required).")
    overwrite: bool = setting(False, "Replace --output if it exists.")

    def check(self) -> None:
        require(checkpoint=self.checkpoint, output=self.output)
        check_choices(self)
        check_scale_flag(self.scale)
        self.check_size()
        check_keras_name(self.output)


@dataclasses.dataclass
class PackageConfig:
    """Save a trained model for shipping: drn-tf package --model runs/x4/best.keras
    --output drn_x4.keras writes its networks alone, in float32, without the optimizer state."""

    model: str | None = setting(None, "The trained .keras model (required), e.g. RUN/best.keras.")
    output: str | None = setting(None, "The .keras file to write (required).")
    overwrite: bool = setting(False, "Replace --output if it exists.")
    note: str | None = setting(None, "How it was trained, kept in the model's info.")

    def check(self) -> None:
        require(model=self.model, output=self.output)
        check_keras_name(self.output)


@dataclasses.dataclass
class DemoConfig:
    """Super-resolve the bundled sample photo: DRN against bicubic, scored and pictured."""

    output: str = setting("demo_output", "Folder for the SR images and comparison pictures.")
    model: str = setting(
        "default",
        "A .keras model, 'default' (the packaged models, one per --scales) or 'fast' (×4 only).",
    )
    scales: list[int] = setting(
        [2, 4, 8], "Upscaling factors to show with the packaged models (a .keras model: its own)."
    )

    def check(self) -> None:
        for scale in self.scales:
            check_scale_flag(scale, flag="--scales")
