"""TensorRT export: ``python -m export.trt --model M --output PATH [--precision fp32|fp16|int8]
[--calibration-data DIR ...] [--min-shape 1x16x16x3 --opt-shape 1x128x128x3
--max-shape 1x512x512x3] [--onnx-only] [--overwrite]``.

The route is chosen automatically and named in the output:

1. **tf-trt** — the running TensorFlow was built with TensorRT (NVIDIA's TensorFlow
   containers; no TensorFlow ≥ 2.18 wheel is) and sees a GPU: ``TrtGraphConverterV2`` writes a
   TF-TRT SavedModel folder (signature ``serving_default``: ``images`` → ``sr``) that TF Serving
   loads.
2. **onnx-tensorrt** — the ``tensorrt`` Python package (≥ 10) imports and a CUDA GPU is present
   (probed through the CUDA runtime or ``nvidia-smi``, not through the import, which succeeds
   without a GPU): the model goes to ONNX (:func:`export.onnx.to_onnx`), the ONNX is verified in
   onnxruntime, and a serialized TensorRT engine file is built with one optimization profile
   for the shape range and verified in the TensorRT runtime.
3. otherwise exit status 2 with one line naming what is missing.

``--onnx-only`` stops route 2 at its ONNX (verified in onnxruntime on the CPU), for building the
engine later on a GPU host with :mod:`export.trt_gpu_check` (needs no TensorFlow).

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
import ctypes.util
import dataclasses
import glob
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drn_tf.config import UsageError, run_command, setting
from export import base
from export import onnx as onnx_export

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_SHAPES = ("1x16x16x3", "1x128x128x3", "1x512x512x3")
TF_TRT, ONNX_TENSORRT = "tf-trt", "onnx-tensorrt"
Shape = tuple[int, int, int, int]

#: Operators TensorRT's ONNX parser supports ("Y" rows of onnx/onnx-tensorrt docs/operators.md,
#: release 10.1 GA, "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset
#: 20"). Restrictions that concern this model: QuantizeLinear/DequantizeLinear zero points must
#: be 0 and the quantized type INT8 (or FP8/INT4); Slice ``axes`` must be an initializer.
TENSORRT_ONNX_OPS = frozenset(
    [
        "Abs",
        "Acos",
        "Acosh",
        "Add",
        "And",
        "ArgMax",
        "ArgMin",
        "Asin",
        "Asinh",
        "Atan",
        "Atanh",
        "AveragePool",
        "BatchNormalization",
        "Cast",
        "CastLike",
        "Ceil",
        "Celu",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "ConvTranspose",
        "Cos",
        "Cosh",
        "CumSum",
        "DeformConv",
        "DepthToSpace",
        "DequantizeLinear",
        "Div",
        "Dropout",
        "Einsum",
        "Elu",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "EyeLike",
        "Flatten",
        "Floor",
        "Gather",
        "GatherElements",
        "GatherND",
        "Gelu",
        "Gemm",
        "GlobalAveragePool",
        "GlobalLpPool",
        "GlobalMaxPool",
        "Greater",
        "GreaterOrEqual",
        "GridSample",
        "GroupNormalization",
        "GRU",
        "HardSigmoid",
        "HardSwish",
        "Hardmax",
        "Identity",
        "If",
        "ImageScaler",
        "InstanceNormalization",
        "IsInf",
        "IsNaN",
        "LayerNormalization",
        "LeakyRelu",
        "Less",
        "LessOrEqual",
        "Log",
        "LogSoftmax",
        "Loop",
        "LRN",
        "LSTM",
        "LpNormalization",
        "LpPool",
        "MatMul",
        "Max",
        "MaxPool",
        "Mean",
        "MeanVarianceNormalization",
        "Min",
        "Mish",
        "Mod",
        "Mul",
        "Neg",
        "NonMaxSuppression",
        "NonZero",
        "Not",
        "OneHot",
        "Or",
        "Pad",
        "ParametricSoftplus",
        "Pow",
        "PRelu",
        "QuantizeLinear",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Range",
        "Reciprocal",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceProd",
        "ReduceSum",
        "ReduceSumSquare",
        "Relu",
        "Reshape",
        "Resize",
        "ReverseSequence",
        "RNN",
        "RoiAlign",
        "Round",
        "ScaledTanh",
        "Scan",
        "Scatter",
        "ScatterElements",
        "ScatterND",
        "Selu",
        "Shape",
        "Shrink",
        "Sigmoid",
        "Sign",
        "Sin",
        "Sinh",
        "Size",
        "Slice",
        "Softmax",
        "Softplus",
        "Softsign",
        "SpaceToDepth",
        "Split",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Sum",
        "Tan",
        "Tanh",
        "ThresholdedRelu",
        "Tile",
        "TopK",
        "Transpose",
        "Trilu",
        "Unsqueeze",
        "Upsample",
        "Where",
        "Xor",
    ]
)


NEEDS_CALIBRATION = (
    "--precision int8 needs --calibration-data: folders of varied photos like those to be "
    "upscaled (the bundled sample alone is too narrow: Set5 x4 PSNR fell 0.5 dB)"
)


class NoRoute(Exception):
    """Neither TensorRT route is possible here: exit status 2 with one line (not a
    ``ValueError``, so ``run_command`` does not turn it into status 1)."""


# --- probes --------------------------------------------------------------------------------


def tf_trt_available() -> bool:
    """Whether the running TensorFlow was built with TensorRT, has it enabled, and sees a GPU.

    Uses the build info and ``is_tensorrt_enabled`` only: TF 2.17's
    ``get_loaded_tensorrt_version`` aborts the process when the TensorRT libraries are absent.
    """
    try:
        import tensorflow as tf

        if not tf.sysconfig.get_build_info().get("is_tensorrt_build", False):
            return False
        from tensorflow.python.compiler.tensorrt import trt_convert

        return bool(trt_convert._pywrap_py_utils.is_tensorrt_enabled()) and bool(
            tf.config.list_physical_devices("GPU")
        )
    except Exception:  # noqa: BLE001 - any failure to probe means "not usable"
        return False


def tensorrt_version() -> str | None:
    """The version of the importable ``tensorrt`` package, or None."""
    try:
        import tensorrt
    except Exception:  # noqa: BLE001 - ImportError, or a broken install failing inside its import
        return None
    return str(getattr(tensorrt, "__version__", "0"))


def _load_cudart() -> ctypes.CDLL | None:
    """The CUDA runtime library (a system install or the ``nvidia-cuda-runtime`` wheels), or
    None."""
    names = [ctypes.util.find_library("cudart"), "libcudart.so"]
    names += [f"libcudart.so.{v}" for v in (13, 12, 11.0)]
    site = sysconfig.get_paths()["purelib"]
    names += sorted(glob.glob(f"{site}/nvidia/*/lib/libcudart.so*"), reverse=True)
    names += sorted(glob.glob("/usr/local/cuda*/lib64/libcudart.so*"), reverse=True)
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def cuda_device_count() -> int:
    """How many CUDA GPUs this process can use: ``cudaGetDeviceCount`` when the CUDA runtime
    library loads, else the ``GPU n:`` lines of ``nvidia-smi -L``; 0 when neither finds one."""
    cudart = _load_cudart()
    if cudart is not None:
        count = ctypes.c_int(0)
        return count.value if cudart.cudaGetDeviceCount(ctypes.byref(count)) == 0 else 0
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if listing.returncode != 0:
        return 0
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


def choose_route() -> str:
    """:data:`TF_TRT` or :data:`ONNX_TENSORRT` (see the module docstring); raises
    :class:`NoRoute` naming what is missing for each."""
    if tf_trt_available():
        return TF_TRT
    version = tensorrt_version()
    gpus = cuda_device_count()
    major = int(version.split(".")[0]) if version and version.split(".")[0].isdigit() else 0
    if version and major >= 10 and gpus > 0:
        return ONNX_TENSORRT
    missing = []
    if not version:
        missing.append("the tensorrt Python package (pip install tensorrt on a CUDA host)")
    elif major < 10:
        missing.append(f"tensorrt >= 10 (found {version}: pip install -U tensorrt)")
    if gpus == 0:
        missing.append("a CUDA GPU (none found by the CUDA runtime or nvidia-smi)")
    raise NoRoute(
        "no TensorRT route here: TF-TRT needs a TensorFlow built with TensorRT and a GPU "
        "(NVIDIA's TensorFlow containers; no TensorFlow >= 2.18 wheel has it); ONNX -> TensorRT "
        f"needs {' and '.join(missing)}; --onnx-only writes the TensorRT-ready ONNX without either"
    )


# --- route 2: the ONNX ---------------------------------------------------------------------


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


def calibration_batches(folders: Sequence[str | os.PathLike], scale: int) -> list[dict]:
    """onnxruntime feeds for int8 calibration: ``{"images": float32 (1, 48, 48, 3)}`` on 0..255,
    crops of real photos downscaled ×``scale`` (:func:`base.calibration_images`)."""
    return [{onnx_export.INPUT_NAME: image} for image in base.calibration_images(folders, scale)]


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


# --- route 2: the engine (no TensorFlow needed) --------------------------------------------


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
        self.lib = _load_cudart()
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


# --- route 1: TF-TRT -----------------------------------------------------------------------


def _tf_trt_saved_model(source, folder: Path, precision, batches, shapes) -> base.Runner:
    """Writes a TF-TRT SavedModel of the serving function to ``folder``; returns its runner.

    Not run on any machine of this project (no TensorFlow with TensorRT was available).
    """
    import keras
    import tensorflow as tf
    from tensorflow.python.compiler.tensorrt import trt_convert as tftrt

    from drn_tf import serving

    model = source.model
    with tempfile.TemporaryDirectory() as saved:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serving_default",
            lambda images: {onnx_export.OUTPUT_NAME: serving.super_resolve(model, images)},
            input_signature=[serving.FLOAT_SPEC],
        )
        archive.write_out(saved, verbose=False)
        mode = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}[precision]
        converter = tftrt.TrtGraphConverterV2(
            input_saved_model_dir=saved,
            conversion_params=tftrt.TrtConversionParams(
                precision_mode=mode, use_calibration=precision == "int8"
            ),
            use_dynamic_shape=True,
            dynamic_shape_profile_strategy="Range",
        )
        if precision == "int8":
            converter.convert(calibration_input_fn=lambda: ((b["images"],) for b in batches))
        else:
            converter.convert()
        converter.build(input_fn=lambda: ((np.zeros(s, np.float32),) for s in shapes))
        converter.save(str(folder))
    loaded = tf.saved_model.load(str(folder))
    signature = loaded.signatures["serving_default"]

    def run(images, _keep=loaded):
        return signature(images=tf.constant(images, tf.float32))[onnx_export.OUTPUT_NAME].numpy()

    return run


# --- the export ----------------------------------------------------------------------------


def _check_profile_covers(shapes: Sequence[Shape], scale: int, timing: bool) -> None:
    """The engine is verified on :func:`base.probe_images` and timed on
    :data:`base.TIMING_SIZE`: the profile must admit those inputs."""
    needed = [images.shape for _, images in base.probe_images(scale)]
    needed += [(1, *base.TIMING_SIZE, 3)] if timing else []
    low, high = shapes[0], shapes[2]
    outside = [s for s in needed if not _within(low, s, high)]
    if outside:
        raise base.ExportError(
            f"--min-shape/--max-shape: the profile {low}..{high} must admit the verification "
            f"and timing inputs {sorted(set(map(tuple, needed)))}"
        )


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
) -> base.Report:
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
    shapes = [
        parse_shape(shape, f"--{name}-shape") if isinstance(shape, str) else tuple(shape)
        for shape, name in zip(
            (min_shape, opt_shape, max_shape), ("min", "opt", "max"), strict=True
        )
    ]
    check_shapes(*shapes)
    base.check_destination(output, overwrite)
    route = "onnx-only" if onnx_only else choose_route()
    source = onnx_export.load(model)
    scale = source.model.scale
    if not onnx_only:
        _check_profile_covers(shapes, scale, timing_runs > 0)
    batches = calibration_batches(calibration_data, scale) if precision == "int8" else []
    io = {**onnx_export.io_contract(scale), "profile": {"min": shapes[0], "opt": shapes[1],
                                                       "max": shapes[2]}}  # fmt: skip
    notes = [f"route: {route}"]
    packages = () if route == TF_TRT else ("tensorrt", *onnx_export.PACKAGES)
    with base.staged(output, overwrite) as temp, tempfile.TemporaryDirectory() as work:
        base.progress(f"converting ({route}, {precision})")
        if route == TF_TRT:
            runner = _tf_trt_saved_model(source, temp, precision, batches, shapes)
            format = "tf-trt-saved-model"
            io["signature"] = "serving_default"
        else:
            onnx_path = temp if onnx_only else Path(work) / "model.onnx"
            tensorrt_onnx(source.model, onnx_path, precision, batches)
            onnx_runner = onnx_export.onnxruntime_runner(onnx_path)
            format = "onnx-for-tensorrt"
            if not onnx_only:
                # Check the ONNX on the CPU first: a failure here is cheaper to report.
                records = base.verify(
                    onnx_runner, base.keras_runner(source.model), scale,
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
        return base.finish(
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
