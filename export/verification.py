"""Checking an artifact before it is moved into place: its runtime against the Keras model.

:func:`finish` is what every exporter ends with: :func:`verify` runs the artifact in its own
runtime and the Keras model (through the shared serving function, :mod:`drn_tf.serving`) on
real photos (:func:`export.photo_sets.probe_images`) and fails the export when an output is not
finite or agrees below the precision's floor (:data:`export.base.FLOORS_DB`, PSNR on the
0..255 output); :func:`measure` times both (median after warm-up on a 128×128 input); the
:class:`export.reporting.Report` of both is written beside the staged artifact.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export import base
from export.photo_sets import probe_images
from export.reporting import Report, host_cpu, library_versions, metadata_path


def keras_runner(model, pixels: bool = False) -> base.Runner:
    """The Keras model through the shared serving function, as a :data:`base.Runner`; ``pixels``:
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
        raise base.ExportError(
            f"output shape {output.shape} differs from Keras's {reference.shape}"
        )
    mse = float(np.mean((output - reference) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    return {"psnr_db": psnr, "max_abs": float(np.max(np.abs(output - reference)))}


def verify(
    runner: base.Runner, reference: base.Runner, scale: int, floor_db: float
) -> list[dict[str, Any]]:
    """Runs ``runner`` and ``reference`` on :func:`probe_images` and compares them.

    Returns one record per probe image. Raises :class:`base.ExportError` when an output has the
    wrong shape, is not finite, or agrees below ``floor_db``.
    """
    records = []
    for name, images in probe_images(scale):
        expected = reference(images)
        output = np.asarray(runner(images))
        if not np.all(np.isfinite(output)):
            raise base.ExportError(f"verification on {name}: the artifact's output is not finite")
        record = {"input": name, "shape": list(images.shape), **agreement(output, expected)}
        record["floor_db"] = floor_db
        records.append(record)
        if record["psnr_db"] < floor_db:
            raise base.ExportError(
                f"verification failed on {name}: {record['psnr_db']:.1f} dB against Keras, "
                f"below the {floor_db:.0f} dB floor (max abs difference {record['max_abs']:.3g})"
            )
    return records


def task_psnr(runner: base.Runner, scale: int, folder: str | os.PathLike) -> float:
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


def median_ms(runner: base.Runner, images: np.ndarray, runs: int = 10, warmup: int = 2) -> float:
    """Median wall-clock latency of ``runner(images)`` in milliseconds, after ``warmup`` runs."""
    for _ in range(warmup):
        runner(images)
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        runner(images)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(runner: base.Runner, reference: base.Runner, runs: int = 10) -> dict[str, Any]:
    """Median latency of the artifact and of the Keras model on one 128×128 input."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (1, *base.TIMING_SIZE, 3)).astype(np.float32)
    return {
        "input_shape": list(images.shape),
        "runs": runs,
        "artifact_ms": median_ms(runner, images, runs),
        "keras_ms": median_ms(reference, images, runs),
        "threads": os.cpu_count(),
    }


def finish(
    *,
    format: str,
    source: base.Source,
    staged_path: Path,
    output: str | os.PathLike,
    runner: base.Runner,
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
    ``source``, and writes its metadata there; :func:`export.staging.staged` then moves both
    into place.

    ``precision`` picks the agreement floor (:data:`base.FLOORS_DB`); ``timing_runs`` 0 skips
    timing. ``verified_on``: further checks an exporter made, added to this CPU's description
    in the report's ``verified_on``. ``embed``, when given, stores the finished report inside
    the artifact too (where its format has a place for metadata;
    :func:`export.reporting.embedded_fields`).
    ``pixels``: the artifact returns uint8 pixels, compared with Keras's pixels.
    Returns the :class:`Report` (also written as JSON).
    """
    if precision not in base.FLOORS_DB:
        raise ValueError(f"unknown precision {precision!r}; one of {sorted(base.FLOORS_DB)}")
    reference = keras_runner(source.model, pixels)
    base.progress("verifying against Keras")
    records = verify(runner, reference, source.model.scale, base.FLOORS_DB[precision])
    if timing_runs > 0:
        base.progress(f"timing ({timing_runs} runs)")
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
