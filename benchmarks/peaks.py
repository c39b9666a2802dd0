"""The machine's peak per precision, for a path's "% of peak": n×n×n GEMMs in fp32, bf16 and
int8 through PyTorch and through OpenVINO's own MatMul kernels, each naming the kernels it ran
(:mod:`benchmarks.kernels`). A precision's peak is its fastest GEMM in the best round.

:mod:`benchmarks.latency` runs :func:`gemm_runner` in worker processes beside the model's paths.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from benchmarks import kernels
from benchmarks.paths import Skipped
from drn_tf import cpu
from export import base

__all__ = ["GEMMS", "QUICK_GEMM", "gemm_line", "gemm_runner", "gemm_speed", "peaks_of"]

#: ``{path: (precision, n, chain)}``: each GEMM the latency benchmark times, ``chain``
#: n×n×n products in a row. OpenVINO's run as chains (:func:`kernels.openvino_gemm`): on the AMX
#: Xeon one int8 4096³ product reached 1,994 GOP/s, 16 chained 1024³ ones 4,533 (bf16: 1,216 and
#: 2,131), as a model's layers do, whose activations stay in the runtime. Chains are long enough
#: for a run of about 50 ms: a run after a pause (each worker waits while the others take their
#: turns) first pays a wake-up, which a 5 ms run cannot amortize (AMX Xeon, int8, 0.2 s pauses:
#: 16 products 3,787 GOP/s, 128 products 5,770; bf16: 16 → 2,114, 64 → 2,436).
GEMMS = {
    "gemm_fp32": ("fp32", 2048, 1),
    "gemm_bf16": ("bf16", 4096, 1),
    "gemm_int8": ("int8", 4096, 1),
    "gemm_fp32_openvino": ("fp32", 1024, 16),
    "gemm_bf16_openvino": ("bf16", 1024, 64),
    "gemm_int8_openvino": ("int8", 1024, 128),
}
#: The GEMMs' size under ``--quick`` (the tests).
QUICK_GEMM = 256


def gemm_runner(path: str, n: int, chain: int = 1) -> base.Runner:
    """``chain`` n×n×n matrix products of :data:`GEMMS` ``path`` (PyTorch's or OpenVINO's;
    PyTorch runs one); PyTorch's fp32 falls back to numpy without torch. The image argument is
    ignored. ``runner.kernels(image)`` names the kernels it ran (:mod:`benchmarks.kernels`)."""
    precision = GEMMS[path][0]
    if path.endswith("_openvino"):
        if not importlib.util.find_spec("openvino"):
            raise Skipped(f"OpenVINO's {precision} GEMM needs openvino (pip install '.[export]')")
        if precision == "bf16" and not cpu.native_bf16():
            raise Skipped("no native bf16 here: OpenVINO would compute it in fp32")
        run, ran = kernels.openvino_gemm(precision, n, chain)
        run.kernels = lambda _: ran
        return run
    try:
        import torch
    except ImportError:
        if precision != "fp32":
            raise Skipped(
                f"the {precision} GEMM peak needs torch (pip install '.[compare]')"
            ) from None
        a = np.random.default_rng(0).standard_normal((n, n), np.float32)
        return lambda _: a @ a
    if precision == "int8":
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        run = lambda _: torch._int_mm(a, a)  # noqa: E731 - it gets an attribute below
    else:
        a = torch.randn(n, n, dtype=torch.float32 if precision == "fp32" else torch.bfloat16)
        run = lambda _: torch.matmul(a, a)  # noqa: E731
    run.kernels = lambda _: kernels.onednn_kernels(lambda: run(None))
    return run


def peaks_of(model_record: dict) -> dict[str, float]:
    """The machine's peak GFLOP/s (int8: GOP/s) per precision, from the best (fastest) GEMM
    of this model's rounds: a peak is what the machine can do, and the best round is the one
    least disturbed by other load. Shares of it are therefore conservative."""
    peaks: dict[str, float] = {}
    for record in model_record["gemm"].values():
        if "min_ms" in record:
            peak = gemm_speed(record)
            peaks[record["compute"]] = max(peak, peaks.get(record["compute"], 0.0))
    return peaks


def gemm_speed(record: dict) -> float:
    """GFLOP/s (int8: GOP/s) of a timed GEMM record: its ``chain`` × 2·n³ over its best time."""
    return 2 * record.get("chain", 1) * record["n"] ** 3 / record["min_ms"] / 1e6


def gemm_line(path: str, gemm: dict) -> str:
    """``- `gemm_int8` (int8, 4096³): 1,234 GOP/s; kernels: …`` for the report."""
    unit = "GOP/s" if gemm["compute"] == "int8" else "GFLOP/s"
    chain = gemm.get("chain", 1)
    if "min_ms" in gemm:
        speed = f"{gemm_speed(gemm):,.0f} {unit}"
    else:
        speed = gemm.get("skipped") or gemm.get("error") or "not run"
    ran = kernels.kernel_summary(gemm.get("kernels"))
    size = f"{chain} × {gemm['n']}³" if chain > 1 else f"{gemm['n']}³"
    return f"- `{path}` ({gemm['compute']}, {size}): {speed}; kernels: {ran}"
