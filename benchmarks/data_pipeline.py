"""Throughput of the DRN training input pipeline alone (no model).

Loads the HR images and their LR pyramids, builds ``drn_tf.data.make_train_dataset`` and times
how many training samples per second it yields after a warm-up, i.e. whether the pipeline can
keep a model fed. Prints one JSON line. Example::

    python -m benchmarks.data_pipeline --scale 4 --patch-size 192 --batch-size 16 --steps 200
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from drn_tf.console import run_command
from drn_tf.flags import setting

_DEFAULT_TRAIN_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"


@dataclasses.dataclass
class PipelineConfig:
    """Samples per second of the training input pipeline alone (no model)."""

    train_dir: list[str] = setting([str(_DEFAULT_TRAIN_DIR)], "Folder(s) of HR training images.")
    scale: int = setting(4, "Upscaling factor, a power of two.")
    patch_size: int = setting(192, "HR patch side.")
    batch_size: int = setting(16, "Batch size.")
    steps: int = setting(200, "Timed batches per repeat.")
    warmup: int = setting(20, "Untimed batches first.")
    repeats: int = setting(3, "Timed repeats; the median is reported.")
    cache_dir: str | None = setting(None, "On-disk cache of the computed LR pyramids.")
    seed: int = setting(0, "Random seed (data order, crops).")


def measure(config: PipelineConfig) -> dict:
    """Times the pipeline; returns the report (also what :func:`run` prints)."""
    from drn_tf.data import make_train_dataset
    from drn_tf.training_images import load_pyramids

    for flag, value in (("--steps", config.steps), ("--repeats", config.repeats)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    start = time.perf_counter()
    pyramids, skipped = load_pyramids(
        config.train_dir, config.scale, config.patch_size, cache_dir=config.cache_dir,
        progress=False,
    )  # fmt: skip
    load_s = time.perf_counter() - start

    dataset = make_train_dataset(
        pyramids, config.scale, config.patch_size, config.batch_size, seed=config.seed
    )
    iterator = iter(dataset)
    start = time.perf_counter()
    for _ in range(config.warmup):
        next(iterator)
    warmup_s = time.perf_counter() - start

    rates = []
    for _ in range(config.repeats):
        start = time.perf_counter()
        for _ in range(config.steps):
            next(iterator)
        rates.append(config.steps * config.batch_size / (time.perf_counter() - start))

    return {
        "images": len(pyramids),
        "skipped": len(skipped),
        "scale": config.scale,
        "patch_size": config.patch_size,
        "batch_size": config.batch_size,
        "load_s": round(load_s, 2),
        "warmup_s": round(warmup_s, 2),
        "samples_per_s_median": round(statistics.median(rates), 1),
        "samples_per_s_all": [round(r, 1) for r in rates],
    }


def run(config: PipelineConfig, positionals: list[str]) -> None:
    print(json.dumps(measure(config)))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.data_pipeline [flags]``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    return run_command("python -m benchmarks.data_pipeline", PipelineConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
