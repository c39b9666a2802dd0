"""OpenVINO export: ``python -m export.openvino --model M --output DIR
[--precision fp32|bf16|int8] [--calibration-data DIR ...] [--io float32|uint8]
[--layout nhwc|nchw] [--overwrite]``.

``DIR`` holds the OpenVINO IR ``model.xml`` + ``model.bin`` and the metadata ``export.json``.
The IR computes :func:`drn_tf.serving.super_resolve`, converted from its ``tf.function`` by
``ov.convert_model`` (standard opset operators only; the bicubic layer is a ``Convolution``
and the pixel shuffle ``DepthToSpace``):

- input ``images``: float32 NHWC ``(N, H, W, 3)`` on 0..255, N, H and W dynamic;
- output ``sr``: float32 NHWC ``(N, s·H, s·W, 3)``, about 0..255 and not clipped; to get the
  pixels of ``drn_tf.upscale``, clip to 0..255, round half to even and cast to uint8
  (:func:`drn_tf.serving.to_pixels`).

``--io uint8`` and ``--layout nchw`` are built into the ``tf.function`` before conversion, as
for ONNX (:func:`export.onnx.serving_function`): uint8 pixels in and out with the pixel step
inside the IR (a ``Round`` half to even and a ``Convert`` of values already in 0..255, so the
pixels are exactly those of the float IR's output passed through
:func:`drn_tf.serving.to_pixels`), verified against Keras's pixels; ``(N, 3, H, W)`` in and
``(N, 3, s·H, s·W)`` out for NCHW.

Precisions (:data:`HINTS`): the weights are float32 in ``fp32`` and ``bf16`` (``ov.save_model``
would compress them to float16 unless told not to); ``bf16`` differs only by the inference
precision hint stored in the IR's ``rt_info`` (``runtime_options/INFERENCE_PRECISION_HINT``).
OpenVINO 2026.4's CPU plugin does not apply that stored hint by itself, and it computes in bf16
on CPUs with AMX or AVX-512 BF16 unless told ``f32``: pass the stored hint to
``compile_model``, as :func:`compile_artifact` does. ``int8`` is NNCF post-training quantization
of the IR (see :func:`quantize`), with NNCF's overflow fix so that it computes the same on every
x86 CPU, and calibrated on the bundled calibration set by default.

The IR records its layout (``NHWC`` or ``NCHW`` on ``images`` and ``sr``) and, in its
``rt_info`` under ``drn_tf``, the fields of the ``export.json`` side-car (each a JSON string;
:data:`META_KEY`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np

from drn_tf import cpu
from drn_tf.flags import setting
from export import base, photo_sets, reporting, staging, verification
from export import onnx as onnx_export

#: ``--precision`` → the inference precision hint stored in the IR and passed at compile time.
#: int8 keeps f32 for the layers left in float, so its only error is the quantization's; except
#: on CPUs with :data:`INT8_BF16_FLAG` (:func:`compile_artifact`).
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
#: Where an int8 IR compiles its float parts (the ends, the channel attention's mean and 1×1
#: convolutions) in bf16: on the AMX Xeon, DRN-S ×4 at 128² took 137 ms instead of 155, 55.5 dB
#: from Keras fp32 instead of 57.4 (floor 35). Not measured elsewhere, so f32 there.
INT8_BF16_FLAG = "amx_bf16"
HINT_KEY = ["runtime_options", "INFERENCE_PRECISION_HINT"]
XML = "model.xml"
INPUT_NAME = onnx_export.INPUT_NAME
OUTPUT_NAME = "sr"
DEVICE = "CPU"
#: Input shapes an int8 runner keeps compiled for themselves (:func:`openvino_runner`).
SHAPES_KEPT = 4
#: Where the side-car's fields live in the IR's ``rt_info``: ``rt_info/drn_tf/<field>``.
META_KEY = "drn_tf"
PACKAGES = ("openvino", "nncf")

_OPENVINO = ("openvino", "openvino")

#: int8 is verified a second time with oneDNN held to this ISA (``ONEDNN_MAX_CPU_ISA``): the
#: int8 kernels of CPUs without VNNI, where u8 × s8 pair sums saturate in int16.
NO_VNNI_ISA = "AVX2"

#: The child of :func:`run_with_isa`: runs the IR in argv[1] on the arrays of argv[2].
_ISA_CHILD = """
import sys
import numpy as np
from export import openvino
run = openvino.openvino_runner(sys.argv[1])
with np.load(sys.argv[2]) as inputs:
    np.savez(sys.argv[3], *[run(inputs[name]) for name in inputs.files])
"""


def to_openvino(model: Any, io: str = "float32", layout: str = "nhwc") -> Any:
    """The serving graph of ``model`` (a DRN or its primal network) as an ``ov.Model``, by
    default ``images`` float32 ``(N, H, W, 3)`` on 0..255 → ``sr`` float32
    ``(N, s·H, s·W, 3)``, all of N/H/W dynamic; ``io`` and ``layout`` as for ONNX
    (:func:`export.onnx.serving_function`), the layout recorded on input and output."""
    ov = base.require(*_OPENVINO, purpose="OpenVINO export")
    import tensorflow as tf

    graph = onnx_export.serving_function(model, io, layout)

    # A dict names the output `sr`; a bare tensor would come out as `Identity:0`.
    @tf.function(input_signature=graph.input_signature)
    def serve(images):
        return {OUTPUT_NAME: graph(images)}

    ov_model = ov.convert_model(serve)
    for port in (*ov_model.inputs, *ov_model.outputs):
        port.get_node().set_layout(ov.Layout(layout.upper()))
    return ov_model


def float_convolutions(ov_model: Any) -> list[str]:
    """Names of the convolutions :func:`quantize` leaves in float (:data:`base.KEEP_FIRST`,
    :data:`base.KEEP_LAST`). Every convolution lies between the head and the top tail, so the
    first and last ones in topological order are those layers."""
    ops = ov_model.get_ordered_ops()
    convs = [op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution"]
    return convs[: base.KEEP_FIRST] + convs[-base.KEEP_LAST :]


def quantize(ov_model: Any, calibration: Sequence[np.ndarray]) -> Any:
    """NNCF post-training int8 quantization of ``ov_model`` (weights per channel and
    activations), calibrated on ``calibration`` (float32 ``(1, h, w, 3)`` on 0..255, see
    :func:`photo_sets.calibration_images`).

    Chosen by measurement on the packaged model (DRN-S ×4, Set5 ×4 task PSNR vs Keras):
    NNCF's defaults lose 2.8 dB; leaving the :func:`float_convolutions` in float and taking
    activation ranges from the calibration min/max (instead of averaging each crop's, which
    clips the brighter or darker pixels of photos unlike the calibration ones) lose 0.04 dB
    on a CPU with VNNI calibrated on the bundled set. Without VNNI (AVX2, or AVX-512 without
    VNNI) oneDNN multiplies u8 × s8 pairs into saturating int16 sums, and that IR lost 0.16 dB
    (0.37 dB calibrated on the sample photo alone). ``overflow_fix=ENABLE`` stores the weights
    in 7 bits so the pairs never saturate: 0.057 dB on every CPU, the same outputs with and
    without VNNI (measured on an AVX-512 VNNI EPYC, natively and with
    ``ONEDNN_MAX_CPU_ISA=AVX2``).
    """
    nncf = base.require("nncf", purpose="OpenVINO int8 quantization")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    with _quiet_nncf(nncf):
        return nncf.quantize(
            ov_model,
            nncf.Dataset(list(calibration)),
            subset_size=len(calibration),
            ignored_scope=nncf.IgnoredScope(names=float_convolutions(ov_model)),
            advanced_parameters=AdvancedQuantizationParameters(
                overflow_fix=OverflowFix.ENABLE,
                activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
            ),
        )


@contextmanager
def _quiet_nncf(nncf) -> Iterator[None]:
    """NNCF logs and draws progress bars on stdout; a library function must not print."""
    level = logging.getLogger("nncf").level
    nncf.set_log_level(logging.ERROR)
    try:
        with redirect_stdout(StringIO()):  # the progress bars look up sys.stdout as they draw
            yield
    finally:
        nncf.set_log_level(level)


def save(ov_model: Any, folder: str | os.PathLike, hint: str) -> Path:
    """Writes ``ov_model`` as ``folder/model.xml`` + ``.bin`` with its float weights as they
    are (no float16 compression) and the inference precision ``hint`` in its ``rt_info``."""
    ov = base.require(*_OPENVINO, purpose="OpenVINO export")
    ov_model.set_rt_info(hint, HINT_KEY)
    path = Path(folder) / XML
    ov.save_model(ov_model, path, compress_to_fp16=False)
    return path


@functools.cache
def core() -> Any:
    """The process's one ``ov.Core``, kept until exit. On Linux CPUs with AMX each Core's CPU
    plugin installs an alternate signal stack when it starts and puts back the one it found when
    it ends (openvinotoolkit/openvino#11894): two Cores ending out of order leave an unmapped
    stack installed, and the next signal handled in Python (Ctrl-C, SIGTERM) ends the process
    with SIGSEGV instead."""
    return base.require(*_OPENVINO, purpose="running OpenVINO").Core()


def stored_hint(ov_model: Any) -> str | None:
    """The inference precision hint stored in an ``ov.Model``'s ``rt_info``, if any."""
    return ov_model.get_rt_info(HINT_KEY).astype(str) if ov_model.has_rt_info(HINT_KEY) else None


def compile_artifact(folder: str | os.PathLike, hint: str | None = None) -> Any:
    """The IR in ``folder`` compiled for the CPU with ``hint`` (default: the stored hint, ``bf16``
    for an int8 IR on a CPU with :data:`INT8_BF16_FLAG`; none stored: ``f32``) as its
    ``INFERENCE_PRECISION_HINT``; ``bf16`` on a CPU without native bf16
    (:func:`drn_tf.cpu.native_bf16`) compiles ``f32``."""
    ov_model = core().read_model(Path(folder) / XML)
    return _compile(ov_model, _hint(ov_model, hint))


def _hint(ov_model: Any, hint: str | None) -> str:
    """The precision hint :func:`compile_artifact` compiles ``ov_model`` with."""
    if hint is None and INT8_BF16_FLAG in cpu.cpu_flags() and is_int8(ov_model):
        hint = "bf16"
    hint = hint or stored_hint(ov_model) or "f32"
    if hint == "bf16" and not cpu.native_bf16():
        # OpenVINO does this itself on such a CPU, but not when oneDNN is only held below
        # bf16 (ONEDNN_MAX_CPU_ISA): it then fails to create the bf16 convolutions.
        hint = "f32"
    return hint


def _compile(ov_model: Any, hint: str, shape: tuple[int, ...] | None = None) -> Any:
    """``ov_model`` compiled with the resolved ``hint``; ``shape``: for that input shape alone."""
    if shape is not None:
        ov_model = ov_model.clone()
        ov_model.reshape(list(shape))
    return core().compile_model(ov_model, DEVICE, {"INFERENCE_PRECISION_HINT": hint})


def is_int8(ov_model: Any) -> bool:
    """Whether ``ov_model`` is quantized (holds NNCF's ``FakeQuantize`` operations)."""
    return any(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ops())


def openvino_runner(folder: str | os.PathLike, hint: str | None = None) -> base.Runner:
    """:func:`compile_artifact` as a :data:`base.Runner`: float32 NHWC on 0..255 of any size
    → float32 NHWC ``sr``, whatever the IR's ``--io`` and ``--layout``
    (:func:`export.onnx.to_model_input`, :func:`export.onnx.from_model_output`).

    An int8 IR is compiled once more for an input shape it is given a second time (a photo's
    tiles, a video's frames), for that shape alone, keeping :data:`SHAPES_KEPT` such shapes:
    OpenVINO 2026.4 fuses each block's gate multiply, requantization and residual add into one
    pass only at a static shape (DRN-S ×4 at 128² on the AMX Xeon, 113.8 → 100.9 ms). A float
    IR fuses them at any shape (bf16 171.6 and 170.3 ms) and keeps its one compile.
    """
    ov = base.require(*_OPENVINO, purpose="running OpenVINO")
    ov_model = core().read_model(Path(folder) / XML)
    hint = _hint(ov_model, hint)
    any_shape = _compile(ov_model, hint)
    given = any_shape.input(0)
    io = "uint8" if given.get_element_type() == ov.Type.u8 else "float32"
    channels = given.get_partial_shape()[1]
    layout = "nchw" if channels.is_static and channels.get_length() == 3 else "nhwc"
    per_shape = is_int8(ov_model)
    seen: set[tuple[int, ...]] = set()
    by_shape: collections.OrderedDict[tuple[int, ...], Any] = collections.OrderedDict()

    def compiled_for(shape: tuple[int, ...]) -> Any:
        if not per_shape:
            return any_shape
        if shape not in seen:  # a one-off shape is not worth a compile
            seen.add(shape)
            return any_shape
        if shape not in by_shape:
            by_shape[shape] = _compile(ov_model, hint, shape)
            while len(by_shape) > SHAPES_KEPT:
                by_shape.popitem(last=False)
        by_shape.move_to_end(shape)
        return by_shape[shape]

    def run(images: np.ndarray) -> np.ndarray:
        inputs = onnx_export.to_model_input(images, io, layout)
        run.compiled = compiled_for(inputs.shape)
        return onnx_export.from_model_output(run.compiled(inputs)[0], layout)

    run.compiled = any_shape  # the last one run, for who asks which kernels ran
    return run


def run_with_isa(folder: str | os.PathLike, isa: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The IR in ``folder`` (as :func:`openvino_runner` compiles it) on each of ``inputs``, run
    in a child process whose oneDNN is held to ``isa`` (``ONEDNN_MAX_CPU_ISA``, which oneDNN
    reads once per process: ``AVX2`` picks the kernels of CPUs without VNNI)."""
    package_root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa, "PYTHONPATH": path}
    with tempfile.TemporaryDirectory(prefix="drn_tf_isa_") as work:
        given, taken = Path(work) / "inputs.npz", Path(work) / "outputs.npz"
        np.savez(given, *inputs)
        command = [sys.executable, "-c", _ISA_CHILD, str(folder), str(given), str(taken)]
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise base.ExportError(f"running the IR with oneDNN held to {isa} failed: {last}")
        with np.load(taken) as outputs:
            return [outputs[f"arr_{i}"] for i in range(len(inputs))]


def verify_without_vnni(
    folder: str | os.PathLike, source: base.Source, pixels: bool = False
) -> dict[str, Any]:
    """Verifies the int8 IR in ``folder`` as CPUs without VNNI run it (:func:`run_with_isa`
    with :data:`NO_VNNI_ISA`) on the probe images, at the int8 floor, so that an IR made on a
    VNNI or AMX machine is known to hold on AVX2-only ones; ``pixels``: a uint8-I/O IR, against
    Keras's pixels. Returns the ``verified_on`` entry; raises :class:`base.ExportError` below
    the floor."""
    scale = source.model.scale
    probes = photo_sets.probe_images(scale)
    outputs = run_with_isa(folder, NO_VNNI_ISA, [images for _, images in probes])
    by_input = {images.tobytes(): out for (_, images), out in zip(probes, outputs, strict=True)}
    reference = verification.keras_runner(source.model, pixels)
    floor = base.FLOORS_DB["int8"]
    try:
        records = verification.verify(
            lambda images: by_input[images.tobytes()], reference, scale, floor
        )
    except base.ExportError as error:
        raise base.ExportError(f"with oneDNN held to {NO_VNNI_ISA}: {error}") from error
    return {
        "onednn_max_cpu_isa": {
            "isa": NO_VNNI_ISA,
            "as_on": "CPUs without VNNI (AVX2 only, or AVX-512 without VNNI)",
            "verification": records,
        }
    }


def op_types(folder: str | os.PathLike) -> set[tuple[str, str]]:
    """``(type name, opset)`` of every operation of the IR in ``folder``; a framework or
    extension operation would show a non-``opsetN`` version."""
    ov_model = core().read_model(Path(folder) / XML)
    return {(op.get_type_info().name, op.get_type_info().version_id) for op in ov_model.get_ops()}


def cpu_note(compiled: Any) -> str:
    """What the CPU is and supports, and the precision OpenVINO compiled for."""
    ov = base.require(*_OPENVINO, purpose="running OpenVINO")
    capabilities = list(core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))
    name = core().get_property(DEVICE, "FULL_DEVICE_NAME")
    compiled_as = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    native = "BF16" in capabilities and cpu.native_bf16()
    bf16 = "native bf16" if native else "NO native bf16 (bf16 runs emulated/f32)"
    return (
        f"runtime: OpenVINO {ov.__version__.split('-')[0]} on {DEVICE} {name}, {bf16}; "
        f"OPTIMIZATION_CAPABILITIES {' '.join(capabilities)}; compiled precision {compiled_as}"
    )


def io_contract(scale: int, precision: str, io: str = "float32", layout: str = "nhwc") -> dict:
    """The ``io`` entry of the metadata of a ×``scale`` IR of ``precision``, ``io`` and
    ``layout``."""
    return {
        "files": [XML, "model.bin"],
        **onnx_export.io_contract(scale, io, layout),
        "inference_precision_hint": HINTS[precision],
        "hint_stored_at": "rt_info " + "/".join(HINT_KEY) + " (pass it to compile_model)",
        "weights": "int8 (per channel, 7-bit range: overflow fix), float32 at both ends"
        if precision == "int8"
        else "float32",
        "layout_stored": f"{layout.upper()} on both (Parameter/Result layout)",
        "metadata_stored_at": f"rt_info {META_KEY}/<field>, each a JSON string",
    }


def export_openvino(
    model: Any,
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    precision: str = "fp32",
    calibration_data: Sequence[str | os.PathLike] = (),
    io: str = "float32",
    layout: str = "nhwc",
    timing_runs: int = 10,
) -> reporting.Report:
    """Writes ``model`` (a ``.keras`` path, ``"default"`` or a :class:`base.Source`) as an
    OpenVINO IR folder at ``output``, verified in OpenVINO on the CPU against Keras (the floor
    of ``precision``) and timed; returns the report (also written as ``output/export.json``).

    ``calibration_data``: folders of photos for ``int8`` (default: the bundled sample).
    ``io`` and ``layout``: the tensor format (:func:`export.onnx.serving_function`); ``uint8``
    is verified against Keras's pixels (:func:`drn_tf.serving.to_pixels`).
    """
    if precision not in HINTS:
        raise base.ExportError(f"--precision {precision!r}: use one of {', '.join(HINTS)}")
    onnx_export.check_tensor_format(io, layout)
    if calibration_data and precision != "int8":
        raise base.ExportError("--calibration-data is only used with --precision int8")
    staging.check_destination(output, overwrite)  # fail before the slow part
    base.require(*_OPENVINO, purpose="OpenVINO export")
    if precision == "int8":
        base.require("nncf", purpose="OpenVINO int8 quantization")
    source = model if isinstance(model, base.Source) else base.load_source(model)
    scale = source.model.scale
    notes = []
    base.progress("converting to OpenVINO IR")
    ov_model = to_openvino(source.model, io, layout)
    if io == "uint8":
        notes.append("uint8 input and output, the pixels: verified against Keras's pixels")
    if precision == "int8":
        calibration = photo_sets.calibration_images(calibration_data, scale)
        folders = ", ".join(map(str, calibration_data)) or "the bundled calibration set"
        size = "x".join(map(str, calibration[0].shape[1:3]))
        base.progress(f"quantizing int8 ({len(calibration)} crops)")
        inputs = [onnx_export.to_model_input(image, io, layout) for image in calibration]
        ov_model = quantize(ov_model, inputs)
        notes.append(
            f"int8: NNCF post-training quantization calibrated on {len(calibration)} LR crops "
            f"of {size} from {folders}; overflow fix (7-bit weights: no int16 saturation "
            f"on CPUs without VNNI); min-max activation ranges; the first {base.KEEP_FIRST} "
            f"and last {base.KEEP_LAST} convolutions (upsample, sub_mean, head; tail, add_mean) "
            "in float"
        )
    with staging.staged(output, overwrite) as temp:
        temp.mkdir()
        save(ov_model, temp, HINTS[precision])
        runner = openvino_runner(temp)
        notes.insert(0, cpu_note(runner.compiled))
        also_verified = {}
        if precision == "int8" and "avx2" in reporting.host_cpu()["features"]:
            base.progress(f"verifying int8 with oneDNN held to {NO_VNNI_ISA} (no VNNI)")
            also_verified = verify_without_vnni(temp, source, pixels=io == "uint8")
            records = also_verified["onednn_max_cpu_isa"]["verification"]
            notes.append(
                f"int8 verified again with oneDNN held to {NO_VNNI_ISA} (the kernels of CPUs "
                f"without VNNI): {min(r['psnr_db'] for r in records):.1f} dB or more against "
                f"Keras on all {len(records)} images"
            )
        return verification.finish(
            format="openvino",
            source=source,
            staged_path=temp,
            output=output,
            runner=runner,
            precision=precision,
            io=io_contract(scale, precision, io, layout),
            pixels=io == "uint8",
            packages=PACKAGES if precision == "int8" else PACKAGES[:1],
            timing_runs=timing_runs,
            notes=notes,
            embed=lambda report: embed(ov_model, temp, report),
            verified_on=also_verified,
        )


def embed(ov_model: Any, folder: Path, report: reporting.Report) -> None:
    """Stores ``report``'s fields in ``ov_model``'s ``rt_info`` (:data:`META_KEY`) and saves
    it again to ``folder``: the graph and weights as they were verified. The files are
    replaced by renames: a compiled model that maps the old ``model.bin`` keeps reading it."""
    ov = base.require(*_OPENVINO, purpose="OpenVINO export")
    for key, value in reporting.embedded_fields(report).items():
        ov_model.set_rt_info(value, [META_KEY, key])
    folder = Path(folder)
    resaved = folder / ".metadata"
    ov.save_model(ov_model, resaved / XML, compress_to_fp16=False)
    for name in (XML, "model.bin"):
        os.replace(resaved / name, folder / name)
    resaved.rmdir()


def embedded_metadata(folder: str | os.PathLike) -> dict[str, Any]:
    """The side-car fields stored in the IR in ``folder`` (:func:`embed`), parsed."""
    import json

    info = core().read_model(Path(folder) / XML).get_rt_info()
    return {key: json.loads(value.astype(str)) for key, value in info[META_KEY].items()}


@dataclasses.dataclass
class Flags:
    """Export a DRN model to an OpenVINO IR, verified in OpenVINO against Keras."""

    model: str = setting("default", base.MODEL_HELP)
    scale: int | None = setting(None, base.SCALE_HELP)
    output: str | None = setting(None, "The folder to write model.xml, model.bin (required).")
    precision: str = setting(
        "fp32",
        "fp32, bf16 (an inference precision hint stored in the IR) or int8 (NNCF "
        "post-training quantization, calibrated).",
        choices=tuple(HINTS),
    )
    calibration_data: list[str] = setting(
        [], "Folders of photos to calibrate int8 on (default: the bundled calibration set)."
    )
    io: str = setting(
        "float32",
        "Input and output type: float32 on 0..255, or uint8 pixels (rounded inside the model).",
        choices=onnx_export.IO_TYPES,
    )
    layout: str = setting(
        "nhwc",
        "Input and output layout: nhwc, or nchw as PyTorch models take.",
        choices=onnx_export.LAYOUTS,
    )
    overwrite: bool = setting(False, "Replace an existing artifact.")
    timing_runs: int = setting(10, "Timed runs for the latency (0: no timing).")


def main(argv: list[str] | None = None, prog: str = "python -m export.openvino") -> int:
    """``python -m export.openvino`` (also ``drn-tf export openvino``): returns the exit
    status."""
    return base.command(prog, Flags, export_openvino, argv)


if __name__ == "__main__":
    sys.exit(main())
