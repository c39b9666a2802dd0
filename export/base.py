"""What every exporter shares, and the map of what every exporter does the same way.

An exporter (``export/<format>.py``) loads its model (:func:`load_source`), converts it inside
:func:`export.staging.staged` and hands the written artifact to
:func:`export.verification.finish`, which checks it before anything is moved into place:

1. **verify**: run the artifact in its own runtime on real photos (:mod:`export.photos`: the
   bundled sample's LR, an odd, non-square crop of it, and held-out crops that int8 is never
   calibrated on) and compare with the Keras model through the shared serving function
   (:mod:`drn_tf.serving`): PSNR of the artifact's 0..255 output against Keras's, and the max
   abs difference. Below the precision's floor (:data:`FLOORS_DB`) the export fails and an
   existing artifact is left as it was;
2. **time**: median latency after warm-up on a 128×128 input, beside the Keras model's;
3. **metadata**: a strict JSON beside the artifact (:mod:`export.reporting`): model, I/O
   contract, precision, source SHA-256, library versions, verification, timing and the CPU
   (model and instruction-set features) it was verified on; the same fields are embedded in
   the artifact where its format has a place for them.

Artifacts are written to a hidden temporary path beside the destination and renamed into place
only when complete and verified (:mod:`export.staging`). Each stage is shown on a terminal
(:func:`progress`), and Ctrl-C or SIGTERM stops an export at the next stage at the latest.

This module holds what those build on: the errors, optional imports (:func:`require`), stage
lines, the source model, the floors and the I/O contract of image-tensor artifacts, and the
thin command line (:func:`command`). It imports TensorFlow lazily so that ``--help`` is
instant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from drn_tf.console import check_interrupted

#: Agreement floors with the Keras model, PSNR in dB on the 0..255 output, by precision.
FLOORS_DB = {"fp32": 60.0, "fp16": 45.0, "bf16": 45.0, "int8": 35.0}

#: Convolutions int8 exports leave in float, counted from each end of the graph: the bicubic
#: upsampling, sub_mean and head (they see raw 0..255 pixels), and the top tail and add_mean
#: (they write them). In OpenVINO, on the packaged ×4 model, quantizing the last two as well
#: loses 0.8 dB more Set5 task PSNR, all five 2.4 dB more. LiteRT also keeps its down path in
#: float (:func:`export.tflite.float_nodes`).
KEEP_FIRST, KEEP_LAST = 3, 2

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
    (:func:`drn_tf.console.check_interrupted`)."""
    check_interrupted()
    if not _started:
        _started.append(time.perf_counter())
    if sys.stderr.isatty():
        elapsed = time.perf_counter() - _started[0]
        print(f"[{elapsed:6.1f}s] {stage}", file=sys.stderr, flush=True)


def end_progress() -> None:
    """Ends the running export's stage clock: the next export's :func:`progress` times its stages
    from its own start."""
    _started.clear()


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
    """Loads ``"default"`` or ``"fast"`` (the packaged models) or a ``.keras`` path, with the
    checks and one-line errors of :func:`drn_tf.loading.load_model`."""
    from drn_tf.bundled import model_path
    from drn_tf.loading import load_model

    path = model_path(model)
    _started[:] = [time.perf_counter()]
    progress(f"loading {path}")
    loaded = load_model(path, policy="float32")  # exporters take float32 graphs
    return Source(loaded, path, sha256_of(path))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


MODEL_HELP = (
    "A .keras DRN model, 'default' for the packaged model of --scale, or 'fast' for the "
    "packaged fast ×4 model."
)
SCALE_HELP = "With --model default: which packaged model, 2, 4 or 8 (default 4)."


def packaged_or_path(model: str, scale: int | None) -> str:
    """``--model`` and ``--scale`` as one model argument: the packaged file for ``default``."""
    from drn_tf.bundled import is_packaged, model_path
    from drn_tf.flags import UsageError

    if scale is not None and not is_packaged(model):
        raise UsageError(
            "--scale picks a packaged model: it goes with --model default or fast only"
        )
    try:
        return str(model_path(model, scale))
    except ValueError as error:  # no packaged model of that scale: a wrong flag value
        raise UsageError(f"--scale {scale}: {error}") from None


def command(prog: str, flags_cls: type, export: Callable[..., Any], argv: list[str] | None) -> int:
    """The thin command line of an exporter: ``flags_cls`` is a settings dataclass whose fields
    are ``model``, ``scale``, ``output`` and the keyword arguments of ``export``; runs
    ``export(model, output, **the rest)`` and prints its summary. Returns the exit status
    (:func:`drn_tf.console.run_command`)."""
    from drn_tf.console import run_command
    from drn_tf.flags import UsageError

    def run(flags, _: list[str]) -> None:
        if not flags.output:
            raise UsageError("--output is required")
        options = dataclasses.asdict(flags)
        model = packaged_or_path(options.pop("model"), options.pop("scale"))
        print(export(model, options.pop("output"), **options).summary())

    return run_command(prog, flags_cls, run, sys.argv[1:] if argv is None else argv)
