"""TFLite / LiteRT export: ``python -m export.tflite --model M --output F.tflite
--quantization none|float16|dynamic|int8 [--calibration-data DIR ...] [--threads N]``.

The artifact computes :func:`drn_tf.serving.super_resolve`, frozen and converted with TFLite
built-in operators only (no Flex, no custom ops):

- input ``images`` (signature ``serving_default``): float32 NHWC ``(N, H, W, 3)`` on 0..255,
  shape signature ``[-1, -1, -1, 3]`` (resize it with ``resize_tensor_input``);
- output ``output_0``: float32 NHWC ``(N, s·H, s·W, 3)``, about 0..255 and not clipped; to get
  the pixels of ``drn_tf.upscale``, clip to 0..255, round half to even and cast to uint8
  (:func:`drn_tf.serving.to_pixels`).

Quantization (:data:`QUANTIZATIONS`): ``none`` float32; ``float16`` weights stored as float16
(dequantized at load, computed in float32 on CPUs); ``dynamic`` weights int8, activations
float32 (quantized on the fly inside each op); ``int8`` weights and activations int8 ("full
integer", calibrated on real photos: ``--calibration-data`` folders, else the bundled sample
and its negative), float32 input and output (``QUANTIZE``/``DEQUANTIZE`` at the two ends).
Verified and timed in LiteRT (``ai_edge_litert``) with XNNPACK, as deployed.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from drn_tf.config import (
    setting,
    tensorflow_logs_hidden,
    without_tensorflow_log_lines,
)
from export import base

#: ``--quantization`` → the precision whose agreement floor applies (:data:`base.FLOORS_DB`).
QUANTIZATIONS = {"none": "fp32", "float16": "fp16", "dynamic": "int8", "int8": "int8"}

#: What each mode stores and computes in, for the metadata.
QUANTIZED = {
    "none": "nothing: float32 weights and activations",
    "float16": "weights float16 (dequantized to float32 at load); activations float32",
    "dynamic": "weights int8 (per channel; kernels under 1024 values stay float32); "
    "activations float32, quantized on the fly per op",
    "int8": "weights int8 (per channel) and activations int8 (calibrated); float32 input and "
    "output, quantized and dequantized inside the model",
}
PACKAGES = ("ai-edge-litert",)
_LITERT = ("ai_edge_litert.interpreter", "ai-edge-litert")


def to_tflite(
    model: Any, quantization: str = "none", calibration: Sequence[np.ndarray] = ()
) -> bytes:
    """The serving graph of ``model`` (a DRN or its primal network) as a ``.tflite`` flatbuffer.

    ``quantization`` is one of :data:`QUANTIZATIONS`; ``calibration`` (float32 ``(1, h, w, 3)``
    on 0..255, see :func:`base.calibration_images`) is needed for ``int8`` only.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from drn_tf import serving

    @tf.function(input_signature=[serving.FLOAT_SPEC])
    def serve(images):
        return serving.super_resolve(model, images)

    # Frozen first: converting the function with its Keras 3 variables gives READ_VARIABLE ops
    # and a NaN model, silently (tensorflow-notes §5). The empty module takes the converter's
    # current (SavedModel) path, which names the signature `serving_default`.
    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization != "int8":
        return converter.convert()
    if not calibration:
        raise base.ExportError("int8 quantization needs calibration images")
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = lambda: ([image] for image in calibration)
    # Calibrate, fix, then quantize: the two steps the converter takes inside, through its
    # private entry points (the same ones tf.lite.experimental.QuantizationDebugger uses).
    converter._experimental_calibrate_only = True
    # The quantizer prints its settings from C++; hidden like TensorFlow's own logs.
    with without_tensorflow_log_lines() if tensorflow_logs_hidden() else nullcontext():
        return _quantize(converter.convert())


def _quantize(calibrated: bytes) -> bytes:
    """A calibrated model → full int8 (float32 I/O), with each tensor calibrated to [0, 0]
    given the range 0..1 first.

    Why: a ReLU that never fires on the calibration photos (the packaged model has one, a
    channel-attention squeeze) would get a ~1e-8 scale, putting the next convolution's
    requantization scale (~1e4) beyond what XNNPACK accepts (< 256): LiteRT then refuses the
    whole model ("failed to create XNNPACK runtime"). Zeros are exact in any range.
    """
    from tensorflow.lite.python.convert import mlir_quantize
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            q = tensor.quantization
            calibrated = q is not None and q.min is not None and len(q.min) > 0
            if calibrated and max(np.max(np.abs(q.min)), np.max(np.abs(q.max))) < 1e-6:
                q.max = np.ones_like(np.asarray(q.max, np.float32))
    return mlir_quantize(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def calibration_inputs(folders: Sequence[str | os.PathLike], scale: int) -> list[np.ndarray]:
    """int8 calibration inputs: :func:`base.calibration_images` of ``folders``; with none,
    the bundled sample's crops with every other one replaced by its negative (255 - x).

    Why the negatives: one photo does not span the range of others. The sample's LR peaks at
    209, so int8 calibrated on it alone clipped brighter images (23 dB against Keras on
    Set5's baby; Set5 ×4 PSNR 2.1 dB lower). With the negatives the drop is about 0.13 dB,
    as with 32 to 128 crops of BSD200 photos.
    """
    crops = base.calibration_images(folders, scale)
    if folders:
        return crops
    return [255.0 - crop if i % 2 else crop for i, crop in enumerate(crops)]


def litert_runner(path: str | os.PathLike, threads: int | None = None) -> base.Runner:
    """A LiteRT interpreter (XNNPACK on, ``threads`` threads, default all CPUs) of the
    ``.tflite`` file at ``path`` as a :data:`base.Runner`: float32 NHWC on 0..255 in, float32
    ``output_0`` out. The input is resized (and tensors reallocated) whenever its shape changes.
    """
    litert = base.require(*_LITERT, purpose="running TFLite")
    # LiteRT prints a notice when it applies XNNPACK; hidden like TensorFlow's own logs.
    quiet = without_tensorflow_log_lines() if tensorflow_logs_hidden() else nullcontext()
    with quiet:
        interpreter = litert.Interpreter(
            model_path=str(path), num_threads=threads or os.cpu_count()
        )
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    allocated: list[tuple[int, ...]] = [()]

    def run(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if images.shape != allocated[0]:
            interpreter.resize_tensor_input(input_index, images.shape)
            quiet = without_tensorflow_log_lines() if tensorflow_logs_hidden() else nullcontext()
            try:
                with quiet:
                    interpreter.allocate_tensors()
            except RuntimeError as error:  # e.g. a delegate refusing the model: one line
                message = " ".join(str(error).split())
                raise base.ExportError(
                    f"LiteRT cannot run the model at {images.shape}: {message}"
                ) from error
            allocated[0] = images.shape
        interpreter.set_tensor(input_index, images)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)

    return run


def op_names(path: str | os.PathLike) -> set[str]:
    """The operator names of the ``.tflite`` file at ``path`` (``CONV_2D``, …; a custom or Flex
    operator shows as its custom code, e.g. ``FlexResizeBicubic``), read without delegates."""
    litert = base.require(*_LITERT, purpose="reading TFLite")
    interpreter = litert.Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    return {op["op_name"] for op in interpreter._get_ops_details()}


def io_contract(scale: int, quantization: str) -> dict:
    """The ``io`` entry of the metadata of a ×``scale`` ``.tflite`` artifact."""
    io = base.image_io(scale, "images", "output_0")
    io["input"]["shape_signature"] = [-1, -1, -1, 3]
    return {
        "signature": "serving_default",
        **io,
        "quantization": quantization,
        "quantized": QUANTIZED[quantization],
    }


def export_tflite(
    model: Any,
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    quantization: str = "none",
    calibration_data: Sequence[str | os.PathLike] = (),
    threads: int | None = None,
    timing_runs: int = 10,
) -> base.Report:
    """Writes ``model`` (a ``.keras`` path, ``"default"`` or a :class:`base.Source`) as TFLite at
    ``output``, verified in LiteRT against Keras (the floor of the quantization's precision)
    and timed; returns the report (also written beside it as ``F.tflite.json``).

    ``calibration_data``: folders of photos for ``int8`` (default: the bundled sample and its
    negative, :func:`calibration_inputs`).
    ``threads``: LiteRT threads for verification and timing (default: all CPUs).
    """
    if quantization not in QUANTIZATIONS:
        raise base.ExportError(
            f"--quantization {quantization!r}: use one of {', '.join(QUANTIZATIONS)}"
        )
    if calibration_data and quantization != "int8":
        raise base.ExportError("--calibration-data is only used with --quantization int8")
    if threads is not None and threads < 1:
        raise base.ExportError(f"--threads {threads}: must be at least 1")
    base.check_destination(output, overwrite)  # fail before the slow part
    base.require(*_LITERT, purpose="TFLite export")
    source = model if isinstance(model, base.Source) else base.load_source(model)
    scale = source.model.scale
    notes = [f"runtime: ai_edge_litert Interpreter, XNNPACK, {threads or os.cpu_count()} threads"]
    calibration = []
    if quantization == "int8":
        calibration = calibration_inputs(calibration_data, scale)
        folders = (
            ", ".join(map(str, calibration_data)) or "the bundled sample photo and its negative"
        )
        size = "x".join(map(str, calibration[0].shape[1:3]))
        notes.append(f"int8 calibration: {len(calibration)} LR crops of {size} from {folders}")
    with base.staged(output, overwrite) as temp:
        Path(temp).write_bytes(to_tflite(source.model, quantization, calibration))
        return base.finish(
            format="tflite",
            source=source,
            staged_path=temp,
            output=output,
            runner=litert_runner(temp, threads),
            precision=QUANTIZATIONS[quantization],
            io=io_contract(scale, quantization),
            packages=PACKAGES,
            timing_runs=timing_runs,
            notes=notes,
        )


@dataclasses.dataclass
class Flags:
    """Export a DRN model to TFLite / LiteRT, verified in LiteRT against Keras."""

    model: str = setting("default", base.MODEL_HELP)
    scale: int | None = setting(None, base.SCALE_HELP)
    output: str | None = setting(None, "The .tflite file to write (required).")
    quantization: str = setting(
        "none",
        "none (float32), float16 (float16 weights), dynamic (int8 weights) or int8 (int8 "
        "weights and activations, calibrated).",
        choices=tuple(QUANTIZATIONS),
    )
    calibration_data: list[str] = setting(
        [],
        "Folders of photos to calibrate int8 on (default: the bundled sample and its negative).",
    )
    threads: int | None = setting(None, "LiteRT threads (default: all CPUs).")
    overwrite: bool = setting(False, "Replace an existing artifact.")
    timing_runs: int = setting(10, "Timed runs for the latency (0: no timing).")


def main(argv: list[str] | None = None) -> int:
    """``python -m export.tflite``: returns the exit status."""
    return base.command("python -m export.tflite", Flags, export_tflite, argv)


if __name__ == "__main__":
    sys.exit(main())
