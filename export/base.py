"""What every exporter does the same way.

An exporter (``export/<format>.py``) converts a DRN model, then hands the written artifact to
:func:`finish`, which checks it before anything is moved into place:

1. **verify**: run the artifact in its own runtime on real photos (the bundled sample's LR, an
   odd, non-square crop of it, and held-out crops that int8 is never calibrated on) and
   compare with the Keras model through the shared serving function (:mod:`drn_tf.serving`):
   PSNR of the artifact's 0..255 output against Keras's, and the max abs difference. Below the
   precision's floor (:data:`FLOORS_DB`) the export fails and an existing artifact is left as
   it was;
2. **time**: median latency after warm-up on a 128×128 input, beside the Keras model's;
3. **metadata**: a strict JSON beside the artifact (:func:`metadata_path`, :func:`strict_json`):
   model, I/O contract, precision, source SHA-256, library versions, verification, timing and
   the CPU (model and instruction-set features) it was verified on; the same fields are
   embedded in the artifact where its format has a place for them (:func:`embedded_fields`).

Artifacts are written to a hidden temporary path beside the destination and renamed into place
only when complete and verified (:func:`staged`); an existing artifact is kept unless
``overwrite``, a full disk is one line naming the destination, and what a killed export left
is cleared by the next (:func:`sweep`). Each stage is shown on a terminal (:func:`progress`),
and Ctrl-C or SIGTERM stops an export at the next stage at the latest. This module imports
TensorFlow lazily so that ``--help`` is instant.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import importlib
import importlib.metadata
import json
import math
import os
import re
import shutil
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

import drn_tf
from drn_tf.config import check_interrupted

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


# --- progress --------------------------------------------------------------------------------

#: When the running export started (:func:`progress` times its stages from it).
_started: list[float] = []


def progress(stage: str) -> None:
    """Shows the stage an export begins, timed from its first stage (``[  4.2s] verifying
    against Keras``), on stderr when that is a terminal (a pipe or a log gets the summary
    alone), after checking that no Ctrl-C or SIGTERM arrived: stage boundaries are where an
    export whose interrupt was lost (in a finalizer, or caught by a library) still stops
    (:func:`drn_tf.config.check_interrupted`)."""
    check_interrupted()
    if not _started:
        _started.append(time.perf_counter())
    if sys.stderr.isatty():
        elapsed = time.perf_counter() - _started[0]
        print(f"[{elapsed:6.1f}s] {stage}", file=sys.stderr, flush=True)


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
    _started[:] = [time.perf_counter()]
    progress(f"loading {path}")
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


def read_metadata(artifact: str | os.PathLike) -> dict[str, Any]:
    """The metadata JSON of ``artifact`` (:func:`metadata_path`), parsed strictly: a
    non-standard ``NaN`` or ``Infinity`` is an :class:`ExportError`, as in other languages."""

    def refuse(constant: str) -> Any:
        raise ExportError(f"{metadata_path(artifact)}: {constant} is not JSON")

    return json.loads(metadata_path(artifact).read_text(), parse_constant=refuse)


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
    fails or is interrupted, the temporary path and the folders made for ``output`` are
    removed and ``output`` is untouched; a full disk is one :class:`ExportError` naming
    ``output``. What exports killed midway left beside ``output`` is cleared first
    (:func:`sweep`).
    """
    output = check_destination(output, overwrite)
    sweep(output.parent)
    made = [p for p in (output.parent, *output.parent.parents) if not p.exists()]
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    temp = output.with_name(f".{output.name}.{tag}")
    temp_metadata = Path(f"{temp}.json")  # a file artifact's metadata (a folder holds its own)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        yield temp
        if not temp.exists():
            raise ExportError(f"{output}: the exporter wrote nothing")
        progress(f"writing {output}")
        with _stop_signals_held():  # the artifact and its metadata move in together
            check_interrupted()
            _replace(temp, output, tag)
            if temp_metadata.exists():
                _replace(temp_metadata, Path(f"{output}.json"), tag)
        made.clear()
    except Exception as error:
        if _disk_full(error, output.parent):
            raise ExportError(f"{output}: cannot write, no space left on device") from error
        raise
    finally:
        _remove(temp)
        _remove(temp_metadata)
        for folder in made:  # innermost first; only if still empty
            with suppress(OSError):
                folder.rmdir()
        _started.clear()


def _disk_full(error: Exception, folder: Path) -> bool:
    """Whether ``error``, raised while writing to ``folder``, is a full disk (or quota): an
    ``OSError`` that says so, TensorFlow's ``ResourceExhaustedError`` (only its message does),
    or a C++ writer's bare failure (OpenVINO: "basic_ios::clear: iostream error") with under
    1 MiB left there."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
        return True
    if not isinstance(error, (OSError, RuntimeError)):
        return False
    with suppress(OSError):
        return shutil.disk_usage(folder).free < 1 << 20
    return False


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Holds Ctrl-C and SIGTERM back (in the main thread) until the block is done; one that
    arrived meanwhile is delivered then."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


#: ``.{name}.old.{pid}.{8 hex}``: an artifact :func:`_replace` renamed aside.
_ASIDE = re.compile(r"^\.(.+)\.old\.(\d+)\.[0-9a-f]{8}$")


def sweep(folder: str | os.PathLike) -> list[Path]:
    """Clears what exports killed midway (SIGKILL, power loss) left in ``folder``: their hidden
    temporary files and folders (:func:`drn_tf.files.remove_stale_temp_files`). An old
    artifact renamed aside whose replacement never arrived is renamed back, not deleted.
    Returns the removed paths; those of running processes are kept."""
    from drn_tf.files import process_alive, remove_stale_temp_files

    folder = Path(folder)
    if not folder.is_dir():
        return []
    for path in folder.glob(".*.old.*"):
        match = _ASIDE.match(path.name)
        original = folder / match[1] if match else None
        if original and not process_alive(int(match[2])) and not original.exists():
            path.rename(original)
    return remove_stale_temp_files(folder, folders=True)


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


#: Bundled photos for int8 (``drn_tf/assets``, sources in their ``SOURCE.md``): LR crops
#: (MATLAB bicubic ×1/4 of T91 and BSD200 photos) to calibrate on, and crops of other BSD200
#: photos, never calibrated on, that verification checks every artifact's floor on.
ASSETS = Path(drn_tf.__file__).parent / "assets"
CALIBRATION_SET = ASSETS / "calibration"
HELD_OUT_SET = ASSETS / "held_out"


def probe_images(scale: int) -> list[tuple[str, np.ndarray]]:
    """Real-photo inputs for verification: ``(name, float32 (1, H, W, 3) on 0..255)``.

    The bundled sample photo downscaled ×``scale`` with MATLAB bicubic (as the demo does), an
    odd-height, even-width, non-square crop of it (a second size, so dynamic shapes are
    exercised), and the held-out LR crops (:data:`HELD_OUT_SET`). None of them is a
    calibration image (:func:`calibration_images`), so int8 is checked on photos it was not
    calibrated on.
    """
    from drn_tf.degrade import imresize, modcrop
    from drn_tf.demo import SAMPLE_IMAGE

    hr = modcrop(_read_rgb(SAMPLE_IMAGE), scale)
    lr = imresize(hr, 1 / scale)
    crop = lr[3:40, 5:57]  # 37 × 52
    held_out = [
        (f"held_out_{path.stem}_{image.shape[1]}x{image.shape[2]}", image)
        for path, image in bundled_images(HELD_OUT_SET)
    ]
    return [
        (f"sample_lr_{lr.shape[0]}x{lr.shape[1]}", lr[None].astype(np.float32)),
        (f"sample_crop_{crop.shape[0]}x{crop.shape[1]}", crop[None].astype(np.float32)),
        *held_out,
    ]


def bundled_images(folder: Path) -> list[tuple[Path, np.ndarray]]:
    """The PNGs of a bundled folder in name order: ``(path, float32 (1, h, w, 3) on 0..255)``."""
    paths = sorted(folder.glob("*.png"))
    return [(path, _read_rgb(path)[None].astype(np.float32)) for path in paths]


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def calibration_images(
    folders: Sequence[str | os.PathLike], scale: int, count: int = 32, size: int = 48
) -> list[np.ndarray]:
    """Real LR inputs for int8 calibration: float32 ``(1, size, size, 3)`` on 0..255.

    Photos from ``folders`` (recursive) are downscaled ×``scale`` with MATLAB bicubic, like
    the LR images the model sees, and cut into up to ``count`` crops spread over the images.
    No folders: the bundled calibration set (:data:`CALIBRATION_SET`, 32 LR crops of 48×48
    from 32 varied photos) as it is, whatever ``scale``, ``count`` and ``size``.

    Why a varied set: int8 activation ranges come from what calibration sees. Calibrated on
    the one sample photo (LR peak 209), the packaged ×4 model's OpenVINO int8 lost 0.165 dB
    Set5 PSNR; on the bundled set 0.057 dB (AVX-512 VNNI EPYC, with NNCF's overflow fix).
    """
    from drn_tf.degrade import imresize, modcrop
    from drn_tf.images import find_images, read_image

    if not folders:
        return [image for _, image in bundled_images(CALIBRATION_SET)]

    paths: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ExportError(f"{folder}: calibration folder does not exist")
        found = find_images(folder)
        if not found:
            raise ExportError(f"{folder}: no images found for calibration")
        paths += found
    crops: list[np.ndarray] = []
    per_image = max(1, math.ceil(count / len(paths)))
    for path in paths:
        if len(crops) >= count:
            break
        image = read_image(path)  # names the file on error
        if min(image.shape[:2]) < size * scale:
            continue  # too small for one crop (a 1×1 image would not even survive modcrop)
        lr = imresize(modcrop(image, scale), 1 / scale)
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


def keras_runner(model, pixels: bool = False) -> Runner:
    """The Keras model through the shared serving function, as a :data:`Runner`; ``pixels``:
    its uint8 pixels (:func:`drn_tf.serving.to_pixels`) as float32."""
    import tensorflow as tf

    from drn_tf import serving

    @tf.function(input_signature=[serving.FLOAT_SPEC], reduce_retracing=True)
    def run(images):
        sr = serving.super_resolve(model, images)
        return tf.cast(serving.to_pixels(sr), tf.float32) if pixels else sr

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
    verified_on: dict = dataclasses.field(default_factory=lambda: {"cpu": host_cpu()})

    def to_json(self) -> str:
        """The report as strict JSON (:func:`strict_json`)."""
        return strict_json(dataclasses.asdict(self), indent=2) + "\n"

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


def strict_json(value: Any, indent: int | None = None) -> str:
    """``value`` as strict JSON (RFC 8259, which JavaScript's ``JSON.parse`` and ``jq`` read):
    an infinite or NaN float becomes ``null``; a ``psnr_db`` of ``null`` thus means outputs
    identical to Keras's (infinite PSNR). numpy scalars are numbers, paths strings."""

    def finite(item: Any) -> Any:
        if isinstance(item, dict):
            return {key: finite(v) for key, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(v) for v in item]
        if isinstance(item, (np.floating, np.integer)):
            item = item.item()
        if isinstance(item, float) and not math.isfinite(item):
            return None
        return item

    return json.dumps(finite(value), indent=indent, default=jsonable, allow_nan=False)


#: The ``/proc/cpuinfo`` flags that decide which kernels int8, bf16 and float32 run on.
CPU_FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def host_cpu() -> dict[str, Any]:
    """This machine's CPU: ``{"model": ..., "features": [...]}``, the :data:`CPU_FEATURES`
    it has, read from ``/proc/cpuinfo`` (elsewhere: the platform's name and no features)."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return {"model": model, "features": [f for f in CPU_FEATURES if f in flags]}


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
    embed: Callable[[Report], None] | None = None,
    verified_on: dict | None = None,
    pixels: bool = False,
) -> Report:
    """Verifies and times the artifact at ``staged_path`` against the Keras model of
    ``source``, and writes its metadata there; :func:`staged` then moves both into place.

    ``precision`` picks the agreement floor (:data:`FLOORS_DB`); ``timing_runs`` 0 skips
    timing. ``verified_on``: further checks an exporter made, added to this CPU's description
    in the report's ``verified_on``. ``embed``, when given, stores the finished report inside
    the artifact too (where its format has a place for metadata; :func:`embedded_fields`).
    ``pixels``: the artifact returns uint8 pixels, compared with Keras's pixels.
    Returns the :class:`Report` (also written as JSON).
    """
    if precision not in FLOORS_DB:
        raise ValueError(f"unknown precision {precision!r}; one of {sorted(FLOORS_DB)}")
    reference = keras_runner(source.model, pixels)
    progress("verifying against Keras")
    records = verify(runner, reference, source.model.scale, FLOORS_DB[precision])
    if timing_runs > 0:
        progress(f"timing ({timing_runs} runs)")
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
        verified_on={"cpu": host_cpu(), **(verified_on or {})},
    )
    if embed:
        embed(report)
    metadata_path(staged_path).write_text(report.to_json())
    return report


def embedded_fields(report: Report) -> dict[str, str]:
    """The side-car's top-level fields as strings to embed in an artifact (ONNX
    ``metadata_props``, OpenVINO ``rt_info``): each value strict JSON (:func:`strict_json`),
    keys as in the side-car."""
    return {key: strict_json(value) for key, value in dataclasses.asdict(report).items()}


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
