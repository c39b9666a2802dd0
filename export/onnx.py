"""ONNX export: ``python -m export.onnx --model M --output F.onnx [--opset 17] [--overwrite]``.

The artifact computes :func:`drn_tf.serving.super_resolve` (converted with tf2onnx):

- input ``images``: float32 NHWC ``(N, H, W, 3)`` on 0..255, N, H and W dynamic;
- output ``sr``: float32 NHWC ``(N, s·H, s·W, 3)``, about 0..255 and not clipped; to get the
  pixels of ``drn_tf.upscale``, clip to 0..255, round half to even and cast to uint8
  (:func:`drn_tf.serving.to_pixels`).

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

from drn_tf.config import setting
from export import base

#: The opsets tf2onnx 1.17 converts this model to (19 and above: "not supported yet").
OPSETS = (17, 18)
INPUT_NAME = "images"
OUTPUT_NAME = "sr"
PACKAGES = ("tf2onnx", "onnx", "onnxruntime")


def check_opset(opset: int) -> int:
    """Returns ``opset`` if tf2onnx can write it, else raises :class:`base.ExportError`."""
    if opset not in OPSETS:
        raise base.ExportError(
            f"opset {opset} is not supported: tf2onnx 1.17 writes opsets up to 18; use 17 or 18"
        )
    return opset


def to_onnx(model: Any, path: str | os.PathLike, opset: int = 17, fp16: bool = False) -> Path:
    """Converts the serving graph of ``model`` to an ONNX file at ``path`` and returns the path.

    Args:
        model: a :class:`drn_tf.models.DRN` (or its primal Keras network).
        path: where to write the ``.onnx`` file (its folder must exist).
        opset: 17 or 18 (:data:`OPSETS`).
        fp16: store the weights and compute in float16. The inputs and outputs stay float32
            (``Cast`` nodes at both ends), so callers feed and read the same arrays; the graph
            is strongly typed, as TensorRT ≥ 10 wants for fp16.

    The graph: input ``images`` float32 ``(N, H, W, 3)`` on 0..255 → output ``sr`` float32
    ``(N, s·H, s·W, 3)``, N/H/W dynamic (named ``N``, ``H``, ``W`` and ``N``, ``sH``,
    ``sW``). Raises :class:`base.ExportError` for an unsupported opset and
    :class:`base.MissingDependency` when tf2onnx or onnx is missing.
    """
    check_opset(opset)
    tf2onnx = base.require("tf2onnx", purpose="ONNX export")
    onnx = base.require("onnx", purpose="ONNX export")
    import tensorflow as tf

    from drn_tf import serving

    @tf.function(input_signature=[serving.FLOAT_SPEC])
    def serve(images):
        return serving.super_resolve(model, images)

    proto, _ = tf2onnx.convert.from_function(
        serve, input_signature=[serving.FLOAT_SPEC], opset=opset
    )
    _tidy(proto, scale=getattr(model, "scale", None))
    if fp16:
        proto = _to_float16(proto)
    path = Path(path)
    onnx.save(proto, path)
    return path


def _tidy(proto, scale: int | None) -> None:
    """Names the output ``sr`` and the dynamic dimensions, and drops opset imports no node
    uses (tf2onnx always declares ``ai.onnx.ml``)."""
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
        node.input[:] = [OUTPUT_NAME if name == old else name for name in node.input]
    proto.graph.output[0].name = OUTPUT_NAME
    s = scale or "s"
    for value, names in (
        (proto.graph.input[0], ("N", "H", "W")),
        (proto.graph.output[0], ("N", f"{s}H", f"{s}W")),
    ):
        for dim, name in zip(value.type.tensor_type.shape.dim, names, strict=False):
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
    (float32 NHWC on 0..255 in, float32 ``sr`` out). ``threads`` 0: onnxruntime's default."""
    ort = base.require("onnxruntime", purpose="running ONNX")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(images):
        return session.run(None, {input_name: images.astype("float32", copy=False)})[0]

    return run


def io_contract(scale: int) -> dict:
    """The ``io`` entry of the metadata of an ONNX-based artifact of a ×``scale`` model."""
    return base.image_io(scale, INPUT_NAME, OUTPUT_NAME)


def op_types(path: str | os.PathLike) -> set[tuple[str, str]]:
    """``(domain, op_type)`` of every node of the ONNX file at ``path`` (domain "" is the
    standard ``ai.onnx``)."""
    onnx = base.require("onnx", purpose="reading ONNX")
    graph = onnx.load(str(path), load_external_data=False).graph
    return {(node.domain, node.op_type) for node in graph.node}


def embed(path: str | os.PathLike, report: base.Report) -> None:
    """Sets ``report``'s fields as the ``metadata_props`` of the ONNX file at ``path``
    (:func:`base.embedded_fields`), replacing it by a rename."""
    onnx = base.require("onnx", purpose="ONNX export")
    path = Path(path)
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, base.embedded_fields(report))
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
    timing_runs: int = 10,
) -> base.Report:
    """Writes ``model`` (a ``.keras`` path, ``"default"`` or a :class:`base.Source`) as ONNX at
    ``output``, verified in onnxruntime against Keras (fp32 floor) and timed; returns the
    report (also written beside it as ``F.onnx.json``)."""
    check_opset(opset)
    base.check_destination(output, overwrite)  # fail before the slow part
    for module in PACKAGES:
        base.require(module, purpose="ONNX export")
    source = load(model)
    with base.staged(output, overwrite) as temp:
        base.progress(f"converting to ONNX (opset {opset})")
        to_onnx(source.model, temp, opset=opset)
        return base.finish(
            format="onnx",
            source=source,
            staged_path=temp,
            output=output,
            runner=onnxruntime_runner(temp),
            precision="fp32",
            io={**io_contract(source.model.scale), "opset": opset},
            packages=PACKAGES,
            timing_runs=timing_runs,
            notes=["runtime: onnxruntime CPUExecutionProvider"],
            embed=lambda report: embed(temp, report),
        )


@dataclasses.dataclass
class Flags:
    """Export a DRN model to ONNX (tf2onnx), verified in onnxruntime against Keras."""

    model: str = setting("default", base.MODEL_HELP)
    scale: int | None = setting(None, base.SCALE_HELP)
    output: str | None = setting(None, "The .onnx file to write (required).")
    opset: int = setting(17, "ONNX opset (tf2onnx 1.17 writes 17 or 18).")
    overwrite: bool = setting(False, "Replace an existing artifact.")
    timing_runs: int = setting(10, "Timed runs for the latency (0: no timing).")


def main(argv: list[str] | None = None, prog: str = "python -m export.onnx") -> int:
    """``python -m export.onnx`` (also ``drn-tf export onnx``): returns the exit status."""
    return base.command(prog, Flags, export_onnx, argv)


if __name__ == "__main__":
    sys.exit(main())
