"""ONNX export: ``python -m export.onnx --model M --output F.onnx [--opset 17]
[--io float32|uint8] [--layout nhwc|nchw] [--overwrite]``.

The artifact computes :func:`drn_tf.serving.super_resolve` (converted with tf2onnx):

- input ``images``: float32 NHWC ``(N, H, W, 3)`` on 0..255, N, H and W dynamic;
- output ``sr``: float32 NHWC ``(N, s·H, s·W, 3)``, about 0..255 and not clipped; to get the
  pixels of ``drn_tf.upscale``, clip to 0..255, round half to even and cast to uint8
  (:func:`drn_tf.serving.to_pixels`).

``--io uint8``: uint8 pixels in and out, the pixel step inside the graph
(:func:`drn_tf.serving.super_resolve_uint8`, as the SavedModel's uint8 signature), so the
output is the pixels of ``drn_tf.upscale`` and is verified against Keras's pixels.
``--layout nchw``: input ``(N, 3, H, W)`` and output ``(N, 3, s·H, s·W)``, as PyTorch models
take them (``Transpose`` nodes at both ends). The OpenVINO exporter builds on the same graph
(:func:`serving_function`).

Only standard-domain ONNX operators appear (the bicubic layer is convolutions, the pixel
shuffle ``DepthToSpace``). It is verified in onnxruntime against the Keras model and timed.
The model's ``metadata_props`` hold the fields of the ``F.onnx.json`` side-car (keys as there,
each value a JSON string; onnxruntime shows them as ``custom_metadata_map``).

:func:`to_onnx` is the conversion alone, shared with the TensorRT and OpenVINO exporters.
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from drn_tf.flags import FlagError, setting
from export import base, reporting, staging, verification

#: The opsets tf2onnx 1.17 converts this model to (19 and above: "not supported yet").
OPSETS = (17, 18)
INPUT_NAME = "images"
OUTPUT_NAME = "sr"
PACKAGES = ("tf2onnx", "onnx", "onnxruntime")
#: ``--io``: the element type of input and output, float32 on 0..255 or uint8 pixels.
IO_TYPES = ("float32", "uint8")
#: ``--layout``: of input and output alike, TensorFlow's NHWC or PyTorch's NCHW.
LAYOUTS = ("nhwc", "nchw")
_TO_NCHW, _TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


def check_tensor_format(io: str, layout: str) -> None:
    """Raises :class:`drn_tf.flags.FlagError` unless ``io`` is one of :data:`IO_TYPES` and
    ``layout`` one of :data:`LAYOUTS`."""
    if io not in IO_TYPES:
        raise FlagError(f"--io {io!r}: use one of {', '.join(IO_TYPES)}")
    if layout not in LAYOUTS:
        raise FlagError(f"--layout {layout!r}: use one of {', '.join(LAYOUTS)}")


def serving_function(model: Any, io: str = "float32", layout: str = "nhwc") -> Any:
    """The serving graph of ``model`` (a DRN or its primal network) as a ``tf.function`` of
    one input ``images`` (N, H and W dynamic), for ``io`` and ``layout``:

    - ``float32``: float32 on 0..255 → :func:`drn_tf.serving.super_resolve`, float32 not
      clipped;
    - ``uint8``: uint8 pixels → :func:`drn_tf.serving.super_resolve_uint8`, uint8 pixels;
    - ``nhwc``: ``(N, H, W, 3)`` → ``(N, s·H, s·W, 3)``; ``nchw``: ``(N, 3, H, W)`` →
      ``(N, 3, s·H, s·W)``, transposed around the NHWC network.
    """
    check_tensor_format(io, layout)
    import tensorflow as tf

    from drn_tf import serving

    shape = [None, 3, None, None] if layout == "nchw" else [None, None, None, 3]
    dtype = tf.uint8 if io == "uint8" else tf.float32
    spec = tf.TensorSpec(shape, dtype, name=INPUT_NAME)
    upscale = serving.super_resolve_uint8 if io == "uint8" else serving.super_resolve

    @tf.function(input_signature=[spec])
    def serve(images):
        if layout == "nchw":
            return tf.transpose(upscale(model, tf.transpose(images, _TO_NHWC)), _TO_NCHW)
        return upscale(model, images)

    return serve


def to_model_input(images: np.ndarray, io: str, layout: str) -> np.ndarray:
    """float32 NHWC on 0..255 → the input of a model of ``io`` and ``layout``: for ``uint8``
    the nearest pixels (clipped, rounded half to even), for ``nchw`` transposed."""
    images = np.asarray(images, np.float32)
    if io == "uint8":
        images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(images.transpose(_TO_NCHW)) if layout == "nchw" else images


def from_model_output(output: np.ndarray, layout: str) -> np.ndarray:
    """A model's output of ``layout`` → float32 NHWC (uint8 pixels as their float values)."""
    output = np.asarray(output)
    output = output.transpose(_TO_NHWC) if layout == "nchw" else output
    return np.ascontiguousarray(output, np.float32)


def check_opset(opset: int) -> int:
    """Returns ``opset`` if tf2onnx can write it, else raises :class:`base.ExportError`."""
    if opset not in OPSETS:
        raise base.ExportError(
            f"opset {opset} is not supported: tf2onnx 1.17 writes opsets up to 18; use 17 or 18"
        )
    return opset


def to_onnx(
    model: Any,
    path: str | os.PathLike,
    opset: int = 17,
    fp16: bool = False,
    io: str = "float32",
    layout: str = "nhwc",
) -> Path:
    """Converts the serving graph of ``model`` to an ONNX file at ``path`` and returns the path.

    Args:
        model: a :class:`drn_tf.models.DRN` (or its primal Keras network).
        path: where to write the ``.onnx`` file (its folder must exist).
        opset: 17 or 18 (:data:`OPSETS`).
        fp16: store the weights and compute in float16. The inputs and outputs stay float32
            (``Cast`` nodes at both ends), so callers feed and read the same arrays; the graph
            is strongly typed, as TensorRT ≥ 10 wants for fp16.
        io, layout: the tensor format (:func:`serving_function`).

    The graph (default format): input ``images`` float32 ``(N, H, W, 3)`` on 0..255 → output
    ``sr`` float32 ``(N, s·H, s·W, 3)``, N/H/W dynamic (named ``N``, ``H``, ``W`` and ``N``,
    ``sH``, ``sW``). Raises :class:`base.ExportError` for an unsupported opset and
    :class:`base.MissingDependency` when tf2onnx or onnx is missing.
    """
    check_opset(opset)
    tf2onnx = base.require("tf2onnx", purpose="ONNX export")
    onnx = base.require("onnx", purpose="ONNX export")
    serve = serving_function(model, io, layout)
    proto, _ = tf2onnx.convert.from_function(
        serve, input_signature=serve.input_signature, opset=opset
    )
    _tidy(proto, getattr(model, "scale", None), layout)
    if fp16:
        proto = _to_float16(proto)
    path = Path(path)
    onnx.save(proto, path)
    return path


def _tidy(proto, scale: int | None, layout: str = "nhwc") -> None:
    """Names the output ``sr`` and the dynamic dimensions (``layout``'s channel dimension is
    the static 3), and drops opset imports no node uses (tf2onnx always declares
    ``ai.onnx.ml``)."""
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
        node.input[:] = [OUTPUT_NAME if name == old else name for name in node.input]
    proto.graph.output[0].name = OUTPUT_NAME
    s = scale or "s"
    channel = 1 if layout == "nchw" else 3
    for value, names in (
        (proto.graph.input[0], ["N", "H", "W"]),
        (proto.graph.output[0], ["N", f"{s}H", f"{s}W"]),
    ):
        names.insert(channel, None)
        for dim, name in zip(value.type.tensor_type.shape.dim, names, strict=False):
            if name:
                dim.dim_param = name
    used = {node.domain for node in proto.graph.node} | {""}
    kept = [o for o in proto.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)


def _to_float16(proto):
    """float32 initializers and tensors → float16, float32 I/O kept (Casts at both ends).

    Uses the float16 converter that onnxruntime ships (a copy of onnxconverter-common's,
    whose own package pins an old protobuf). Its package ``__init__`` appends its folder to
    ``sys.path``; that is harmless here (appended last).
    """
    base.require("onnxruntime", purpose="fp16 ONNX")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(proto, keep_io_types=True)
    sort_topologically(proto.graph)  # the converter appends its input Casts last
    return proto


def sort_topologically(graph) -> None:
    """Reorders ``graph.node`` so that each node follows those whose outputs it reads, as
    ONNX requires (``onnx.checker``: "nodes must be topologically sorted"), keeping the
    given order wherever it is already valid. Raises :class:`base.ExportError` on a cycle."""
    nodes = list(graph.node)
    producer = {name: i for i, node in enumerate(nodes) for name in node.output}
    readers: list[list[int]] = [[] for _ in nodes]
    waiting = [0] * len(nodes)
    for i, node in enumerate(nodes):
        for name in set(node.input) & producer.keys():
            readers[producer[name]].append(i)
            waiting[i] += 1
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for reader in readers[i]:
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, reader)
    if len(order) != len(nodes):
        raise base.ExportError("the ONNX graph has a cycle: it cannot be sorted")
    copies = [type(nodes[i])() for i in order]
    for copy, i in zip(copies, order, strict=True):
        copy.CopyFrom(nodes[i])
    del graph.node[:]
    graph.node.extend(copies)


def onnxruntime_runner(path: str | os.PathLike, threads: int = 0) -> base.Runner:
    """An onnxruntime CPU session of the ONNX file at ``path`` as a :data:`base.Runner`
    (float32 NHWC on 0..255 in, float32 NHWC ``sr`` out), whatever the file's ``--io`` and
    ``--layout`` (read from its input: :func:`to_model_input`, :func:`from_model_output`).
    ``threads`` 0: onnxruntime's default."""
    ort = base.require("onnxruntime", purpose="running ONNX")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    given = session.get_inputs()[0]
    io = "uint8" if given.type == "tensor(uint8)" else "float32"
    layout = "nchw" if given.shape[1] == 3 else "nhwc"

    def run(images):
        output = session.run(None, {given.name: to_model_input(images, io, layout)})[0]
        return from_model_output(output, layout)

    return run


def io_contract(scale: int, io: str = "float32", layout: str = "nhwc") -> dict:
    """The ``io`` entry of the metadata of an ONNX-based artifact of a ×``scale`` model with
    the tensor format ``io`` and ``layout`` (:func:`serving_function`)."""
    contract = base.image_io(scale, INPUT_NAME, OUTPUT_NAME)
    for tensor in (contract["input"], contract["output"]):
        if layout == "nchw":
            n, h, w, channels = tensor["shape"]
            tensor["shape"] = [n, channels, h, w]
        tensor["layout"] = layout.upper()
        if io == "uint8":
            tensor["dtype"] = "uint8"
    if io == "uint8":
        contract["input"]["range"] = "0..255, the pixels"
        contract["output"]["range"] = "0..255, the pixels of drn_tf.upscale"
        contract["pixels"] = f"inside the model: {base.PIXEL_STEP}"
    return contract


def op_types(path: str | os.PathLike) -> set[tuple[str, str]]:
    """``(domain, op_type)`` of every node of the ONNX file at ``path`` (domain "" is the
    standard ``ai.onnx``)."""
    onnx = base.require("onnx", purpose="reading ONNX")
    graph = onnx.load(str(path), load_external_data=False).graph
    return {(node.domain, node.op_type) for node in graph.node}


def embed(path: str | os.PathLike, report: reporting.Report) -> None:
    """Sets ``report``'s fields as the ``metadata_props`` of the ONNX file at ``path``
    (:func:`reporting.embedded_fields`), replacing it by a rename."""
    onnx = base.require("onnx", purpose="ONNX export")
    path = Path(path)
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, reporting.embedded_fields(report))
    temp = path.with_name(f"{path.name}.metadata")
    onnx.save(proto, str(temp))
    os.replace(temp, path)


def embedded_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The side-car fields in the ``metadata_props`` of the ONNX file at ``path``, parsed."""
    import json

    onnx = base.require("onnx", purpose="reading ONNX")
    proto = onnx.load(str(path), load_external_data=False)
    return {prop.key: json.loads(prop.value) for prop in proto.metadata_props}


def load(model: Any) -> base.Source:
    """``model`` as a :class:`base.Source`: one already loaded, or a path / ``"default"``."""
    return model if isinstance(model, base.Source) else base.load_source(model)


def export_onnx(
    model: Any,
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    opset: int = 17,
    io: str = "float32",
    layout: str = "nhwc",
    timing_runs: int = 10,
) -> reporting.Report:
    """Writes ``model`` (a ``.keras`` path, ``"default"`` or a :class:`base.Source`) as ONNX at
    ``output``, verified in onnxruntime against Keras (fp32 floor) and timed; returns the
    report (also written beside it as ``F.onnx.json``).

    ``io`` and ``layout``: the tensor format (:func:`serving_function`); ``uint8`` is
    verified against Keras's pixels (:func:`drn_tf.serving.to_pixels`)."""
    check_opset(opset)
    check_tensor_format(io, layout)
    staging.check_destination(output, overwrite)  # fail before the slow part
    for module in PACKAGES:
        base.require(module, purpose="ONNX export")
    source = load(model)
    with staging.staged(output, overwrite) as temp:
        base.progress(f"converting to ONNX (opset {opset})")
        to_onnx(source.model, temp, opset=opset, io=io, layout=layout)
        notes = ["runtime: onnxruntime CPUExecutionProvider"]
        if io == "uint8":
            notes.append("uint8 input and output, the pixels: verified against Keras's pixels")
        return verification.finish(
            format="onnx",
            source=source,
            staged_path=temp,
            output=output,
            runner=onnxruntime_runner(temp),
            precision="fp32",
            io={**io_contract(source.model.scale, io, layout), "opset": opset},
            pixels=io == "uint8",
            packages=PACKAGES,
            timing_runs=timing_runs,
            notes=notes,
            embed=lambda report: embed(temp, report),
        )


@dataclasses.dataclass
class Flags:
    """Export a DRN model to ONNX (tf2onnx), verified in onnxruntime against Keras."""

    model: str = setting("default", base.MODEL_HELP)
    scale: int | None = setting(None, base.SCALE_HELP)
    output: str | None = setting(None, "The .onnx file to write (required).")
    opset: int = setting(17, "ONNX opset (tf2onnx 1.17 writes 17 or 18).")
    io: str = setting(
        "float32",
        "Input and output type: float32 on 0..255, or uint8 pixels (rounded inside the model).",
        choices=IO_TYPES,
    )
    layout: str = setting(
        "nhwc", "Input and output layout: nhwc, or nchw as PyTorch models take.", choices=LAYOUTS
    )
    overwrite: bool = setting(False, "Replace an existing artifact.")
    timing_runs: int = setting(10, "Timed runs for the latency (0: no timing).")


def main(argv: list[str] | None = None, prog: str = "python -m export.onnx") -> int:
    """``python -m export.onnx`` (also ``drn-tf export onnx``): returns the exit status."""
    return base.command(prog, Flags, export_onnx, argv)


if __name__ == "__main__":
    sys.exit(main())
