"""Throughput of the DRN training input pipeline alone (no model).

Loads the HR images and their LR pyramids, builds ``make_train_dataset`` and times how many
training samples per second it yields after a warm-up, i.e. whether the pipeline can keep a model
fed. Example::

    TF_CPP_MIN_LOG_LEVEL=2 python -m benchmarks.data_pipeline --scale 4 --patch-size 192 \\
        --batch-size 16 --steps 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from drn_tf import data

_DEFAULT_TRAIN_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--train-dir", type=Path, nargs="+", default=[_DEFAULT_TRAIN_DIR])
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=192, help="HR patch side")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200, help="timed batches per repeat")
    parser.add_argument("--warmup", type=int, default=20, help="untimed batches first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    pyramids, skipped = data.load_pyramids(
        args.train_dir, args.scale, args.patch_size, cache_dir=args.cache_dir, progress=False
    )
    load_s = time.perf_counter() - start

    dataset = data.make_train_dataset(
        pyramids, args.scale, args.patch_size, args.batch_size, seed=args.seed
    )
    iterator = iter(dataset)
    start = time.perf_counter()
    for _ in range(args.warmup):
        next(iterator)
    warmup_s = time.perf_counter() - start

    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            next(iterator)
        rates.append(args.steps * args.batch_size / (time.perf_counter() - start))

    report = {
        "images": len(pyramids),
        "skipped": len(skipped),
        "scale": args.scale,
        "patch_size": args.patch_size,
        "batch_size": args.batch_size,
        "load_s": round(load_s, 2),
        "warmup_s": round(warmup_s, 2),
        "samples_per_s_median": round(statistics.median(rates), 1),
        "samples_per_s_all": [round(r, 1) for r in rates],
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
