"""TFLite / LiteRT export: ``python -m export.tflite --model M --output F.tflite
--quantization none|float16|dynamic|int8 [--io float32|uint8] [--calibration-data DIR ...]
[--threads N]``.

The artifact computes :func:`drn_tf.serving.super_resolve`, frozen and converted with TFLite
built-in operators only (no Flex, no custom ops):

- input ``images`` (signature ``serving_default``): float32 NHWC ``(N, H, W, 3)`` on 0..255,
  shape signature ``[-1, -1, -1, 3]`` (resize it with ``resize_tensor_input``);
- output ``sr``: float32 NHWC ``(N, s·H, s·W, 3)``, about 0..255 and not clipped; to get
  the pixels of ``drn_tf.upscale``, clip to 0..255, round half to even and cast to uint8
  (:func:`drn_tf.serving.to_pixels`).

The fields of the ``F.tflite.json`` side-car are embedded too, as the strict-JSON bytes of the
model's metadata entry :data:`METADATA_NAME` (the flatbuffer's own ``metadata`` list; read them
with :func:`embedded_metadata`).

Quantization (:data:`QUANTIZATIONS`): ``none`` float32; ``float16`` weights stored as float16
(dequantized at load, computed in float32 on CPUs); ``dynamic`` weights int8, activations
float32 (quantized on the fly inside each op); ``int8`` weights and activations int8 ("full
integer", calibrated on real photos: ``--calibration-data`` folders, else the bundled
calibration set, :func:`photo_sets.calibration_images`), float32 input and output, with the
convolutions that read or write raw pixels left in float as OpenVINO's int8 leaves them
(:data:`base.KEEP_FIRST`, :data:`base.KEEP_LAST`: the bicubic upsampling, sub_mean and head;
the top tail and add_mean), and the down path too (:func:`float_nodes`). Verified and timed
in LiteRT (``ai_edge_litert``) with XNNPACK, as deployed. XNNPACK's int8 kernels widen to
int16 before multiplying on every x86 CPU (or use VNNI), so, unlike OpenVINO's, they need no
overflow fix.

``--io uint8`` (with ``int8`` only) gives integer-only accelerators (Edge TPU, NPUs) a model
with no float tensor at all: input ``images`` uint8, the pixels themselves (quantization scale
1, zero point 0), and output ``sr`` uint8, the pixels of :func:`drn_tf.serving.to_pixels`
(clipped and rounded inside the model), so it is verified against Keras's pixels.
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

from drn_tf.console import tensorflow_logs_hidden, without_tensorflow_log_lines
from drn_tf.flags import setting
from export import base, photo_sets, reporting, staging, verification

#: ``--quantization`` → the precision whose agreement floor applies (:data:`base.FLOORS_DB`).
QUANTIZATIONS = {"none": "fp32", "float16": "fp16", "dynamic": "int8", "int8": "int8"}

#: What each mode stores and computes in, for the metadata.
QUANTIZED = {
    "none": "nothing: float32 weights and activations",
    "float16": "weights float16 (dequantized to float32 at load); activations float32",
    "dynamic": "weights int8 (per channel; kernels under 1024 values stay float32); "
    "activations float32, quantized on the fly per op",
    "int8": "weights int8 (per channel) and activations int8 (calibrated); float32 input and "
    f"output, quantized and dequantized inside the model; the first {base.KEEP_FIRST} and last "
    f"{base.KEEP_LAST} convolutions (upsample, sub_mean, head; tail, add_mean) and the down "
    "path in float, except with --io uint8 (integer only)",
}
#: ``--io``: the input and output type; ``uint8`` needs ``--quantization int8``.
IO_TYPES = ("float32", "uint8")
PACKAGES = ("ai-edge-litert",)
INPUT_NAME = "images"
#: How the down path's operators (``drn_tf.models``' ``down_k`` blocks) are named in the
#: converted graph; full int8 leaves them in float (:func:`float_nodes`).
DOWN_PREFIX = "down_"
OUTPUT_NAME = "sr"
#: The name of the flatbuffer metadata entry holding the side-car's JSON.
METADATA_NAME = "drn_tf_export"
_LITERT = ("ai_edge_litert.interpreter", "ai-edge-litert")


def to_tflite(
    model: Any,
    quantization: str = "none",
    calibration: Sequence[np.ndarray] = (),
    io: str = "float32",
) -> bytes:
    """The serving graph of ``model`` (a DRN or its primal network) as a ``.tflite`` flatbuffer.

    ``quantization`` is one of :data:`QUANTIZATIONS`; ``calibration`` (float32 ``(1, h, w, 3)``
    on 0..255, see :func:`photo_sets.calibration_images`) is needed for ``int8`` only. ``io``
    (one of :data:`IO_TYPES`) ``uint8``: uint8 pixels in and out (``int8`` only; ignored
    otherwise, :func:`export_tflite` refuses it).
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
        return _name_output(converter.convert())
    if not calibration:
        raise base.ExportError("int8 quantization needs calibration images")
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = lambda: ([image] for image in calibration)
    # Calibrate, fix, then quantize: the two steps the converter takes inside, through its
    # private entry points (the same ones tf.lite.experimental.QuantizationDebugger uses).
    converter._experimental_calibrate_only = True
    # The quantizer prints its settings from C++; hidden like TensorFlow's own logs.
    with without_tensorflow_log_lines() if tensorflow_logs_hidden() else nullcontext():
        return _name_output(_quantize(converter.convert(), io))


def _name_output(flatbuffer: bytes) -> bytes:
    """Names the signature's output :data:`OUTPUT_NAME` (the converter names a frozen
    function's only output ``output_0``; freezing loses a dict's keys)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    for signature in model.signatureDefs:
        (output,) = signature.outputs
        output.name = OUTPUT_NAME
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _quantize(calibrated: bytes, io: str = "float32") -> bytes:
    """A calibrated model → full int8 with ``io`` input and output (:data:`IO_TYPES`), with
    each tensor calibrated to [0, 0] given the range 0..1 first.

    Why: a ReLU that never fires on the calibration photos (the packaged model has one, a
    channel-attention squeeze) would get a ~1e-8 scale, putting the next convolution's
    requantization scale (~1e4) beyond what XNNPACK accepts (< 256): LiteRT then refuses the
    whole model ("failed to create XNNPACK runtime"). Zeros are exact in any range.

    With uint8 I/O the input and output ranges are 0..255 whatever calibration saw: scale 1 and
    zero point 0 make the uint8 values the pixels (the output saturates, as the pixels clip).
    """
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    if io == "uint8":
        for subgraph in model.subgraphs:
            for index in (*subgraph.inputs, *subgraph.outputs):
                subgraph.tensors[index].quantization.min = np.zeros(1, np.float32)
                subgraph.tensors[index].quantization.max = np.full(1, 255.0, np.float32)
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            q = tensor.quantization
            calibrated = q is not None and q.min is not None and len(q.min) > 0
            if calibrated and max(np.max(np.abs(q.min)), np.max(np.abs(q.max))) < 1e-6:
                q.max = np.ones_like(np.asarray(q.max, np.float32))
    dtype = tf.uint8 if io == "uint8" else tf.float32
    # Float I/O keeps the ends (as OpenVINO's int8 does) and the down path in float; uint8 I/O
    # promises no float tensor at all.
    keep = float_nodes(model) if io == "float32" else None
    flatbuffer = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return mlir_quantize(
        flatbuffer, input_data_type=dtype, output_data_type=dtype, denylisted_nodes=keep
    )


def float_nodes(model: Any) -> list[str]:
    """Output tensor names of the operators full int8 leaves in float in ``model``, a
    flatbuffer's object form: the first :data:`base.KEEP_FIRST` and last :data:`base.KEEP_LAST`
    convolutions (its operators run in topological order, and every convolution lies between
    the bicubic upsampling and add_mean), and the whole down path (:data:`DOWN_PREFIX`: its
    convolutions, LeakyReLUs and pads).

    Why (Set5 ×4 task PSNR against Keras, :func:`verification.task_psnr`): the packaged 8 × 8
    model lost 0.106 dB quantized whole and 0.051 with these in float; a 16 × 8 model (issue
    #23's runs) 0.216 whole, 0.149 with the ends alone in float, 0.090 with its down path
    too, and still 0.15 with only the down path's convolutions, or only its LeakyReLUs, in
    float."""
    from tensorflow.lite.python import schema_py_generated as schema

    (subgraph,) = model.subgraphs
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    names = [subgraph.tensors[op.outputs[0]].name.decode() for op in subgraph.operators]
    convs = [
        name
        for name, op in zip(names, subgraph.operators, strict=True)
        if codes[op.opcodeIndex] == schema.BuiltinOperator.CONV_2D
    ]
    ends = convs[: base.KEEP_FIRST] + convs[-base.KEEP_LAST :]
    return ends + [name for name in names if name.startswith(DOWN_PREFIX) and name not in ends]


def litert_runner(path: str | os.PathLike, threads: int | None = None) -> base.Runner:
    """A LiteRT interpreter (XNNPACK on, ``threads`` threads, default all CPUs) of the
    ``.tflite`` file at ``path`` as a :data:`base.Runner`: float32 NHWC on 0..255 in, float32
    ``sr`` out. The input is resized (and tensors reallocated) whenever its shape changes. A
    uint8-I/O model gets the input rounded to uint8 pixels and returns its uint8 pixels as
    float32.
    """
    litert = base.require(*_LITERT, purpose="running TFLite")
    # LiteRT prints a notice when it applies XNNPACK; hidden like TensorFlow's own logs.
    quiet = without_tensorflow_log_lines() if tensorflow_logs_hidden() else nullcontext()
    with quiet:
        interpreter = litert.Interpreter(
            model_path=str(path), num_threads=threads or os.cpu_count()
        )
    input_index = interpreter.get_input_details()[0]["index"]
    integer = interpreter.get_input_details()[0]["dtype"] == np.uint8
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
        if integer:
            images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
        interpreter.set_tensor(input_index, images)
        interpreter.invoke()
        return interpreter.get_tensor(output_index).astype(np.float32)

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


def io_contract(scale: int, quantization: str, io_type: str = "float32") -> dict:
    """The ``io`` entry of the metadata of a ×``scale`` ``.tflite`` artifact."""
    io = base.image_io(scale, INPUT_NAME, OUTPUT_NAME)
    io["input"]["shape_signature"] = [-1, -1, -1, 3]
    quantized = QUANTIZED[quantization]
    if io_type == "uint8":
        pixels = "the pixels (quantization scale 1, zero point 0)"
        io["input"].update(dtype="uint8", range=f"0..255, {pixels}")
        io["output"].update(dtype="uint8", range=f"0..255, {pixels}")
        io["pixels"] = "the output is the pixels: clipped and rounded inside the model"
        quantized = quantized.replace(
            "float32 input and output, quantized and dequantized inside the model",
            "uint8 input and output, requantized to and from int8 inside the model",
        )
    return {
        "signature": "serving_default",
        **io,
        "quantization": quantization,
        "quantized": quantized,
        "metadata_stored_at": f"flatbuffer metadata entry {METADATA_NAME!r} (JSON bytes)",
    }


def embed(path: str | os.PathLike, report: reporting.Report) -> None:
    """Appends ``report`` as strict-JSON bytes to the metadata list of the ``.tflite`` file at
    ``path`` (entry :data:`METADATA_NAME`). The file is replaced by a rename: an interpreter
    that has it mapped keeps reading the bytes it verified."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    path = Path(path)
    model = flatbuffer_utils.convert_bytearray_to_object(path.read_bytes())
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(report.to_json().encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    temp = path.with_name(f"{path.name}.metadata")
    temp.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    os.replace(temp, path)


def embedded_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The side-car fields embedded in the ``.tflite`` file at ``path`` (:func:`embed`)."""
    import json

    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == METADATA_NAME:
            return json.loads(bytes(model.buffers[entry.buffer].data))
    raise base.ExportError(f"{path}: no {METADATA_NAME!r} metadata entry")


def export_tflite(
    model: Any,
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    quantization: str = "none",
    io: str = "float32",
    calibration_data: Sequence[str | os.PathLike] = (),
    threads: int | None = None,
    timing_runs: int = 10,
) -> reporting.Report:
    """Writes ``model`` (a ``.keras`` path, ``"default"`` or a :class:`base.Source`) as TFLite at
    ``output``, verified in LiteRT against Keras (the floor of the quantization's precision)
    and timed; returns the report (also written beside it as ``F.tflite.json``).

    ``io``: ``uint8`` (with ``int8``) for uint8 pixels in and out, verified against Keras's
    pixels (:func:`drn_tf.serving.to_pixels`).
    ``calibration_data``: folders of photos for ``int8`` (default: the bundled calibration set,
    :func:`photo_sets.calibration_images`).
    ``threads``: LiteRT threads for verification and timing (default: all CPUs).
    """
    if quantization not in QUANTIZATIONS:
        raise base.ExportError(
            f"--quantization {quantization!r}: use one of {', '.join(QUANTIZATIONS)}"
        )
    if io not in IO_TYPES:
        raise base.ExportError(f"--io {io!r}: use one of {', '.join(IO_TYPES)}")
    if io != "float32" and quantization != "int8":
        raise base.ExportError(f"--io {io} needs --quantization int8 (full integer)")
    if calibration_data and quantization != "int8":
        raise base.ExportError("--calibration-data is only used with --quantization int8")
    if threads is not None and threads < 1:
        raise base.ExportError(f"--threads {threads}: must be at least 1")
    staging.check_destination(output, overwrite)  # fail before the slow part
    base.require(*_LITERT, purpose="TFLite export")
    source = model if isinstance(model, base.Source) else base.load_source(model)
    scale = source.model.scale
    notes = [f"runtime: ai_edge_litert Interpreter, XNNPACK, {threads or os.cpu_count()} threads"]
    calibration = []
    if quantization == "int8":
        calibration = photo_sets.calibration_images(calibration_data, scale)
        folders = ", ".join(map(str, calibration_data)) or "the bundled calibration set"
        size = "x".join(map(str, calibration[0].shape[1:3]))
        notes.append(f"int8 calibration: {len(calibration)} LR crops of {size} from {folders}")
    if io == "uint8":
        notes.append("uint8 input and output, the pixels: verified against Keras's pixels")
    with staging.staged(output, overwrite) as temp:
        int8 = f", quantizing int8 ({len(calibration)} crops)" if calibration else ""
        base.progress(f"converting to TFLite{int8}")
        Path(temp).write_bytes(to_tflite(source.model, quantization, calibration, io))
        return verification.finish(
            format="tflite",
            source=source,
            staged_path=temp,
            output=output,
            runner=litert_runner(temp, threads),
            precision=QUANTIZATIONS[quantization],
            io=io_contract(scale, quantization, io),
            pixels=io == "uint8",
            packages=PACKAGES,
            timing_runs=timing_runs,
            notes=notes,
            embed=lambda report: embed(temp, report),
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
    io: str = setting(
        "float32",
        "Input and output type: float32, or uint8 pixels (with --quantization int8).",
        choices=IO_TYPES,
    )
    calibration_data: list[str] = setting(
        [],
        "Folders of photos to calibrate int8 on (default: the bundled calibration set).",
    )
    threads: int | None = setting(None, "LiteRT threads (default: all CPUs).")
    overwrite: bool = setting(False, "Replace an existing artifact.")
    timing_runs: int = setting(10, "Timed runs for the latency (0: no timing).")


def main(argv: list[str] | None = None, prog: str = "python -m export.tflite") -> int:
    """``python -m export.tflite`` (also ``drn-tf export tflite``): returns the exit status."""
    return base.command(prog, Flags, export_tflite, argv)


if __name__ == "__main__":
    sys.exit(main())
