"""Training DRN from a notebook with ``model.fit`` — the same steps ``drn-tf train`` takes.

    python examples/train_in_notebook.py --train-dir PHOTOS/ --val-dir Set5/ --steps 200

Each block below is a notebook cell. The sizes are small so it runs on a laptop CPU; drop the
``n_blocks``/``n_feats`` overrides and use the recipe defaults for the paper's DRN-S.
"""

import argparse

import keras

import drn_tf
from drn_tf import data
from drn_tf.image_sets import load_pyramids
from drn_tf.training import DualRegressionModel

parser = argparse.ArgumentParser()
parser.add_argument("--train-dir", required=True)
parser.add_argument("--val-dir", required=True)
parser.add_argument("--steps", type=int, default=200)
args = parser.parse_args()

# 1. Data: HR photos → aligned (LR ×4, (LR ×2, HR)) patches; validation on full images.
scale, patch_size, batch_size = 4, 96, 8
pyramids, skipped = load_pyramids(args.train_dir, scale, min_size=patch_size)
train_ds = data.make_train_dataset(pyramids, scale, patch_size, batch_size)
val_ds = data.make_eval_dataset(args.val_dir, scale)

# 2. Model: primal + dual networks, trained together by the dual-regression loss.
sizes = {"n_blocks": 4, "n_feats": 8}
model = DualRegressionModel(
    drn_tf.build_drn("drn-s", scale, **sizes),
    drn_tf.build_duals("drn-s", scale, **sizes),
    dual_weight=0.1,
)
schedule = keras.optimizers.schedules.CosineDecay(1e-4, decay_steps=args.steps, alpha=1e-3)
model.compile(optimizer=keras.optimizers.Adam(schedule))

# 3. Train; the logs show loss, primal_loss, dual_loss, and val_psnr / val_ssim (Y channel).
model.fit(train_ds, steps_per_epoch=max(args.steps // 4, 1), epochs=4, validation_data=val_ds)

# 4. One file holds primal and duals; it loads back with keras.saving.load_model.
model.save("drn_notebook.keras")
sr_levels = model.predict(next(iter(val_ds))[0])  # [×1, ×2, ×4] images, float32 on 0..255
print("top output:", sr_levels[-1].shape)
