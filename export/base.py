"""What every exporter does the same way.

An exporter (``export/<format>.py``) converts a DRN model, then hands the written artifact to
:func:`finish`, which checks it before anything is moved into place:

1. **verify**: run the artifact in its own runtime on real photos (the bundled sample's LR and
   an odd, non-square crop of it) and compare with the Keras model through the shared serving
   function (:mod:`drn_tf.serving`): PSNR of the artifact's 0..255 output against Keras's, and
   the max abs difference. Below the precision's floor (:data:`FLOORS_DB`) the export fails and
   an existing artifact is left as it was;
2. **time**: median latency after warm-up on a 128×128 input, beside the Keras model's;
3. **metadata**: a JSON beside the artifact (:func:`metadata_path`): model, I/O contract,
   precision, source SHA-256, library versions, verification and timing.

Artifacts are written to a hidden temporary path beside the destination and renamed into place
only when complete and verified (:func:`staged`); an existing artifact is kept unless
``overwrite``. This module imports TensorFlow lazily so that ``--help`` is instant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import math
import os
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

#: Agreement floors with the Keras model, PSNR in dB on the 0..255 output, by precision.
FLOORS_DB = {"fp32": 60.0, "fp16": 45.0, "bf16": 45.0, "int8": 35.0}

#: The input size of the latency measurement (LR pixels).
TIMING_SIZE = (128, 128)

INSTALL_HINT = "pip install '.[export]'"

#: A runner takes a float32 NHWC batch on 0..255 and returns the artifact's float32 NHWC
#: top-level output on 0..255.
Runner = Callable[[np.ndarray], np.ndarray]

#: How an artifact's float32 output becomes the pixels of ``drn_tf.inference.upscale``.
PIXEL_STEP = "clip to 0..255, round half to even, cast uint8 — drn_tf.serving.to_pixels"


def image_io(scale: int, input_name: str, output_name: str) -> dict[str, Any]:
    """The ``io`` metadata entry shared by the image-tensor artifacts (ONNX, TensorRT,
    OpenVINO, TFLite): float32 NHWC on 0..255 in, ×``scale`` float32 out, N/H/W dynamic."""

    def tensor(name: str, shape: list, value_range: str) -> dict[str, Any]:
        return {
            "name": name,
            "dtype": "float32",
            "layout": "NHWC",
            "shape": shape,
            "range": value_range,
        }

    return {
        "input": tensor(input_name, ["N", "H", "W", 3], "0..255"),
        "output": tensor(
            output_name, ["N", f"{scale}H", f"{scale}W", 3], "about 0..255, not clipped"
        ),
        "dynamic": ["N", "H", "W"],
        "pixels": PIXEL_STEP,
    }


class ExportError(ValueError):
    """An export that cannot be done or did not verify: one line, exit status 1."""


class MissingDependency(ImportError):
    """An optional dependency of an exporter is not installed: one line naming what to install."""


def require(module: str, package: str | None = None, purpose: str = "this export") -> Any:
    """Imports ``module`` or raises :class:`MissingDependency` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = package or module.split(".")[0]
        raise MissingDependency(
            f"{purpose} needs the Python package {package!r} ({error}); install the export "
            f"extras: {INSTALL_HINT}"
        ) from error


# --- the source model ----------------------------------------------------------------------


@dataclasses.dataclass
class Source:
    """The model being exported, and where it came from."""

    model: Any  # drn_tf.models.DRN
    path: Path
    sha256: str

    def describe(self) -> dict:
        cfg = self.model.drn_config
        return {
            **dataclasses.asdict(cfg),
            "source": str(self.path),
            "source_sha256": self.sha256,
            "info": dict(self.model.info),
        }


def load_source(model: str | os.PathLike) -> Source:
    """Loads ``"default"`` (the packaged model) or a ``.keras`` path, with the checks and
    one-line errors of :func:`drn_tf.inference.load_model`."""
    from drn_tf.inference import load_model, model_path

    path = model_path(model)
    loaded = load_model(path)
    return Source(loaded, path, sha256_of(path))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- writing -------------------------------------------------------------------------------


def metadata_path(artifact: str | os.PathLike) -> Path:
    """Where the metadata JSON of ``artifact`` lives: ``F.onnx`` → ``F.onnx.json``; a folder
    artifact holds it as ``export.json``."""
    artifact = Path(artifact)
    return artifact / "export.json" if artifact.is_dir() else Path(f"{artifact}.json")


def check_destination(output: str | os.PathLike, overwrite: bool) -> Path:
    """Checks ``output`` before any work: an existing artifact needs ``overwrite``; its folder
    must be creatable and writable."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise ExportError(f"{output}: already exists; pass --overwrite to replace it")
    parent = output.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ExportError(f"{output.parent}: output folder is not writable")
    return output


@contextmanager
def staged(output: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yields a hidden temporary path beside ``output`` to write the artifact (a file or a
    folder) and its metadata to; when the block succeeds, moves them into place.

    An existing artifact is replaced only with ``overwrite``, and only by a complete one: the
    old one is renamed aside, the new one renamed in, then the old one deleted. When the block
    fails, the temporary path is removed and ``output`` is untouched.
    """
    output = check_destination(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    temp = output.with_name(f".{output.name}.{tag}")
    temp_metadata = Path(f"{temp}.json")  # a file artifact's metadata (a folder holds its own)
    try:
        yield temp
        if not temp.exists():
            raise ExportError(f"{output}: the exporter wrote nothing")
        _replace(temp, output, tag)
        if temp_metadata.exists():
            _replace(temp_metadata, Path(f"{output}.json"), tag)
    finally:
        _remove(temp)
        _remove(temp_metadata)


def _replace(source: Path, destination: Path, tag: str) -> None:
    """Renames ``source`` to ``destination``; an existing destination (a file or a folder) is
    renamed aside first and deleted only once the new one is in place."""
    old = destination.with_name(f".{destination.name}.old.{tag}")
    if destination.exists():
        destination.rename(old)
    try:
        source.rename(destination)
    except BaseException:
        if old.exists() and not destination.exists():
            old.rename(destination)
        raise
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- probe images --------------------------------------------------------------------------


def probe_images(scale: int) -> list[tuple[str, np.ndarray]]:
    """Real-photo inputs for verification: ``(name, float32 (1, H, W, 3) on 0..255)``.

    The bundled sample photo downscaled ×``scale`` with MATLAB bicubic (as the demo does), and
    an odd-height, even-width, non-square crop of it (a second size, so dynamic shapes are
    exercised).
    """
    from drn_tf.degrade import imresize, modcrop
    from drn_tf.demo import SAMPLE_IMAGE

    hr = modcrop(_read_rgb(SAMPLE_IMAGE), scale)
    lr = imresize(hr, 1 / scale)
    crop = lr[3:40, 5:57]  # 37 × 52
    return [
        (f"sample_lr_{lr.shape[0]}x{lr.shape[1]}", lr[None].astype(np.float32)),
        (f"sample_crop_{crop.shape[0]}x{crop.shape[1]}", crop[None].astype(np.float32)),
    ]


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def calibration_images(
    folders: Sequence[str | os.PathLike], scale: int, count: int = 32, size: int = 48
) -> list[np.ndarray]:
    """Real LR inputs for int8 calibration: float32 ``(1, size, size, 3)`` on 0..255.

    Photos from ``folders`` (recursive; none given: the bundled sample) are downscaled
    ×``scale`` with MATLAB bicubic, like the LR images the model sees, and cut into up to
    ``count`` crops spread over the images.
    """
    from drn_tf.degrade import imresize, modcrop
    from drn_tf.demo import SAMPLE_IMAGE
    from drn_tf.images import find_images, read_image

    paths: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ExportError(f"{folder}: calibration folder does not exist")
        found = find_images(folder)
        if not found:
            raise ExportError(f"{folder}: no images found for calibration")
        paths += found
    paths = paths or [SAMPLE_IMAGE]
    crops: list[np.ndarray] = []
    per_image = max(1, math.ceil(count / len(paths)))
    for path in paths:
        if len(crops) >= count:
            break
        lr = imresize(modcrop(read_image(path), scale), 1 / scale)  # names the file on error
        if min(lr.shape[:2]) < size:
            continue
        side = math.ceil(math.sqrt(per_image))
        rows = np.linspace(0, lr.shape[0] - size, num=side, dtype=int)
        cols = np.linspace(0, lr.shape[1] - size, num=side, dtype=int)
        corners = [(top, left) for top in rows for left in cols][:per_image]
        for top, left in corners[: count - len(crops)]:
            crops.append(lr[None, top : top + size, left : left + size].astype(np.float32))
    if not crops:
        raise ExportError(f"no calibration image is at least {size * scale} pixels on a side")
    return crops


# --- verification and timing ---------------------------------------------------------------


def keras_runner(model) -> Runner:
    """The Keras model through the shared serving function, as a :data:`Runner`."""
    import tensorflow as tf

    from drn_tf import serving

    @tf.function(input_signature=[serving.FLOAT_SPEC], reduce_retracing=True)
    def run(images):
        return serving.super_resolve(model, images)

    return lambda images: run(tf.constant(images, tf.float32)).numpy()


def agreement(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """PSNR (dB, peak 255) of ``output`` against ``reference`` and their max abs difference,
    both float on 0..255 and of the same shape."""
    output = np.asarray(output, np.float64)
    reference = np.asarray(reference, np.float64)
    if output.shape != reference.shape:
        raise ExportError(f"output shape {output.shape} differs from Keras's {reference.shape}")
    mse = float(np.mean((output - reference) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    return {"psnr_db": psnr, "max_abs": float(np.max(np.abs(output - reference)))}


def verify(runner: Runner, reference: Runner, scale: int, floor_db: float) -> list[dict[str, Any]]:
    """Runs ``runner`` and ``reference`` on :func:`probe_images` and compares them.

    Returns one record per probe image. Raises :class:`ExportError` when an output has the
    wrong shape, is not finite, or agrees below ``floor_db``.
    """
    records = []
    for name, images in probe_images(scale):
        expected = reference(images)
        output = np.asarray(runner(images))
        if not np.all(np.isfinite(output)):
            raise ExportError(f"verification on {name}: the artifact's output is not finite")
        record = {"input": name, "shape": list(images.shape), **agreement(output, expected)}
        record["floor_db"] = floor_db
        records.append(record)
        if record["psnr_db"] < floor_db:
            raise ExportError(
                f"verification failed on {name}: {record['psnr_db']:.1f} dB against Keras, "
                f"below the {floor_db:.0f} dB floor (max abs difference {record['max_abs']:.3g})"
            )
    return records


def task_psnr(runner: Runner, scale: int, folder: str | os.PathLike) -> float:
    """Mean Y-PSNR (dB) of ``runner`` on a benchmark set, by the evaluation protocol of
    :mod:`drn_tf.evaluation`: the whole official LR image in one pass, the output turned into
    pixels by :func:`drn_tf.serving.to_pixels`, ``scale`` pixels shaved."""
    from drn_tf import serving
    from drn_tf.image_sets import load_eval_pairs
    from drn_tf.metrics import psnr_y

    values = []
    for _, lr, hr in load_eval_pairs(folder, scale):
        sr = serving.to_pixels(runner(lr[None].astype(np.float32))[0]).numpy()
        values.append(psnr_y(sr, hr, shave=scale))
    return float(np.mean(values))


def median_ms(runner: Runner, images: np.ndarray, runs: int = 10, warmup: int = 2) -> float:
    """Median wall-clock latency of ``runner(images)`` in milliseconds, after ``warmup`` runs."""
    for _ in range(warmup):
        runner(images)
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        runner(images)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(runner: Runner, reference: Runner, runs: int = 10) -> dict[str, Any]:
    """Median latency of the artifact and of the Keras model on one 128×128 input."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (1, *TIMING_SIZE, 3)).astype(np.float32)
    return {
        "input_shape": list(images.shape),
        "runs": runs,
        "artifact_ms": median_ms(runner, images, runs),
        "keras_ms": median_ms(reference, images, runs),
        "threads": os.cpu_count(),
    }


def library_versions(*packages: str) -> dict[str, str]:
    """Installed versions of ``packages`` and of the TensorFlow stack."""
    names = ("tensorflow", "tensorflow-cpu", "keras", "numpy", *packages)
    versions = {}
    for name in names:
        with suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    versions["python"] = sys.version.split()[0]
    return versions


# --- the report ----------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    """What an export wrote and how it checked out; saved as the artifact's metadata JSON."""

    format: str
    artifact: str
    precision: str
    model: dict
    io: dict
    verification: list[dict]
    timing: dict | None
    versions: dict
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, default=jsonable) + "\n"

    def summary(self) -> str:
        """A few lines for the terminal: agreement per probe image and latency."""
        lines = [f"wrote {self.artifact} ({self.format}, {self.precision})"]
        for record in self.verification:
            lines.append(
                f"  agreement with Keras on {record['input']}: {record['psnr_db']:.1f} dB "
                f"(floor {record['floor_db']:.0f}), max abs {record['max_abs']:.3g}"
            )
        if self.timing:
            size = "x".join(str(s) for s in self.timing["input_shape"][1:3])
            lines.append(
                f"  latency on {size}: {self.timing['artifact_ms']:.1f} ms "
                f"(Keras {self.timing['keras_ms']:.1f} ms), median of {self.timing['runs']}"
            )
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(f"  metadata: {metadata_path(self.artifact)}")
        return "\n".join(lines)


def jsonable(value: Any) -> Any:
    """``json.dumps`` default: numpy scalars as numbers, paths as strings."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def finish(
    *,
    format: str,
    source: Source,
    staged_path: Path,
    output: str | os.PathLike,
    runner: Runner,
    precision: str,
    io: dict,
    packages: Sequence[str] = (),
    timing_runs: int = 10,
    notes: Sequence[str] = (),
) -> Report:
    """Verifies and times the artifact at ``staged_path`` against the Keras model of
    ``source``, and writes its metadata there; :func:`staged` then moves both into place.

    ``precision`` picks the agreement floor (:data:`FLOORS_DB`); ``timing_runs`` 0 skips
    timing. Returns the :class:`Report` (also written as JSON).
    """
    if precision not in FLOORS_DB:
        raise ValueError(f"unknown precision {precision!r}; one of {sorted(FLOORS_DB)}")
    reference = keras_runner(source.model)
    records = verify(runner, reference, source.model.scale, FLOORS_DB[precision])
    timing = measure(runner, reference, timing_runs) if timing_runs > 0 else None
    report = Report(
        format=format,
        artifact=str(output),
        precision=precision,
        model=source.describe(),
        io=io,
        verification=records,
        timing=timing,
        versions=library_versions(*packages),
        notes=list(notes),
    )
    metadata_path(staged_path).write_text(report.to_json())
    return report


MODEL_HELP = "A .keras DRN model, or 'default' for the packaged model of --scale."
SCALE_HELP = "With --model default: which packaged model, 2, 4 or 8 (default 4)."


def packaged_or_path(model: str, scale: int | None) -> str:
    """``--model`` and ``--scale`` as one model argument: the packaged file for ``default``."""
    from drn_tf.config import UsageError
    from drn_tf.inference import model_path

    if scale is not None and model != "default":
        raise UsageError("--scale picks a packaged model: it goes with --model default only")
    return str(model_path(model, scale))


def command(
    prog: str, flags_cls: type, export: Callable[..., Report], argv: list[str] | None
) -> int:
    """The thin command line of an exporter: ``flags_cls`` is a settings dataclass whose fields
    are ``model``, ``scale``, ``output`` and the keyword arguments of ``export``; runs
    ``export(model, output, **the rest)`` and prints its summary. Returns the exit status
    (:func:`drn_tf.config.run_command`)."""
    from drn_tf.config import UsageError, run_command

    def run(flags, _: list[str]) -> None:
        if not flags.output:
            raise UsageError("--output is required")
        options = dataclasses.asdict(flags)
        model = packaged_or_path(options.pop("model"), options.pop("scale"))
        print(export(model, options.pop("output"), **options).summary())

    return run_command(prog, flags_cls, run, sys.argv[1:] if argv is None else argv)
