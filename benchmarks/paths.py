"""The ways of running a DRN model that the benchmarks compare ("paths"), shared by
:mod:`benchmarks.latency` and :mod:`benchmarks.quality`.

A path is built in two steps so that each can run in its own process: :func:`prepare` (in the
parent, which has TensorFlow) writes the artifact a path needs (a TFLite file, an ONNX file, an
OpenVINO IR, a SavedModel, a PyTorch state dict) with the exporters of :mod:`export`, cached by
the model file's SHA-256; :func:`make_runner` (in a worker) loads it in its own runtime as an
:data:`export.base.Runner` (float32 NHWC on 0..255 in, float32 top SR level out).

Nothing here imports TensorFlow, torch or a runtime at module level.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import kernels
from drn_tf import cpu
from export import base, photo_sets, staging


@dataclasses.dataclass(frozen=True)
class PathInfo:
    """A way of running the model: ``compute`` is the arithmetic precision of its convolutions
    (fp32, bf16 or int8: whose GEMM peak it is compared with), ``floor`` the precision whose
    agreement floor with Keras fp32 applies (:data:`export.base.FLOORS_DB`)."""

    name: str
    label: str
    compute: str
    floor: str
    runtime: str


PATHS = {
    p.name: p
    for p in (
        PathInfo("keras_eager", "Keras eager", "fp32", "fp32", "tensorflow"),
        PathInfo("tf_function", "Keras tf.function", "fp32", "fp32", "tensorflow"),
        PathInfo("xla", "Keras tf.function, XLA", "fp32", "fp32", "tensorflow"),
        PathInfo("mixed_bfloat16", "Keras tf.function, mixed_bfloat16", "bf16", "bf16",
                 "tensorflow"),
        PathInfo("mixed_bfloat16_xla", "Keras tf.function, mixed_bfloat16, XLA", "bf16", "bf16",
                 "tensorflow"),
        PathInfo("saved_model", "SavedModel serving_default", "fp32", "fp32", "tensorflow"),
        PathInfo("tflite_fp32", "TFLite fp32 (LiteRT, XNNPACK)", "fp32", "fp32", "ai_edge_litert"),
        PathInfo("tflite_fp16", "TFLite fp16 weights (computes fp32)", "fp32", "fp16",
                 "ai_edge_litert"),
        PathInfo("tflite_dynamic", "TFLite dynamic-range int8", "int8", "int8", "ai_edge_litert"),
        PathInfo("tflite_int8", "TFLite full int8", "int8", "int8", "ai_edge_litert"),
        PathInfo("onnxruntime", "ONNX Runtime fp32", "fp32", "fp32", "onnxruntime"),
        PathInfo("openvino_fp32", "OpenVINO fp32", "fp32", "fp32", "openvino"),
        PathInfo("openvino_bf16", "OpenVINO bf16", "bf16", "bf16", "openvino"),
        PathInfo("openvino_int8", "OpenVINO int8 (NNCF)", "int8", "int8", "openvino"),
        PathInfo("tensorrt", "TensorRT fp32 (GPU)", "gpu", "fp32", "tensorrt"),
        PathInfo("torch_fp32", "PyTorch eager fp32 (authors' code)", "fp32", "fp32", "torch"),
        PathInfo("torch_channels_last", "PyTorch fp32 channels_last", "fp32", "fp32", "torch"),
        PathInfo("torch_bf16", "PyTorch bf16 autocast, channels_last", "bf16", "bf16", "torch"),
        PathInfo("torch_compiled", "PyTorch fp32 channels_last, torch.compile", "fp32", "fp32",
                 "torch"),
        PathInfo("torch_bf16_compiled", "PyTorch bf16 autocast, channels_last, torch.compile",
                 "bf16", "bf16", "torch"),
    )
}  # fmt: skip

TFLITE = {"tflite_fp32": "none", "tflite_fp16": "float16", "tflite_dynamic": "dynamic",
          "tflite_int8": "int8"}  # fmt: skip
OPENVINO = {"openvino_fp32": "fp32", "openvino_bf16": "bf16", "openvino_int8": "int8"}
TORCH = {
    "torch_fp32": "fp32",
    "torch_channels_last": "channels_last",
    "torch_bf16": "bf16",
    "torch_compiled": "channels_last_compiled",
    "torch_bf16_compiled": "bf16_compiled",
}


class Skipped(Exception):
    """A path that cannot run here (a runtime not installed, no GPU): the reason, one line."""


# --- models --------------------------------------------------------------------------------


def conv_macs(model: Any, height: int, width: int) -> int:
    """Multiply-accumulates of upscaling a ``(1, height, width, 3)`` input with ``model`` as
    every drn-tf path computes it (:func:`drn_tf.serving.super_resolve`: the top level only,
    projections folded), counted exactly from the traced graph's convolutions: ``kh·kw·C_in``
    per output element of each ``Conv2D`` (the bicubic filter, mean shifts, every RCAB,
    channel-attention 1×1 and stride-2 conv included; biases, activations, pooling and the
    pixel shuffle are not multiply-accumulates)."""
    from drn_tf import serving

    return _traced_macs(lambda x: serving.super_resolve(model, x), height, width)


def pyramid_macs(model: Any, height: int, width: int) -> int:
    """As :func:`conv_macs`, of the whole primal network as the authors' code runs it (every
    level's output, projections unfolded): what the PyTorch paths compute."""
    network = getattr(model, "primal", model)
    return _traced_macs(lambda x: network(x, training=False), height, width)


def _traced_macs(function: Any, height: int, width: int) -> int:
    import tensorflow as tf

    spec = tf.TensorSpec((1, height, width, 3), tf.float32)
    graph = tf.function(function).get_concrete_function(spec).graph
    total = 0
    for g in [graph, *(f.graph for f in graph._functions.values())]:
        for op in g.get_operations():
            if op.type == "Conv2D":
                kh, kw, c_in, _ = op.inputs[1].shape.as_list()
                total += kh * kw * c_in * int(np.prod(op.outputs[0].shape.as_list()))
    return total


# --- CPU ----------------------------------------------------------------------------------

#: The flags that decide which precisions run natively.
CPU_FLAGS = cpu.FEATURES


def cpu_info(cpuinfo: str | os.PathLike | None = None) -> dict[str, Any]:
    """The CPU's model name, logical CPUs, and which of :data:`CPU_FLAGS` it has (as
    :func:`drn_tf.cpu.cpu_flags`: those above ``ONEDNN_MAX_CPU_ISA`` count as absent)."""
    have = cpu.cpu_flags(cpuinfo)
    return {
        "model": cpu.cpu_model(cpuinfo),
        "cpus": os.cpu_count(),
        "flags": {flag: flag in have for flag in CPU_FLAGS},
    }


def ran_as(runtime: str, label: str, compute: str, flags: dict[str, bool]) -> tuple[str, str]:
    """``(label, compute)`` of a path labelled ``label`` that computes in ``compute`` through
    ``runtime``, as it runs on a CPU with ``flags`` (those of :func:`cpu_info`): bf16 on a CPU
    without native bf16 (:func:`drn_tf.cpu.native_bf16`) is not labelled bf16. OpenVINO then
    drops the bf16 hint and computes float32 (``export.openvino``); TensorFlow and PyTorch keep
    bf16 tensors and convert them to float32 to compute, op by op ("bf16 emulated", no bf16
    GEMM peak)."""
    if compute != "bf16" or cpu.native_bf16(flag for flag, has in flags.items() if has):
        return label, compute
    if runtime == "openvino":
        return f"{label} hint (no native bf16: ran fp32)", "fp32"
    return f"{label} (no native bf16: emulated)", "bf16 emulated"


# --- artifacts (parent process) -----------------------------------------------------------


def artifact_folder(work_dir: str | os.PathLike, source: base.Source) -> Path:
    """Where the artifacts of ``source`` are cached: one folder per model file content and
    version of the code that traces it (layers, models, serving function, exporters)."""
    import hashlib

    code = hashlib.sha256(source.sha256.encode())
    root = Path(__file__).resolve().parents[1]
    for name in ("drn_tf/layers.py", "drn_tf/models.py", "drn_tf/serving.py", "export/*.py"):
        for path in sorted(root.glob(name)):
            code.update(path.read_bytes())
    return Path(work_dir) / code.hexdigest()[:16]


def prepare(name: str, source: base.Source, folder: Path, torch_weights: Path | None) -> dict:
    """Writes (or finds, cached in ``folder``) what path ``name`` needs; returns the worker's
    spec: ``{"path": name, "artifact": str, ...}``. Raises :class:`Skipped` for a path that
    cannot run here and :class:`export.base.MissingDependency` for a missing package.

    ``torch_weights``: the authors'-format ``.pt`` the model was converted from, if any (the
    PyTorch paths then load that very file; otherwise
    :func:`benchmarks.checkpoints.keras_state_dict` is saved).
    """
    info = PATHS[name]
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"path": name, "artifact": str(source.path)}
    if info.runtime == "tensorflow" and name != "saved_model":
        return spec
    if info.runtime != "tensorflow":
        _require_runtime(info.runtime)
    if TORCH.get(name, "").endswith("_compiled") and not shutil.which(inductor_compiler()):
        raise Skipped(
            f"torch.compile needs a C++ compiler ({inductor_compiler()}) and none is on PATH"
        )
    if name == "saved_model":
        target = folder / "saved_model"
        if not (target / "1").exists():
            from export.saved_model import export_saved_model

            export_saved_model(source, target, version=1, overwrite=True, timing_runs=0)
        spec["artifact"] = str(target / "1")
    elif name in TFLITE:
        spec["artifact"] = str(_cached(folder / f"{name}.tflite", _write_tflite, source, name))
    elif name == "onnxruntime":
        from export.onnx import to_onnx

        spec["artifact"] = str(_cached(folder / "model.onnx", lambda t: to_onnx(source.model, t)))
    elif name in OPENVINO:
        spec["artifact"] = str(_cached(folder / name, _write_openvino, source, name))
    elif name == "tensorrt":
        spec["artifact"] = str(_cached(folder / "model.engine", _write_tensorrt, source))
    elif name in TORCH:
        if torch_weights is None:
            torch_weights = _cached(folder / "primal_state.npz", _write_state, source)
        spec["artifact"] = str(torch_weights)
    return spec


def inductor_compiler() -> str:
    """The C++ compiler torch.compile's inductor runs on Linux (``$CXX``, else ``g++``)."""
    return os.environ.get("CXX", "g++")


def _require_runtime(runtime: str) -> None:
    if runtime == "tensorrt":
        from export.trt_routes import NoRoute, choose_route

        try:
            choose_route()
        except NoRoute:
            raise Skipped(
                "no TensorRT here (needs a CUDA GPU and tensorrt >= 10, or TF-TRT; "
                "see python -m export.trt)"
            ) from None
        return
    package = {"ai_edge_litert": "ai-edge-litert", "torch": "torch"}.get(runtime, runtime)
    try:
        __import__(runtime)
    except ImportError:
        extra = "compare" if runtime == "torch" else "export"
        raise Skipped(f"{package} is not installed (pip install '.[{extra}]')") from None


def _cached(target: Path, write, *args) -> Path:
    """``target`` if it exists, else written by ``write(temp, *args)`` and renamed into place."""
    if not target.exists():
        with staging.staged(target, overwrite=True) as temp:
            write(temp, *args)
    return target


def _write_tflite(temp: Path, source: base.Source, name: str) -> None:
    from export import tflite

    quantization = TFLITE[name]
    calibration = (
        photo_sets.calibration_images((), source.model.scale) if name == "tflite_int8" else ()
    )
    temp.write_bytes(tflite.to_tflite(source.model, quantization, calibration))


def _write_openvino(temp: Path, source: base.Source, name: str) -> None:
    from export import openvino

    precision = OPENVINO[name]
    ov_model = openvino.to_openvino(source.model)
    if precision == "int8":
        ov_model = openvino.quantize(
            ov_model, photo_sets.calibration_images((), source.model.scale)
        )
    temp.mkdir()
    openvino.save(ov_model, temp, openvino.HINTS[precision])


def _write_tensorrt(temp: Path, source: base.Source) -> None:
    from export.trt import export_trt

    export_trt(source, temp, overwrite=True, timing_runs=0)


def _write_state(temp: Path, source: base.Source) -> None:
    with open(temp, "wb") as file:  # np.savez would append .npz to a temp name
        from benchmarks.checkpoints import keras_state_dict  # imports Keras

        np.savez(file, **keras_state_dict(source.model))


# --- runners (worker process) -------------------------------------------------------------


def make_runner(spec: dict, threads: int | None = None) -> base.Runner:
    """The runner of the path in ``spec`` (from :func:`prepare`), loaded in this process.
    Runners of OpenVINO and PyTorch have ``kernels(image)``: the kernels a run used
    (:mod:`benchmarks.kernels`).

    ``threads``: threads for the runtimes that take a number (LiteRT, onnxruntime, PyTorch;
    default all CPUs); TensorFlow and OpenVINO use their own defaults (all cores).
    """
    name, artifact = spec["path"], spec["artifact"]
    threads = threads or os.cpu_count()
    if name in TORCH:
        runner = _torch_runner(artifact, TORCH[name], threads)
        runner.kernels = lambda image: kernels.onednn_kernels(lambda: runner(image))
        return runner
    if name in TFLITE:
        from export.tflite import litert_runner

        return litert_runner(artifact, threads)
    if name == "onnxruntime":
        from export.onnx import onnxruntime_runner

        return onnxruntime_runner(artifact, threads)
    if name in OPENVINO:
        from export.openvino import openvino_runner

        runner = openvino_runner(artifact)  # compile_artifact's default hint, as deployed
        runner.kernels = lambda _: kernels.openvino_kernels(runner.compiled)
        return runner
    if name == "tensorrt":
        from export.trt_engine import EngineRunner

        return EngineRunner(Path(artifact).read_bytes())
    return _keras_runner(name, artifact)


def _keras_runner(name: str, artifact: str) -> base.Runner:
    import tensorflow as tf

    from drn_tf import serving

    if name == "saved_model":
        signature = tf.saved_model.load(artifact).signatures["serving_default"]
        return lambda images: signature(images=tf.constant(images, tf.float32))["sr"].numpy()
    from drn_tf.inference import bfloat16_primal
    from drn_tf.loading import load_model

    model = load_model(artifact)
    if name.startswith("mixed_bfloat16"):
        model = bfloat16_primal(model)  # the copy `drn-tf upscale --precision bfloat16` runs
    if name == "keras_eager":
        return lambda images: serving.super_resolve(model, tf.constant(images)).numpy()

    xla = name.endswith("xla")

    @tf.function(input_signature=[serving.FLOAT_SPEC], reduce_retracing=True, jit_compile=xla)
    def run(images):
        return serving.super_resolve(model, images)

    return lambda images: run(tf.constant(images, tf.float32)).numpy()


def _torch_runner(artifact: str, setting: str, threads: int) -> base.Runner:
    import torch

    from benchmarks import torch_drn

    torch.set_num_threads(threads)
    return torch_drn.runner(torch_drn.load(artifact), setting)


def available(names: Sequence[str]) -> list[str]:
    """``names`` checked against :data:`PATHS`; raises ``ValueError`` naming an unknown one."""
    unknown = [n for n in names if n not in PATHS]
    if unknown:
        raise ValueError(f"--paths: unknown {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    return list(names)
