"""Training DRN with the dual-regression loss through ``model.fit`` (the paper's Algorithm 1).

The loss (authors' code, ``docs/drn-reference.md`` §1.3), all L1 means on the 0..255 range::

    L = Σ_k |SR_k − T_k|  +  dual_weight · Σ_k |D_k(SR_{k+1}) − T_k|

where ``SR_k`` is primal output ``k`` (×2^k of the LR size) and ``T_k`` its target: ``T_0`` is the
LR input itself, ``T_1 … T_{p-1}`` the MATLAB-bicubic downsamples of the HR, ``T_p`` the HR.

A per-sample ``paired`` weight (1 = paired, 0 = LR only) multiplies every term whose target
comes from an HR image: all primal terms and the dual terms above level 0. The closed-loop term
``|D_0(SR_1) − LR|`` needs only the LR image and always counts, so an LR-only sample contributes
exactly Eq. 2's ``λ·L_D(D(P(x)), x)`` (DRN-Adapt). Sums over samples are divided by the global
batch size, as in Eq. 2's ``1/(m+n)``.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from drn_tf import data
from drn_tf.config import setting
from drn_tf.degrade import imresize
from drn_tf.inference import load_model
from drn_tf.metrics import PSNR, SSIM
from drn_tf.models import DRN, build_drn_bundle, save_model_atomic

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")


def resolve_precision(precision: str) -> str:
    """``auto`` → ``mixed_float16`` on a GPU, else ``float32``.

    On CPUs mixed_bfloat16 is only faster where the CPU has native bfloat16 (see BUILD_NOTES.md,
    benchmarks/precision.py); float32 is the safe CPU default.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"


def _per_sample_l1(prediction, target):
    """Mean absolute error per sample, float32 ``(N,)``."""
    diff = ops.abs(ops.cast(prediction, "float32") - ops.cast(target, "float32"))
    return ops.mean(diff, axis=(1, 2, 3))


def pyramid_loss(
    outputs,
    dual_outputs,
    lr,
    targets,
    dual_weight: float = 0.1,
    paired=None,
    global_batch_size=None,
):
    """The DRN loss of one batch.

    Args:
        outputs: primal outputs ``[SR_0 … SR_p]``, ``SR_k`` of shape ``(N, 2^k·h, 2^k·w, 3)``.
        dual_outputs: ``[D_0(SR_1) … D_{p-1}(SR_p)]``.
        lr: the LR input ``(N, h, w, 3)`` (target of ``SR_0`` and ``D_0``).
        targets: ``(T_1 … T_p)``: downsampled HR levels, lowest first, then the HR.
        dual_weight: λ, the weight of the dual terms.
        paired: optional float ``(N,)``, 1 for paired samples, 0 for LR-only ones.
        global_batch_size: divisor of the per-sample sums (default: this batch's size); under a
            distribution strategy pass the global batch size so replicas sum to the mean.

    Returns:
        ``(loss, primal_loss, dual_loss)`` float32 scalars, where
        ``loss = primal_loss + dual_weight · dual_loss``.
    """
    levels = [lr, *targets]
    if len(outputs) != len(levels) or len(dual_outputs) != len(levels) - 1:
        raise ValueError(
            f"{len(outputs)} outputs, {len(dual_outputs)} dual outputs and "
            f"{len(levels)} levels do not form one pyramid"
        )
    batch = ops.shape(lr)[0]
    weight = ops.ones((batch,), "float32") if paired is None else ops.cast(paired, "float32")
    divisor = ops.cast(batch if global_batch_size is None else global_batch_size, "float32")

    def total(per_sample):
        return ops.sum(per_sample) / divisor

    primal = sum(
        total(weight * _per_sample_l1(sr, t)) for sr, t in zip(outputs, levels, strict=True)
    )
    dual = total(_per_sample_l1(dual_outputs[0], lr))
    dual += sum(
        total(weight * _per_sample_l1(d, t))
        for d, t in zip(dual_outputs[1:], levels[1:-1], strict=True)
    )
    return primal + dual_weight * dual, primal, dual


@keras.saving.register_keras_serializable(package="drn_tf")
class DualRegressionModel(DRN):
    """A :class:`DRN` that trains its primal and dual networks together with ``fit``.

    Batches are ``(lr, targets)`` or ``(lr, targets, paired)``: ``lr`` float32
    ``(N, h, w, 3)`` on 0..255, ``targets`` the tuple ``(T_1 … T_p)`` of
    :func:`pyramid_loss`, ``paired`` the per-sample weight of the HR-derived terms.
    Validation batches may also be ``(lr, hr)`` full images: PSNR/SSIM (Y channel, ``scale``
    pixels shaved, output rounded to 8 bits) of the top output.

    One optimizer covers primal and dual weights: Adam is per-parameter, so this equals the
    authors' separate optimizers with identical settings. A step whose loss or gradients are
    not finite is skipped (the weights and optimizer state stay as they were) and counted in
    the ``skipped_steps`` log.
    """

    def __init__(
        self, primal: keras.Model, duals: list[keras.Model], dual_weight: float = 0.1, **kwargs
    ):
        super().__init__(primal, duals, **kwargs)
        self.dual_weight = float(dual_weight)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.primal_tracker = keras.metrics.Mean(name="primal_loss")
        self.dual_tracker = keras.metrics.Mean(name="dual_loss")
        self.psnr = PSNR(shave=self.scale, name="psnr")
        self.ssim = SSIM(shave=self.scale, name="ssim")
        self.skipped_steps = keras.Variable(0, dtype="int64", trainable=False, name="skipped_steps")

    @classmethod
    def from_drn(cls, model: DRN, dual_weight: float = 0.1) -> DualRegressionModel:
        """Wraps the networks of a loaded or converted :class:`DRN` for training."""
        return cls(
            model.primal,
            model.duals,
            dual_weight=dual_weight,
            drn_config=model.drn_config,
            info=model.info,
            name=model.name,
        )

    @property
    def metrics(self):
        return [self.loss_tracker, self.primal_tracker, self.dual_tracker, self.psnr, self.ssim]

    def _pyramid_losses(self, data, training: bool):
        lr, targets, paired = keras.utils.unpack_x_y_sample_weight(data)
        targets = tuple(targets) if isinstance(targets, (tuple, list)) else (targets,)
        outputs = self.primal(lr, training=training)
        if len(targets) != len(outputs) - 1:
            return outputs, targets, None
        dual_outputs = [
            dual(outputs[k + 1], training=training) for k, dual in enumerate(self.duals)
        ]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        losses = pyramid_loss(
            outputs,
            dual_outputs,
            lr,
            targets,
            self.dual_weight,
            paired,
            global_batch_size=ops.shape(lr)[0] * replicas,
        )
        return outputs, targets, losses

    def train_step(self, data):
        with tf.GradientTape() as tape:
            _, _, losses = self._pyramid_losses(data, training=True)
            if losses is None:
                raise ValueError("training batches need every pyramid level: (lr, (T_1 … T_p))")
            loss = losses[0]
            # The loss is already a share of the global batch mean, so replica gradients sum to
            # the single-device gradient. scale_loss is a no-op unless mixed_float16.
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        finite = ops.logical_and(
            ops.all(ops.isfinite(loss)),
            ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in grads if g is not None])),
        )
        self._apply_if_finite(grads, variables, finite)
        return self._update_trackers(losses, ok=finite)

    def _apply_if_finite(self, grads, variables, finite) -> None:
        """Applies ``grads`` only when every replica's loss and gradients are finite."""
        replica = tf.distribute.get_replica_context()
        distributed = tf.distribute.has_strategy() and replica is not None
        if distributed:  # one decision for all replicas, or their weights would diverge
            bad = replica.all_reduce(
                tf.distribute.ReduceOp.SUM, ops.cast(ops.logical_not(finite), "float32")
            )
            finite = ops.equal(bad, 0.0)
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # It skips steps with non-finite gradients itself (and lowers the loss scale), but
            # does not look at the loss: an infinite target gives finite gradients. Poisoning
            # the gradients makes it skip those steps too.
            poison = ops.where(finite, 1.0, float("nan"))
            self.optimizer.apply(
                [None if g is None else g * ops.cast(poison, g.dtype) for g in grads], variables
            )
        elif not distributed or tf.__internal__.distribute.strategy_supports_no_merge_call():
            ops.cond(finite, lambda: self.optimizer.apply(grads, variables), lambda: None)
        else:
            # apply() synchronises replicas (merge_call), which a per-replica cond cannot hold;
            # decide in the cross-replica context instead, as LossScaleOptimizer does.
            def apply_if_finite(distribution, finite, grads):
                finite = distribution.experimental_local_results(finite)[0]
                ops.cond(
                    finite,
                    lambda: distribution.extended.call_for_each_replica(
                        self.optimizer.apply, args=(grads, variables)
                    ),
                    lambda: None,
                )

            replica.merge_call(apply_if_finite, args=(finite, grads))
        self.skipped_steps.assign_add(ops.cast(ops.logical_not(finite), "int64"))

    def _update_trackers(self, losses, ok=True):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # Trackers show the global batch mean, not this replica's share of it.
        for tracker, value in zip(
            (self.loss_tracker, self.primal_tracker, self.dual_tracker), losses, strict=True
        ):
            value = value * replicas
            tracker.update_state(ops.where(ok, value, 0.0), sample_weight=ops.cast(ok, "float32"))
        logs = {
            m.name: m.result() for m in (self.loss_tracker, self.primal_tracker, self.dual_tracker)
        }
        logs["skipped_steps"] = self.skipped_steps.value
        return logs

    def test_step(self, data):
        outputs, targets, losses = self._pyramid_losses(data, training=False)
        self.psnr.update_state(targets[-1], outputs[-1])
        self.ssim.update_state(targets[-1], outputs[-1])
        logs = {"psnr": self.psnr.result(), "ssim": self.ssim.result()}
        if losses is not None:
            logs.update(self._update_trackers(losses))
            del logs["skipped_steps"]
        return logs

    def get_config(self):
        return {**super().get_config(), "dual_weight": self.dual_weight}


# --- a training run: data, model, callbacks, outputs ------------------------------------------


@dataclasses.dataclass
class TrainConfig:
    """A training run. Defaults are the authors' recipe (docs/drn-reference.md §3)."""

    train_dir: list[str] = setting([], "Folder(s) of HR training images (recursive).")
    val_dir: list[str] = setting([], "Folder(s) of validation images (benchmark layout or plain).")
    output: str = setting("runs/drn", "Run directory: model, checkpoints, logs, curves.")
    variant: str = setting("drn-s", "drn-s or drn-l.")
    scale: int = setting(4, "Upscaling factor, a power of two.")
    n_blocks: int | None = setting(None, "RCABs per up-phase (default: the variant's preset).")
    n_feats: int | None = setting(None, "Base feature width (default: the variant's preset).")
    init: str | None = setting(None, "Start from this .keras model (e.g. a converted checkpoint).")
    steps: int = setting(1_000_000, "Training steps (batches) in all.")
    steps_per_epoch: int = setting(1000, "Steps between validations, checkpoints and backups.")
    batch_size: int = setting(32, "Global batch size (split over replicas).")
    patch_size: int = setting(384, "HR patch size; the LR input is patch_size / scale.")
    learning_rate: float = setting(1e-4, "Initial Adam learning rate.")
    min_learning_rate: float = setting(1e-7, "Learning rate at the end of the cosine decay.")
    beta_1: float = setting(0.9, "Adam beta 1.")
    beta_2: float = setting(0.999, "Adam beta 2.")
    epsilon: float = setting(1e-8, "Adam epsilon.")
    dual_weight: float = setting(0.1, "Weight of the dual (closed-loop) loss.")
    augment: bool = setting(True, "Random flips and transposes.")
    precision: str = setting("auto", "float32, mixed_float16, mixed_bfloat16 or auto.")
    cache_dir: str | None = setting(None, "On-disk cache of the computed LR pyramids.")
    seed: int = setting(1, "Random seed (data order, crops, initialisation).")
    tensorboard: bool = setting(True, "Write TensorBoard scalars and SR sample images.")
    verbose: int = setting(1, "Keras progress output: 0 silent, 1 progress bar, 2 one line/epoch.")


class SampleImages(keras.callbacks.Callback):
    """Writes bicubic | SR | HR crops of a few validation images to TensorBoard every epoch."""

    def __init__(self, log_dir: str, pairs, crop: int = 128):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self.pairs, self.crop = pairs, crop

    def on_epoch_end(self, epoch, logs=None):
        rows = []
        for lr, hr in self.pairs:
            sr = self.model.primal(lr[None].astype("float32"), training=False)[-1][0]
            bicubic = imresize(lr, hr.shape[0] / lr.shape[0])
            crop = (slice(0, self.crop), slice(0, self.crop))
            rows.append(
                np.concatenate(
                    [bicubic[crop], np.clip(np.round(sr[crop]), 0, 255).astype(np.uint8), hr[crop]],
                    axis=1,
                )
            )
        with self.writer.as_default():
            tf.summary.image(
                "bicubic|sr|hr",
                np.stack(rows) if len({r.shape for r in rows}) == 1 else rows[:1],
                step=epoch,
                max_outputs=len(rows),
            )
        self.writer.flush()


class SaveModel(keras.callbacks.Callback):
    """Saves the model atomically at each epoch end (``latest``) and on a new best ``monitor``."""

    def __init__(
        self,
        latest: Path,
        best: Path | None = None,
        monitor: str = "val_psnr",
        log_csv: Path | None = None,
    ):
        super().__init__()
        self.latest, self.best, self.monitor, self.log_csv = latest, best, monitor, log_csv
        self.best_value = -np.inf

    def on_train_begin(self, logs=None):
        # A resumed run must not let its first epoch overwrite a better earlier best.
        if self.log_csv is not None and self.log_csv.is_file():
            with open(self.log_csv) as file:
                values = [
                    float(row[self.monitor])
                    for row in csv.DictReader(file)
                    if row.get(self.monitor)
                ]
            self.best_value = max(values, default=-np.inf)

    def on_epoch_end(self, epoch, logs=None):
        save_model_atomic(self.model, self.latest)
        value = (logs or {}).get(self.monitor)
        if self.best is not None and value is not None and value > self.best_value:
            self.best_value = value
            save_model_atomic(self.model, self.best)


def build_model(config: TrainConfig) -> DualRegressionModel:
    """A fresh model of ``config``'s size, or the ``config.init`` model wrapped for training."""
    if config.init:
        loaded = load_model(config.init)  # checks the file and that it holds a DRN
        if loaded.scale != config.scale:
            raise ValueError(
                f"{config.init}: a ×{loaded.scale} model, but --scale is {config.scale}"
            )
        return DualRegressionModel.from_drn(loaded, config.dual_weight)
    fresh = build_drn_bundle(
        config.variant, config.scale, n_blocks=config.n_blocks, n_feats=config.n_feats
    )
    return DualRegressionModel.from_drn(fresh, config.dual_weight)


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam with cosine decay from ``learning_rate`` to ``min_learning_rate`` over the run."""
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate,
        decay_steps=config.steps,
        alpha=config.min_learning_rate / config.learning_rate,
    )
    return keras.optimizers.Adam(
        schedule, beta_1=config.beta_1, beta_2=config.beta_2, epsilon=config.epsilon
    )


def train(
    config: TrainConfig, strategy: tf.distribute.Strategy | None = None
) -> DualRegressionModel:
    """Runs ``config`` end to end and returns the trained model.

    Writes to ``config.output``: ``model.keras`` (final), ``best.keras`` (best validation
    PSNR), ``latest.keras`` (each epoch), ``backup/`` (resumes a killed run where it stopped,
    optimizer state and schedule included), ``log.csv``, ``curves.png`` and ``tensorboard/``.
    """
    if not config.train_dir:
        raise ValueError("no training folder given (--train-dir)")
    if config.steps < 1 or config.steps_per_epoch < 1:
        raise ValueError("--steps and --steps-per-epoch must be positive")
    if config.patch_size % config.scale:
        raise ValueError(
            f"--patch-size {config.patch_size} is not a multiple of the scale {config.scale}"
        )
    precision = resolve_precision(config.precision)
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(config.seed)
    strategy = strategy or tf.distribute.get_strategy()
    run = Path(config.output)
    run.mkdir(parents=True, exist_ok=True)

    pyramids, skipped = data.load_pyramids(
        config.train_dir,
        config.scale,
        config.patch_size,
        cache_dir=config.cache_dir,
        progress=config.verbose > 0,
    )
    for path, reason in skipped:
        logging.warning("skipped %s: %s", path, reason)
    print(
        f"training on {len(pyramids)} images ({len(skipped)} skipped), precision {precision}, "
        f"{strategy.num_replicas_in_sync} replica(s)"
    )
    train_ds = data.make_train_dataset(
        pyramids,
        config.scale,
        config.patch_size,
        config.batch_size,
        seed=config.seed,
        augment=config.augment,
    )
    val_ds, val_pairs = None, []
    for folder in config.val_dir:
        pairs = data.load_eval_pairs(folder, config.scale)
        val_pairs += [(lr, hr) for _, lr, hr in pairs]
        ds = data.make_eval_dataset(folder, config.scale)
        val_ds = ds if val_ds is None else val_ds.concatenate(ds)

    with strategy.scope():
        model = build_model(config)
        model.compile(optimizer=make_optimizer(config))

    callbacks = [
        keras.callbacks.BackupAndRestore(
            str(run / "backup"), save_freq="epoch", delete_checkpoint=False
        ),
        keras.callbacks.CSVLogger(str(run / "log.csv"), append=True),
        keras.callbacks.TerminateOnNaN(),
        SaveModel(
            run / "latest.keras",
            run / "best.keras" if val_ds is not None else None,
            log_csv=run / "log.csv",
        ),
    ]
    if config.tensorboard:
        callbacks.append(
            keras.callbacks.TensorBoard(str(run / "tensorboard"), update_freq=50, write_graph=False)
        )
        if val_pairs:
            callbacks.append(SampleImages(run / "tensorboard" / "samples", val_pairs[:3]))
    epochs = -(-config.steps // config.steps_per_epoch)
    model.fit(
        train_ds,
        epochs=epochs,
        steps_per_epoch=config.steps_per_epoch,
        validation_data=val_ds,
        callbacks=callbacks,
        verbose=config.verbose,
        shuffle=False,
    )  # the dataset shuffles itself
    save_model_atomic(model, run / "model.keras")
    skipped_steps = int(model.skipped_steps.numpy())
    if skipped_steps:
        logging.warning(
            "%d step(s) had a non-finite loss or gradient and were skipped", skipped_steps
        )
    plot_curves(run / "log.csv", run / "curves.png")
    return model


def plot_curves(log_csv: Path, output: Path) -> None:
    """Draws training loss and validation PSNR per epoch from a ``CSVLogger`` file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_csv) as file:
        rows = list(csv.DictReader(file))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(epochs, [float(r["loss"]) for r in rows], color="tab:blue", label="train loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss (L1, 0..255)", color="tab:blue")
    if "val_psnr" in rows[0]:
        psnr_axis = loss_axis.twinx()
        psnr_axis.plot(
            epochs,
            [float(r["val_psnr"]) for r in rows],
            color="tab:red",
            marker=".",
            label="validation PSNR",
        )
        psnr_axis.set_ylabel("validation Y-PSNR (dB)", color="tab:red")
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    plt.close(figure)
