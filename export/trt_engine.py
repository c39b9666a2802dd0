"""Route 2 of :mod:`export.trt`: the TensorRT-ready ONNX and the engine built from it.

:func:`tensorrt_onnx` writes the ONNX (:func:`export.onnx.to_onnx`, and for int8
:func:`quantize_int8`) using only operators TensorRT's ONNX parser supports
(:data:`TENSORRT_ONNX_OPS`); :func:`build_engine` turns it into a serialized engine with one
optimization profile (``--min-shape``/``--opt-shape``/``--max-shape``, :func:`parse_shape`);
:class:`EngineRunner` runs one. The engine half needs no TensorFlow (:mod:`export.trt_gpu_check`).

TensorRT versions: 10.x and 11.x. Every precision is a *strongly typed* network
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``, in both), so the ONNX decides the types and no
precision builder flag is used (TensorRT 11 removed ``BuilderFlag.FP16``/``INT8`` and the
implicit int8 calibrators):

- fp32: the plain ONNX; TF32 is switched off where the flag exists, so fp32 means fp32;
- fp16: float16 weights and tensors with float32 inputs/outputs (``Cast`` at both ends);
- int8: explicit ``QuantizeLinear``/``DequantizeLinear`` pairs on the input and weights of
  every feature ``Conv`` (symmetric int8, zero points 0, per-channel weights, float biases),
  calibrated by onnxruntime's ``quantize_static`` on real photos (``--calibration-data``,
  required). The RGB-facing convolutions (3 input or output channels: bicubic upsampling,
  mean shifts, head, tail) and all other layers stay float32: they carry the image's whole
  0..255 range and cost little. Measured on the packaged model (Set5 ×4 Y-PSNR against fp32,
  calibrated on Set14): all convolutions int8 −0.19 dB, RGB-facing ones float −0.06 dB; the
  bundled sample alone as calibration −2.1 / −0.5 dB (its brightest pixel is 209), hence
  required.

The engine's I/O is that of :func:`export.onnx.io_contract`: float32 NHWC on 0..255 in, float32
out, dynamic N/H/W within the profile.
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export import base, photo_sets
from export import onnx as onnx_export
from export.trt_routes import load_cudart

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_SHAPES = ("1x16x16x3", "1x128x128x3", "1x512x512x3")
Shape = tuple[int, int, int, int]


def _listed_ops(name: str) -> frozenset[str]:
    """The op types listed in the text file ``name`` beside this module (``#`` comments)."""
    lines = Path(__file__).with_name(name).read_text().splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


#: Operators TensorRT's ONNX parser supports (``tensorrt_onnx_ops.txt``: the "Y" rows of
#: onnx/onnx-tensorrt docs/operators.md, release 10.1 GA, "TensorRT 10.0 supports operators in
#: the inclusive range of opset 9 to opset 20"). Restrictions that concern this model:
#: QuantizeLinear/DequantizeLinear zero points must be 0 and the quantized type INT8 (or
#: FP8/INT4); Slice ``axes`` must be an initializer.
TENSORRT_ONNX_OPS = _listed_ops("tensorrt_onnx_ops.txt")


NEEDS_CALIBRATION = (
    "--precision int8 needs --calibration-data: folders of varied photos like those to be "
    "upscaled (the bundled sample alone is too narrow: Set5 x4 PSNR fell 0.5 dB)"
)


# --- the profile ---------------------------------------------------------------------------


def parse_shape(text: str, flag: str = "shape") -> Shape:
    """``"1x128x128x3"`` → ``(1, 128, 128, 3)``: an NHWC shape with 3 channels."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 4 or shape[3] != 3 or min(shape) < 1:
        raise base.ExportError(f"{flag} {text!r}: expected NxHxWx3 with positive sizes")
    return shape  # type: ignore[return-value]


def _within(low: Sequence[int], shape: Sequence[int], high: Sequence[int]) -> bool:
    return all(a <= b <= c for a, b, c in zip(low, shape, high, strict=True))


def check_shapes(min_shape: Shape, opt_shape: Shape, max_shape: Shape) -> None:
    """Raises :class:`base.ExportError` unless min ≤ opt ≤ max in every dimension."""
    if not _within(min_shape, opt_shape, max_shape):
        raise base.ExportError(
            f"shape range: need min <= opt <= max in every dimension, got "
            f"{min_shape}, {opt_shape}, {max_shape}"
        )


def profile_shapes(
    min_shape: str | Shape, opt_shape: str | Shape, max_shape: str | Shape
) -> list[Shape]:
    """The optimization profile ``[min, opt, max]`` from shapes or ``--min-shape``-style texts
    (``"1x16x16x3"``, :func:`parse_shape`); raises :class:`base.ExportError` naming the flag of a
    malformed one, or unless min ≤ opt ≤ max in every dimension (:func:`check_shapes`)."""
    shapes = [
        parse_shape(shape, f"--{name}-shape") if isinstance(shape, str) else tuple(shape)
        for shape, name in zip(
            (min_shape, opt_shape, max_shape), ("min", "opt", "max"), strict=True
        )
    ]
    check_shapes(*shapes)
    return shapes  # type: ignore[return-value]


def check_profile_covers(shapes: Sequence[Shape], scale: int, timing: bool) -> None:
    """The engine is verified on :func:`photo_sets.probe_images` and timed on
    :data:`base.TIMING_SIZE`: the profile must admit those inputs."""
    needed = [images.shape for _, images in photo_sets.probe_images(scale)]
    needed += [(1, *base.TIMING_SIZE, 3)] if timing else []
    low, high = shapes[0], shapes[2]
    outside = [s for s in needed if not _within(low, s, high)]
    if outside:
        raise base.ExportError(
            f"--min-shape/--max-shape: the profile {low}..{high} must admit the verification "
            f"and timing inputs {sorted(set(map(tuple, needed)))}"
        )


# --- the ONNX ------------------------------------------------------------------------------


def calibration_batches(folders: Sequence[str | os.PathLike], scale: int) -> list[dict]:
    """onnxruntime feeds for int8 calibration: ``{"images": float32 (1, 48, 48, 3)}`` on 0..255,
    crops of real photos downscaled ×``scale`` (:func:`photo_sets.calibration_images`)."""
    return [
        {onnx_export.INPUT_NAME: image} for image in photo_sets.calibration_images(folders, scale)
    ]


def quantize_int8(source_onnx: Path, path: Path, batches: list[dict]) -> None:
    """Writes a QDQ int8 copy of ``source_onnx`` that TensorRT accepts: the inputs and weights
    of ``Conv`` nodes quantized, symmetric int8 (zero points 0), per-channel weights, float
    biases; convolutions with 3 (RGB) input or output channels left float."""
    quantization = base.require("onnxruntime.quantization", "onnxruntime", "int8 ONNX")
    onnx = base.require("onnx", purpose="int8 ONNX")
    graph = onnx.load(str(source_onnx)).graph
    shapes = {i.name: i.dims for i in graph.initializer}
    rgb_facing = []
    for node in graph.node:
        if node.op_type == "Conv":
            out_channels, in_per_group = shapes[node.input[1]][:2]
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            if min(out_channels, in_per_group * groups) <= 3:
                rgb_facing.append(node.name)

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(batches)

        def get_next(self):
            return next(self.feeds, None)

    root = logging.getLogger()  # quantize_static logs a pre-processing tip on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantization.quantize_static(
            str(source_onnx),
            str(path),
            Reader(),
            quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=rgb_facing,
            per_channel=True,
            activation_type=quantization.QuantType.QInt8,
            weight_type=quantization.QuantType.QInt8,
            # TensorRT: zero points must be 0; it has no int32 DequantizeLinear for biases.
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
            },
        )
    finally:
        root.setLevel(level)


def tensorrt_onnx(
    model: Any,
    path: str | os.PathLike,
    precision: str = "fp32",
    batches: list[dict] | None = None,
    opset: int = 17,
) -> Path:
    """Writes the ONNX that route 2 builds its engine from (see the module docstring) for
    ``model`` (a DRN) at ``path``; returns the path. int8 calibrates on ``batches``
    (:func:`calibration_batches`), required for int8."""
    if precision not in PRECISIONS:
        raise base.ExportError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    path = Path(path)
    if precision != "int8":
        return onnx_export.to_onnx(model, path, opset=opset, fp16=precision == "fp16")
    if not batches:
        raise base.ExportError(NEEDS_CALIBRATION)
    with tempfile.TemporaryDirectory() as folder:
        fp32 = onnx_export.to_onnx(model, Path(folder) / "fp32.onnx", opset=opset)
        quantize_int8(fp32, path, batches)
    return path


# --- the engine (no TensorFlow needed) -----------------------------------------------------


def _tensorrt(purpose: str):
    try:
        import tensorrt
    except ImportError as error:
        raise base.MissingDependency(
            f"{purpose} needs the tensorrt Python package ({error}); it is not an export extra: "
            "pip install tensorrt on a CUDA host"
        ) from error
    return tensorrt


def build_engine(onnx_path: str | os.PathLike, shapes: Sequence[Shape]) -> bytes:
    """Builds a serialized TensorRT engine (TensorRT 10 or 11) from ``onnx_path`` with one
    optimization profile ``shapes = (min, opt, max)`` on the ``images`` input; needs a GPU."""
    trt = _tensorrt("building a TensorRT engine")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise base.ExportError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    if hasattr(trt.BuilderFlag, "TF32"):  # on by default in TensorRT 10: fp32 layers in tf32
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, *shapes)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise base.ExportError(f"{onnx_path}: TensorRT could not build an engine (log above)")
    return bytes(serialized)


class _Cuda:
    """The few CUDA runtime calls an engine run needs, through ctypes (no extra package)."""

    H2D, D2H = 1, 2

    def __init__(self):
        self.lib = load_cudart()
        if self.lib is None:
            raise base.MissingDependency(
                "running a TensorRT engine needs the CUDA runtime library libcudart "
                "(pip install nvidia-cuda-runtime-cu12, or a CUDA install)"
            )
        self.lib.cudaGetErrorString.restype = ctypes.c_char_p

    def check(self, status: int, what: str) -> None:
        if status != 0:
            message = self.lib.cudaGetErrorString(status).decode()
            raise base.ExportError(f"CUDA {what} failed: {message}")

    def malloc(self, size: int) -> int:
        pointer = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(pointer), ctypes.c_size_t(size)), "malloc")
        return pointer.value

    def free(self, pointer: int) -> None:
        self.lib.cudaFree(ctypes.c_void_p(pointer))

    def copy(self, destination: int, source: int, size: int, kind: int) -> None:
        status = self.lib.cudaMemcpy(
            ctypes.c_void_p(destination), ctypes.c_void_p(source), ctypes.c_size_t(size), kind
        )
        self.check(status, "memcpy")

    def stream(self) -> int:
        stream = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(stream)), "stream creation")
        return stream.value

    def synchronize(self, stream: int) -> None:
        self.check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "synchronize")


class EngineRunner:
    """A deserialized engine as a :data:`base.Runner`: float32 NHWC on 0..255 in, float32 out.

    Each call copies the batch to the GPU, runs the engine (``execute_async_v3``, TensorRT 10
    and 11) and copies the result back; device buffers are kept and grown as needed.
    """

    def __init__(self, engine: bytes):
        trt = _tensorrt("running a TensorRT engine")
        self.cuda = _Cuda()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine)
        if self.engine is None:
            raise base.ExportError("TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        modes = {name: self.engine.get_tensor_mode(name) for name in names}
        self.input = next(n for n in names if modes[n] == trt.TensorIOMode.INPUT)
        self.output = next(n for n in names if modes[n] == trt.TensorIOMode.OUTPUT)
        for name in (self.input, self.output):
            if self.engine.get_tensor_dtype(name) != trt.float32:
                raise base.ExportError(f"engine tensor {name!r} is not float32")
        self.stream = self.cuda.stream()
        self.buffers: dict[str, tuple[int, int]] = {}

    def _buffer(self, name: str, size: int) -> int:
        pointer, capacity = self.buffers.get(name, (0, 0))
        if capacity < size:
            if pointer:
                self.cuda.free(pointer)
            pointer, capacity = self.cuda.malloc(size), size
            self.buffers[name] = (pointer, capacity)
            self.context.set_tensor_address(name, pointer)
        return pointer

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, np.float32)
        if not self.context.set_input_shape(self.input, images.shape):
            raise base.ExportError(f"input shape {images.shape} is outside the engine's profile")
        output = np.empty(tuple(self.context.get_tensor_shape(self.output)), np.float32)
        source = self._buffer(self.input, images.nbytes)
        result = self._buffer(self.output, output.nbytes)
        self.cuda.copy(source, images.ctypes.data, images.nbytes, _Cuda.H2D)
        if not self.context.execute_async_v3(self.stream):
            raise base.ExportError("TensorRT engine execution failed")
        self.cuda.synchronize(self.stream)
        self.cuda.copy(output.ctypes.data, result, output.nbytes, _Cuda.D2H)
        return output

    def __del__(self):
        for pointer, _ in getattr(self, "buffers", {}).values():
            self.cuda.free(pointer)
