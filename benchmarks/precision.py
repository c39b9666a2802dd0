"""Training-step time of one DRN configuration under each precision, side by side in one run.

    python -m benchmarks.precision --n-blocks 4 --n-feats 8 --patch-size 96 --batch-size 8

Each policy gets a fresh model and a warm-up before timing, on the same synthetic batch, so the
numbers compare only the arithmetic. ``--precision auto`` in training picks from what this shows.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from drn_tf.models import build_drn, build_duals  # noqa: E402
from drn_tf.training import DualRegressionModel  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("variant", "drn-s", "drn-s or drn-l.")
flags.DEFINE_integer("scale", 4, "Upscaling factor.")
flags.DEFINE_integer("n_blocks", 4, "RCABs per up-phase.")
flags.DEFINE_integer("n_feats", 8, "Base feature width.")
flags.DEFINE_integer("patch_size", 96, "HR patch size.")
flags.DEFINE_integer("batch_size", 8, "Batch size.")
flags.DEFINE_integer("steps", 10, "Timed steps per precision.")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16", "mixed_float16"], "Policies.")


def time_policy(policy: str) -> float:
    """Seconds per training step under ``policy``."""
    keras.mixed_precision.set_global_policy(policy)
    sizes = {"n_blocks": FLAGS.n_blocks, "n_feats": FLAGS.n_feats}
    model = DualRegressionModel(
        build_drn(FLAGS.variant, FLAGS.scale, **sizes),
        build_duals(FLAGS.variant, FLAGS.scale, **sizes),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    rng = np.random.default_rng(0)
    p, b = FLAGS.patch_size, FLAGS.batch_size
    levels = [
        rng.uniform(0, 255, (b, p // k, p // k, 3)).astype("float32")
        for k in (FLAGS.scale // 2**i for i in range(int(np.log2(FLAGS.scale)) + 1))
    ]
    dataset = tf.data.Dataset.from_tensors((levels[0], tuple(levels[1:]))).repeat()
    model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=FLAGS.steps, epochs=1, verbose=0)
    return (time.perf_counter() - start) / FLAGS.steps


def main(argv):
    del argv
    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    print(
        f"{FLAGS.variant} x{FLAGS.scale} n_blocks={FLAGS.n_blocks} n_feats={FLAGS.n_feats} "
        f"patch={FLAGS.patch_size} batch={FLAGS.batch_size} on {device}"
    )
    results = {policy: time_policy(policy) for policy in FLAGS.precisions}
    baseline = results.get("float32")
    for policy, seconds in results.items():
        relative = f"{baseline / seconds:5.2f}x float32" if baseline else ""
        print(
            f"{policy:>15}: {seconds * 1000:8.1f} ms/step  "
            f"{FLAGS.batch_size / seconds:7.1f} samples/s  {relative}"
        )


if __name__ == "__main__":
    app.run(main)
