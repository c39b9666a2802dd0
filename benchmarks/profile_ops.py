"""Where Keras spends its time: per-op times from the TF profiler.

    python -m benchmarks.profile_ops --model drn-s --precision mixed_bfloat16 --size 128
    python -m benchmarks.profile_ops --model default --precision float32 --runs 5
    python -m benchmarks.profile_ops --step train --precision mixed_bfloat16 --size 96

Runs the model's serving function (as :mod:`benchmarks.latency`'s ``tf_function`` path, or
``mixed_bfloat16``), or one training step of DRN-S ×4 (as :mod:`benchmarks.train_throughput`
times it), under ``tf.profiler.experimental``, reads the trace it writes (the XSpace
protobuf, as TensorBoard's profile plugin does) and sums the host time of each TensorFlow op,
grouped by op type (``_FusedConv2D``, ``Mul``, ``Cast``, …) and by layer (:func:`layer_of`).
Prints the Markdown tables and writes ``profile_ops_<model>_<precision>[_train].json``.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import report as R
from benchmarks import train_throughput
from drn_tf.console import run_command
from drn_tf.flags import UsageError, setting

PROG = "python -m benchmarks.profile_ops"


@dataclasses.dataclass
class ProfileConfig:
    """Per-op times of the Keras tf.function path or training step from the TF profiler."""

    step: str = setting(
        "inference",
        "inference: the serving function on a SIZE² image; train: one training step of a "
        "DualRegressionModel (drn-s: the paper's sizes; tiny) on SIZE² LR patches, in memory.",
        choices=("inference", "train"),
    )
    model: str = setting("drn-s", "drn-s (converted from --checkpoint), default, tiny or .keras.")
    checkpoint: str | None = setting(None, "The authors' .pt for drn-s (default: as latency).")
    precision: str = setting(
        "float32", "Keras policy of the run.", choices=("float32", "mixed_bfloat16")
    )
    size: int = setting(128, "LR input side.")
    batch_size: int = setting(2, "LR patches per training step (--step train).")
    inter_op_threads: int = setting(
        0,
        "TensorFlow's inter-op threads (0: its default); 1 runs ops one at a time, so op "
        "times add up to the run's time instead of overlapping.",
    )
    runs: int = setting(3, "Profiled runs (after 2 warm-up runs); times are per run.")
    top: int = setting(15, "Rows per table.")
    output: str = setting(
        "runs/benchmarks", "Folder for profile_ops_MODEL_PRECISION[_train].{md,json}."
    )


def op_times(xspace_path: Path) -> list[tuple[str, str, float]]:
    """``(op name, op type, µs)`` of every TensorFlow op event on the host plane of an XSpace
    file (``tf.profiler`` output): the executor threads' events named ``name:Type``. Ops that
    run at once on different threads are each counted whole."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(xspace_path).read_bytes())
    events = []
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if not line.name.startswith(("tf_Compute", "TensorFlow Ops")):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name:  # not ThreadpoolListener::…
                    op_name, op_type = name.rsplit(":", 1)
                    events.append((op_name, op_type, event.duration_ps / 1e6))
    return events


def layer_of(op_name: str) -> str:
    """The layer kind an op belongs to, RCABs pooled per up-phase: ``model_1/up_1_rcab_7_1/
    attention_1/Mean`` → ``up_1_rcab/attention``; ``model_1/head_1/convolution`` → ``head``.
    In a training step, gradients (``gradient_tape/…``) → ``… (backward)``, and Keras's update
    (inside a ``cond`` on finite gradients: ``cond/then/_0/cond/adam/mul_3``) → ``optimizer``."""
    parts = [re.sub(r"_\d+$", "", part) for part in op_name.split("/")]
    if parts[0] == "cond" and "then" in parts:
        return "optimizer"
    if parts[0] == "gradient_tape" and len(parts) > 1:
        return f"{layer_of('/'.join(op_name.split('/')[1:]))} (backward)"
    if len(parts) < 3:
        return parts[-1]
    layer = re.sub(r"_rcab_\d+", "_rcab", parts[1])
    return f"{layer}/{parts[2]}" if "_rcab" in layer and len(parts) > 3 else layer


#: ``--step train`` models → (RCABs per phase, features): drn-s at the paper's sizes.
TRAIN_SIZES = {"drn-s": train_throughput.SIZES["paper"][:2], "tiny": (1, 4)}


def _inference_run(config: ProfileConfig):
    """The serving function of ``config.model`` on the benchmark image, as a no-argument call."""
    import keras
    import tensorflow as tf

    from benchmarks import paths as P
    from benchmarks.latency import LatencyConfig, benchmark_image, resolve_model
    from drn_tf import serving
    from drn_tf.inference import bfloat16_primal

    lookup = LatencyConfig(**({"checkpoint": config.checkpoint} if config.checkpoint else {}))
    work_dir = Path(config.output) / "artifacts"
    work_dir.mkdir(parents=True, exist_ok=True)
    label, keras_path, _ = resolve_model(config.model, lookup, work_dir)
    model = P.base.load_source(keras_path).model
    if config.precision == "mixed_bfloat16":
        model = bfloat16_primal(model)
    keras.mixed_precision.set_global_policy("float32")

    @tf.function(input_signature=[serving.FLOAT_SPEC])
    def run(images):
        return serving.super_resolve(model, images)

    image = tf.constant(benchmark_image(config.size))
    return label, f"{config.size}×{config.size} input", lambda: run(image).numpy()


def _train_run(config: ProfileConfig):
    """One ``train_on_batch`` of a DualRegressionModel on random in-memory patches."""
    n_blocks, n_feats = TRAIN_SIZES[config.model]
    spec = {"policy": config.precision, "xla": False, "data": "memory", "seed": 0,
            "n_blocks": n_blocks, "n_feats": n_feats, "patch_size": 4 * config.size,
            "batch_size": config.batch_size}  # fmt: skip
    step = train_throughput.make_step_runner(spec)
    what = f"training step, {config.batch_size} × {config.size}² LR patches (HR {4 * config.size}²)"
    return f"{config.model} ×4 (n_blocks {n_blocks}, n_feats {n_feats})", what, lambda: step(None)


def _profile(config: ProfileConfig) -> dict:
    import numpy as np
    import tensorflow as tf

    if config.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(config.inter_op_threads)
    make = _train_run if config.step == "train" else _inference_run
    label, what, run = make(config)
    for _ in range(2):
        run()
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(config.runs):
            run()
        run_ms = (time.perf_counter() - start) * 1000 / config.runs
        tf.profiler.experimental.stop()
        (xspace,) = Path(logdir).rglob("*.xplane.pb")
        events = op_times(xspace)
    if not events:
        raise ValueError("the profiler recorded no TensorFlow op events")
    by_type, by_layer = collections.Counter(), collections.Counter()
    counts = collections.Counter()
    for name, op_type, us in events:
        by_type[op_type] += us / config.runs / 1000
        counts[op_type] += 1 / config.runs
        by_layer[layer_of(name)] += us / config.runs / 1000
    total = sum(by_type.values())
    return {
        "model": label,
        "what": what,
        "precision": config.precision,
        "size": config.size,
        "run_ms": run_ms,
        "inter_op_threads": config.inter_op_threads or "default",
        "runs": config.runs,
        "op_total_ms": total,
        "by_type": [
            {"op": op, "ms": ms, "share": ms / total, "count": round(counts[op])}
            for op, ms in by_type.most_common()
        ],
        "by_layer": [
            {"layer": k, "ms": ms, "share": ms / total} for k, ms in by_layer.most_common()
        ],
        "numpy_version": np.__version__,
    }


def markdown(report: dict, top: int) -> str:
    lines = [
        f"## Per-op times: {report['model']}, {report['precision']}, {report['what']} "
        f"(TF profiler, mean of {report['runs']} runs)",
        "",
        f"Sum of op times: {report['op_total_ms']:,.1f} ms per run; the runs took "
        f"{report['run_ms']:,.1f} ms each under the profiler (inter-op threads: "
        f"{report['inter_op_threads']}).",
        "",
        "| op type | ms/run | share | ops/run |",
        "|---|---:|---:|---:|",
    ]
    for row in report["by_type"][:top]:
        lines.append(f"| {row['op']} | {row['ms']:,.1f} | {row['share']:.1%} | {row['count']} |")
    lines += ["", "| layer | ms/run | share |", "|---|---:|---:|"]
    for row in report["by_layer"][:top]:
        lines.append(f"| {row['layer']} | {row['ms']:,.1f} | {row['share']:.1%} |")
    return "\n".join(lines) + "\n"


def run(config: ProfileConfig, positionals: list[str]) -> dict:
    if config.runs < 1 or config.size < 8 or config.size % 4:
        raise UsageError("--runs must be >= 1 and --size a multiple of 4, at least 8")
    if config.step == "train" and config.model not in TRAIN_SIZES:
        raise UsageError(f"--step train profiles {' or '.join(TRAIN_SIZES)}, not {config.model}")
    if config.batch_size < 1 or config.inter_op_threads < 0:
        raise UsageError("--batch-size must be >= 1 and --inter-op-threads >= 0")
    report = _profile(config)
    name = f"profile_ops_{config.model.replace('/', '_')}_{config.precision}"
    name += "_train" if config.step == "train" else ""
    R.write(config.output, name, report, markdown(report, config.top))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.profile_ops [flags]``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_command(PROG, ProfileConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
