"""Which kernels really ran, so that a "% of the int8 peak" is a share of a VNNI or AMX peak and
not of a fallback.

* OpenVINO: its runtime graph names each node's primitive (``brgconv_avx512_amx_I8``,
  ``jit_avx512_core_vnni_1x1_I8``, ``brgemm_avx512_I8``, …): :func:`openvino_kernels`.
* PyTorch's oneDNN: its verbose log
  (``onednn_verbose,…,exec,cpu,matmul,brg_matmul:avx512_core_vnni,…``), switched on around
  one call: :func:`onednn_kernels`. Calls that oneDNN does not run (MKL's fp32 GEMM) log
  nothing.
* :func:`openvino_gemm`: GEMM peaks through OpenVINO's own MatMul kernels (int8: u8
  activations × i8 weights, the pattern of a quantized network), beside PyTorch's (fp32: MKL,
  which on AMD CPUs stays below what convolutions reach; int8: oneDNN's s8s8s32 GEMM API,
  whose kernel the log does not name).
"""

from __future__ import annotations

import collections
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["kernel_summary", "onednn_kernels", "openvino_gemm", "openvino_kernels"]


def openvino_kernels(compiled: Any) -> dict[str, int]:
    """``{primitive type: count}`` over the compute nodes (convolutions, fully connected,
    matmuls, subgraphs) of an OpenVINO compiled model's runtime graph."""
    counts: collections.Counter[str] = collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else ""
        if layer in ("Convolution", "Deconvolution", "FullyConnected", "MatMul"):
            counts[info["primitiveType"].astype(str)] += 1
    return dict(counts.most_common())


def onednn_kernels(call: Callable[[], Any]) -> dict[str, int]:
    """``{"kind:implementation": count}`` of the oneDNN primitives PyTorch executed during
    ``call()``, from oneDNN's verbose log (stdout, captured at the file descriptor)."""
    import torch

    with tempfile.TemporaryFile() as log:
        saved = os.dup(1)
        try:
            os.dup2(log.fileno(), 1)
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                call()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        lines = log.read().decode(errors="replace").splitlines()
    counts: collections.Counter[str] = collections.Counter()
    for line in lines:
        fields = line.split(",")
        if fields[0] == "onednn_verbose" and "exec" in fields:
            at = fields.index("exec")
            kind, impl = fields[at + 2], fields[at + 3]
            counts[f"{kind}:{impl}" if impl else f"{kind} (implementation not logged)"] += 1
    return dict(counts.most_common())


def kernel_summary(kernels: dict[str, int] | None) -> str:
    """``brgemm_avx512_I8 ×1`` (the most used first); ``not logged`` when there are none."""
    if not kernels:
        return "not logged"
    return ", ".join(f"{name} ×{count}" for name, count in kernels.items())


def openvino_gemm(
    precision: str, n: int, chain: int = 1
) -> tuple[Callable[[Any], Any], dict[str, int]]:
    """``chain`` ``n``×``n``×``n`` matrix products in a row (each followed by a ReLU) in
    OpenVINO, as ``(runner, kernels)``; the runner ignores its argument. A chain keeps the
    activations inside the runtime: a single GEMM also pays for passing its float32 input in,
    quantizing it and its float32 output out, which at 4096³ cost AMX int8 about half its speed.
    ``fp32`` and ``bf16`` (the inference precision hint) multiply by constant float32 weights;
    ``int8`` quantizes the activations to u8 (a FakeQuantize) and takes i8 weights with a
    scale, as NNCF writes a quantized layer."""
    import openvino as ov
    from openvino import opset13 as ops

    from export.openvino import DEVICE, core

    rng = np.random.default_rng(0)
    x = ops.parameter([n, n], ov.Type.f32, name="x")
    low, high = ops.constant(np.float32(0)), ops.constant(np.float32(255))
    activations = x
    for _ in range(chain):
        if precision == "int8":
            quantized = ops.fake_quantize(activations, low, high, low, high, 256)
            weights = ops.constant(rng.integers(-127, 128, (n, n)).astype(np.int8))
            weights = ops.multiply(
                ops.convert(weights, ov.Type.f32), ops.constant(np.float32(1e-4))
            )
        else:
            quantized = activations
            weights = ops.constant((rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32))
        activations = ops.relu(ops.matmul(quantized, weights, False, True))
    model = ov.Model([activations], [x])
    hint = "bf16" if precision == "bf16" else "f32"
    compiled = core().compile_model(model, DEVICE, {"INFERENCE_PRECISION_HINT": hint})
    request = compiled.create_infer_request()
    a = rng.uniform(0, 255, (n, n)).astype(np.float32)
    return (lambda _: request.infer([a])), openvino_kernels(compiled)
