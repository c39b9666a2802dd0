"""Training-step time of one DRN configuration under each precision, side by side in one run.

    python -m benchmarks.precision --n-blocks 4 --n-feats 8 --patch-size 96 --batch-size 8

Each policy gets a fresh model and a warm-up before timing, on the same synthetic batch, so the
numbers compare only the arithmetic. ``--precision auto`` in training picks from what this shows.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Sequence

from drn_tf.console import run_command
from drn_tf.flags import setting


@dataclasses.dataclass
class PrecisionConfig:
    """Training-step time of one DRN configuration under each precision policy."""

    variant: str = setting("drn-s", "drn-s or drn-l.")
    scale: int = setting(4, "Upscaling factor, a power of two.")
    n_blocks: int = setting(4, "RCABs per up-phase.")
    n_feats: int = setting(8, "Base feature width.")
    patch_size: int = setting(96, "HR patch size.")
    batch_size: int = setting(8, "Batch size.")
    steps: int = setting(10, "Timed steps per precision.")
    precisions: list[str] = setting(
        ["float32", "mixed_bfloat16", "mixed_float16"], "Keras precision policies to time."
    )


def time_policy(config: PrecisionConfig, policy: str) -> float:
    """Seconds per training step under ``policy``."""
    import keras
    import numpy as np
    import tensorflow as tf

    from drn_tf.dual_regression import DualRegressionModel
    from drn_tf.models import build_drn, build_duals

    keras.mixed_precision.set_global_policy(policy)
    sizes = {"n_blocks": config.n_blocks, "n_feats": config.n_feats}
    model = DualRegressionModel(
        build_drn(config.variant, config.scale, **sizes),
        build_duals(config.variant, config.scale, **sizes),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    rng = np.random.default_rng(0)
    p, b = config.patch_size, config.batch_size
    levels = [
        rng.uniform(0, 255, (b, p // k, p // k, 3)).astype("float32")
        for k in (config.scale // 2**i for i in range(int(np.log2(config.scale)) + 1))
    ]
    dataset = tf.data.Dataset.from_tensors((levels[0], tuple(levels[1:]))).repeat()
    model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)  # warm-up
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=config.steps, epochs=1, verbose=0, shuffle=False)
    return (time.perf_counter() - start) / config.steps


def run(config: PrecisionConfig, positionals: list[str]) -> None:
    """Prints one line per policy: ms per step, samples per second, speed against float32."""
    import tensorflow as tf

    if config.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {config.steps}")
    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    print(
        f"{config.variant} x{config.scale} n_blocks={config.n_blocks} n_feats={config.n_feats} "
        f"patch={config.patch_size} batch={config.batch_size} on {device}"
    )
    results = {policy: time_policy(config, policy) for policy in config.precisions}
    baseline = results.get("float32")
    for policy, seconds in results.items():
        relative = f"{baseline / seconds:5.2f}x float32" if baseline else ""
        print(
            f"{policy:>15}: {seconds * 1000:8.1f} ms/step  "
            f"{config.batch_size / seconds:7.1f} samples/s  {relative}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.precision [flags]``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    return run_command("python -m benchmarks.precision", PrecisionConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
