"""Before/after of a layer formulation change, side by side in one process.

    python -m benchmarks.formulations --model drn-s --size 128 --runs 8

The model is loaded twice per precision (float32, mixed_bfloat16): "after" runs
``drn_tf.layers`` as it is; "before" has every ``ChannelAttention`` switched back to the
previous formulation of its spatial mean (``ops.mean`` over height and width, see
:func:`drn_tf.layers.spatial_mean`). The four ``tf.function`` s take turns; prints the median
latencies, the speed-ups, and how far "after" is from "before" (max abs difference and PSNR of
the outputs, 0..255).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path

from drn_tf.console import run_command
from drn_tf.flags import setting

PROG = "python -m benchmarks.formulations"


@dataclasses.dataclass
class FormulationConfig:
    """Latency of the Keras tf.function path before and after a layer formulation change."""

    model: str = setting("drn-s", "drn-s (converted from --checkpoint), default, tiny or .keras.")
    checkpoint: str | None = setting(None, "The authors' .pt for drn-s (default: as latency).")
    size: int = setting(128, "LR input side.")
    runs: int = setting(8, "Timed runs per variant.")
    output: str = setting("runs/benchmarks", "Folder whose artifacts/ holds converted models.")


def _previous_call(self, x):
    """ChannelAttention.call before the change: the spatial mean by ``ops.mean``."""
    from keras import ops

    gate = ops.mean(x, axis=(1, 2), keepdims=True)
    return x * ops.sigmoid(self.excite(ops.relu(self.squeeze(gate))))


def _revert(model) -> None:
    from drn_tf.layers import ChannelAttention

    network = getattr(model, "primal", model)  # a DRN, or the bf16 copy of its primal
    for layer in network._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, ChannelAttention):
            layer.call = types.MethodType(_previous_call, layer)


def run(config: FormulationConfig, positionals: list[str]) -> dict:
    import numpy as np
    import tensorflow as tf

    from benchmarks import paths as P
    from benchmarks.latency import LatencyConfig, benchmark_image, resolve_model
    from drn_tf import serving
    from drn_tf.inference import bfloat16_primal
    from export import verification

    if config.runs < 1:
        raise ValueError(f"--runs must be at least 1, got {config.runs}")
    lookup = LatencyConfig(**({"checkpoint": config.checkpoint} if config.checkpoint else {}))
    work_dir = Path(config.output) / "artifacts"
    work_dir.mkdir(parents=True, exist_ok=True)
    label, keras_path, _ = resolve_model(config.model, lookup, work_dir)
    image = tf.constant(benchmark_image(config.size))
    functions, outputs = {}, {}
    for precision in ("float32", "mixed_bfloat16"):
        for variant in ("before", "after"):
            model = P.base.load_source(keras_path).model
            if precision == "mixed_bfloat16":
                model = bfloat16_primal(model)
            if variant == "before":
                _revert(model)
            function = tf.function(lambda x, m=model: serving.super_resolve(m, x))
            outputs[precision, variant] = function(image).numpy()  # trace and warm up
            function(image)
            functions[precision, variant] = function
    times = {key: [] for key in functions}
    for _ in range(config.runs):
        for key, function in functions.items():
            start = time.perf_counter()
            function(image).numpy()
            times[key].append((time.perf_counter() - start) * 1000)
    medians = {key: statistics.median(t) for key, t in times.items()}
    print(f"{label}, {config.size}x{config.size}, median of {config.runs} interleaved runs:")
    report = {}
    for precision in ("float32", "mixed_bfloat16"):
        before, after = medians[precision, "before"], medians[precision, "after"]
        diff = verification.agreement(outputs[precision, "after"], outputs[precision, "before"])
        report[precision] = {"before_ms": before, "after_ms": after, **diff}
        print(
            f"  {precision:>15}: before {before:8.1f} ms, after {after:8.1f} ms, "
            f"{before / after:.2f}x; after vs before: max abs {diff['max_abs']:.2g}, "
            f"{diff['psnr_db']:.1f} dB"
        )
    report["float32_max_abs"] = float(np.max(np.abs(
        outputs["float32", "after"] - outputs["float32", "before"]
    )))  # fmt: skip
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.formulations [flags]``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_command(PROG, FormulationConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
