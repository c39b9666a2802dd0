"""TensorRT export: ``python -m export.trt --model M --output PATH [--precision fp32|fp16|int8]
[--calibration-data DIR ...] [--min-shape 1x16x16x3 --opt-shape 1x128x128x3
--max-shape 1x512x512x3] [--onnx-only] [--overwrite]``.

The route is chosen automatically (:func:`export.trt_routes.choose_route`) and named in the
output:

1. **tf-trt** — the running TensorFlow was built with TensorRT (NVIDIA's TensorFlow
   containers; no TensorFlow ≥ 2.18 wheel is) and sees a GPU: ``TrtGraphConverterV2`` writes a
   TF-TRT SavedModel folder (signature ``serving_default``: ``images`` → ``sr``) that TF Serving
   loads (:mod:`export.tf_trt`).
2. **onnx-tensorrt** — the ``tensorrt`` Python package (≥ 10) imports and a CUDA GPU is present
   (probed through the CUDA runtime or ``nvidia-smi``, not through the import, which succeeds
   without a GPU): the model goes to ONNX (:func:`export.onnx.to_onnx`), the ONNX is verified in
   onnxruntime, and a serialized TensorRT engine file is built with one optimization profile
   for the shape range and verified in the TensorRT runtime (:mod:`export.trt_engine`, which
   also says what each precision means there).
3. otherwise exit status 2 with one line naming what is missing.

``--onnx-only`` stops route 2 at its ONNX (verified in onnxruntime on the CPU), for building the
engine later on a GPU host with :mod:`export.trt_gpu_check` (needs no TensorFlow).

The engine's I/O is that of :func:`export.onnx.io_contract`: float32 NHWC on 0..255 in, float32
out, dynamic N/H/W within the profile. A wrong flag value (a shape that is not NxHxWx3, a range
that is not min <= opt <= max, int8 without calibration data) is exit status 2 before
TensorFlow loads.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drn_tf.console import run_command
from drn_tf.flags import UsageError, setting
from export import base, reporting, staging, verification
from export import onnx as onnx_export
from export.tf_trt import tf_trt_saved_model
from export.trt_engine import (
    DEFAULT_SHAPES,
    NEEDS_CALIBRATION,
    PRECISIONS,
    EngineRunner,
    Shape,
    build_engine,
    calibration_batches,
    check_profile_covers,
    profile_shapes,
    tensorrt_onnx,
)
from export.trt_routes import TF_TRT, NoRoute, choose_route, tensorrt_version


def export_trt(
    model: Any,
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    precision: str = "fp32",
    calibration_data: Sequence[str | os.PathLike] = (),
    min_shape: str | Shape = DEFAULT_SHAPES[0],
    opt_shape: str | Shape = DEFAULT_SHAPES[1],
    max_shape: str | Shape = DEFAULT_SHAPES[2],
    onnx_only: bool = False,
    timing_runs: int = 10,
) -> reporting.Report:
    """Exports ``model`` (a ``.keras`` path, ``"default"`` or a :class:`base.Source`) for
    TensorRT at ``output`` by the route :func:`choose_route` picks (or, with ``onnx_only``,
    writes route 2's ONNX verified in onnxruntime); returns the report.

    The artifact: a TF-TRT SavedModel folder (route 1), a serialized engine file (route 2) or
    an ``.onnx`` file (``onnx_only``), each verified against Keras at the ``precision`` floor
    (:data:`base.FLOORS_DB`). Raises :class:`NoRoute` when no route is possible.
    """
    if precision not in PRECISIONS:
        raise base.ExportError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    if calibration_data and precision != "int8":
        raise base.ExportError("calibration data is used only with precision int8")
    if precision == "int8" and not calibration_data:
        raise base.ExportError(NEEDS_CALIBRATION)
    shapes = profile_shapes(min_shape, opt_shape, max_shape)
    staging.check_destination(output, overwrite)
    route = "onnx-only" if onnx_only else choose_route()
    source = onnx_export.load(model)
    scale = source.model.scale
    if not onnx_only:
        check_profile_covers(shapes, scale, timing_runs > 0)
    batches = calibration_batches(calibration_data, scale) if precision == "int8" else []
    io = {**onnx_export.io_contract(scale), "profile": {"min": shapes[0], "opt": shapes[1],
                                                       "max": shapes[2]}}  # fmt: skip
    notes = [f"route: {route}"]
    packages = () if route == TF_TRT else ("tensorrt", *onnx_export.PACKAGES)
    with staging.staged(output, overwrite) as temp, tempfile.TemporaryDirectory() as work:
        base.progress(f"converting ({route}, {precision})")
        if route == TF_TRT:
            runner = tf_trt_saved_model(source, temp, precision, batches, shapes)
            format = "tf-trt-saved-model"
            io["signature"] = "serving_default"
        else:
            onnx_path = temp if onnx_only else Path(work) / "model.onnx"
            tensorrt_onnx(source.model, onnx_path, precision, batches)
            onnx_runner = onnx_export.onnxruntime_runner(onnx_path)
            format = "onnx-for-tensorrt"
            if not onnx_only:
                # Check the ONNX on the CPU first: a failure here is cheaper to report.
                records = verification.verify(
                    onnx_runner, verification.keras_runner(source.model), scale,
                    base.FLOORS_DB[precision],
                )  # fmt: skip
                dbs = ", ".join(f"{r['psnr_db']:.1f} dB" for r in records)
                notes.append(f"its ONNX in onnxruntime against Keras: {dbs}")
                temp.write_bytes(build_engine(onnx_path, shapes))
                runner, format = EngineRunner(temp.read_bytes()), "tensorrt-engine"
                notes.append(f"tensorrt {tensorrt_version()}; engines are tied to the GPU model")
            else:
                runner = onnx_runner
                flags = " ".join(
                    f"--{name}-shape {'x'.join(map(str, shape))}"
                    for name, shape in zip(("min", "opt", "max"), shapes, strict=True)
                )
                notes.append(
                    f"build the engine on a GPU host: python -m export.trt_gpu_check {output} "
                    f"{flags}"
                )
        return verification.finish(
            format=format,
            source=source,
            staged_path=temp,
            output=output,
            runner=runner,
            precision=precision,
            io=io,
            packages=packages,
            timing_runs=timing_runs,
            notes=notes,
            embed=(lambda report: onnx_export.embed(temp, report)) if onnx_only else None,
        )


@dataclasses.dataclass
class Flags:
    """Export a DRN model for TensorRT (TF-TRT SavedModel or a TensorRT engine), verified
    against Keras."""

    model: str = setting("default", base.MODEL_HELP)
    scale: int | None = setting(None, base.SCALE_HELP)
    output: str | None = setting(
        None, "Where to write: an engine file, a TF-TRT SavedModel folder or, with --onnx-only, "
        "an .onnx file (required).",
    )  # fmt: skip
    precision: str = setting("fp32", "Engine precision.", choices=PRECISIONS)
    calibration_data: list[str] = setting(
        [], "Folders of varied photos for int8 calibration (required with int8)."
    )
    min_shape: str = setting(DEFAULT_SHAPES[0], "Smallest input NxHxWx3 of the engine's profile.")
    opt_shape: str = setting(DEFAULT_SHAPES[1], "Input NxHxWx3 the engine is tuned for.")
    max_shape: str = setting(DEFAULT_SHAPES[2], "Largest input NxHxWx3 of the engine's profile.")
    onnx_only: bool = setting(
        False, "Write the TensorRT-ready ONNX (verified in onnxruntime) instead of an engine."
    )
    overwrite: bool = setting(False, "Replace an existing artifact.")
    timing_runs: int = setting(10, "Timed runs for the latency (0: no timing).")


def _cli(flags: Flags, _: list[str]) -> None:
    if not flags.output:
        raise UsageError("--output is required")
    if flags.calibration_data and flags.precision != "int8":
        raise UsageError("--calibration-data is used only with --precision int8")
    if flags.precision == "int8" and not flags.calibration_data:
        raise UsageError(NEEDS_CALIBRATION)
    try:  # a malformed shape or range is a wrong flag value: exit 2, before TensorFlow loads
        profile_shapes(flags.min_shape, flags.opt_shape, flags.max_shape)
    except base.ExportError as error:
        raise UsageError(str(error)) from error
    report = export_trt(
        base.packaged_or_path(flags.model, flags.scale),
        flags.output,
        overwrite=flags.overwrite,
        precision=flags.precision,
        calibration_data=flags.calibration_data,
        min_shape=flags.min_shape,
        opt_shape=flags.opt_shape,
        max_shape=flags.max_shape,
        onnx_only=flags.onnx_only,
        timing_runs=flags.timing_runs,
    )
    print(report.summary())


def main(argv: list[str] | None = None, prog: str = "python -m export.trt") -> int:
    """``python -m export.trt`` (also ``drn-tf export trt``): returns the exit status (2 when
    no TensorRT route exists)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run_command(prog, Flags, _cli, argv)
    except NoRoute as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
