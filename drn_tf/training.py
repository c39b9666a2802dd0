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

DRN-Adapt (``drn-tf adapt``, ``train(AdaptConfig(...))``, ``docs/drn-reference.md`` §1.5) starts
from a trained model and fine-tunes primal and duals on batches with an exact share ρ of LR-only
samples (:func:`drn_tf.data.make_mixed_dataset`). Their closed loop is ``unpaired_loop``:

* ``cascade`` (the default): ``|D_0(SR_1) − x|`` plus ``|D_0(D_1(…D_{p−1}(SR_p))) − x|``, the
  loop through the top output (the only one that reaches the last up-phase);
* ``first``: ``|D_0(SR_1) − x|`` alone, Eq. 2 as the landed loss writes it.

Why ``cascade``: ``python -m benchmarks.adaptation`` (the packaged ×4 model; 500 steps of batch
10 = 7 bicubic pairs + 3 LR-only ``LR_nearest`` photos, HR patch 64, Adam 2e-4 → 1e-6, λ 0.1;
Y-PSNR on Set5 / Set14 ×4, mean of seeds 1, 2, 3 and their range in the README):

==============  ===============  ===============  ==========================
model           nearest LR       bicubic LR       loop error, nearest sets
==============  ===============  ===============  ==========================
un-adapted      24.26 / 21.84    31.26 / 27.97    3.79
paired only     24.29 / 21.87    31.25 / 27.96    3.83
adapt, first    24.30 / 21.88    31.25 / 27.96    3.79
adapt, cascade  24.42 / 21.99    31.23 / 27.96    3.33
paired nearest  26.44 / 24.42    30.95 / 27.80    4.92
==============  ===============  ===============  ==========================

``cascade`` raises nearest-LR PSNR in every seed (+0.15 to +0.17 dB on both sets), by more
than the paired-only control moves it, and costs at most 0.04 dB on bicubic LR; ``first`` stays
within 0.013 dB of the control. With 1,500 steps (``--seeds 1 --steps 1500``) ``cascade`` gains
+0.15 / +0.16 dB at −0.01 / −0.01 dB on bicubic (control +0.05 / +0.06, ``first`` +0.04 /
+0.04): no larger. Why ``first`` does not help: its loop ends at the ×2 output, so the last
up-phase, which makes most of the ×4 detail, never sees the LR-only images.

Why the gain stays far below the upper bound (``paired nearest``): the paired samples anchor
the duals to *bicubic* downsampling, so the closed loop asks ``P(x)`` for an image whose
bicubic downsample is the nearest LR, which the true HR is not (the upper bound has the best
PSNR and the *largest* loop error). A falling loop error shows the model becoming consistent
with its duals, not closer to the truth. With the earlier, smaller packaged ×4 model (4 RCABs
per phase) neither loop gained (``first`` ±0.01 dB, ``cascade`` −0.04 / −0.06 dB; with λ = 1
``cascade`` lost 0.37 / 0.40 dB on nearest).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from drn_tf import data, distribute
from drn_tf import precision as precision_rule
from drn_tf.config import AdaptConfig, TrainConfig
from drn_tf.degrade import imresize
from drn_tf.files import atomic_path, remove_stale_temp_files
from drn_tf.image_sets import load_eval_pairs, load_lr_images, load_pyramids
from drn_tf.inference import load_model
from drn_tf.metrics import PSNR, SSIM
from drn_tf.models import DRN, VARIANTS, DRNConfig, build_drn_bundle, save_model_atomic

PRECISIONS = precision_rule.TRAINING_PRECISIONS
UNPAIRED_LOOPS = ("first", "cascade")


def resolve_precision(precision: str) -> str:
    """A training ``--precision`` → a Keras dtype policy: :func:`drn_tf.precision.resolve_precision`
    for training (``auto``: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with AMX, else
    float32)."""
    return precision_rule.resolve_precision(precision, training=True)


def _per_sample_l1(prediction, target):
    """Mean absolute error per sample, float32 ``(N,)``."""
    diff = ops.abs(ops.cast(prediction, "float32") - ops.cast(target, "float32"))
    return ops.mean(diff, axis=(1, 2, 3))


def closed_loop(duals: list[keras.Model], top, training: bool = False):
    """``D_0(D_1(… D_{p-1}(top)))``: the top SR output taken back to the LR size by every dual
    network in turn, ``(N, h, w, 3)`` for ``top`` of ``(N, 2^p·h, 2^p·w, 3)`` (float, 0..255).
    Its distance to the input is the closed-loop error ``|D(P(x)) − x|``."""
    for dual in reversed(duals):
        top = dual(top, training=training)
    return top


def pyramid_loss(
    outputs,
    dual_outputs,
    lr,
    targets,
    dual_weight: float = 0.1,
    paired=None,
    global_batch_size=None,
    loop=None,
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
        loop: optional :func:`closed_loop` output ``(N, h, w, 3)``; its term ``|loop − lr|``
            joins the dual loss for LR-only samples only (weight ``1 − paired``): the
            ``cascade`` option of DRN-Adapt.

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
    if loop is not None:
        dual += total((1.0 - weight) * _per_sample_l1(loop, lr))
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

    Batches with ``paired`` (DRN-Adapt, :func:`drn_tf.data.make_mixed_dataset`) also log
    ``loop_error``: the mean closed-loop error ``|D(P(x)) − x|`` (:func:`closed_loop`, 0..255)
    of their LR-only samples, a readout that needs no HR. ``unpaired_loop`` picks the loss of
    the LR-only samples: ``"cascade"`` (the default: ``|D_0(SR_1) − x|`` plus
    ``|closed_loop − x|``; the same loop for ×2 models, so no extra term) or ``"first"``
    (``|D_0(SR_1) − x|`` alone). Paired samples never get the cascaded term.
    """

    def __init__(
        self,
        primal: keras.Model,
        duals: list[keras.Model],
        dual_weight: float = 0.1,
        unpaired_loop: str = "cascade",
        **kwargs,
    ):
        super().__init__(primal, duals, **kwargs)
        if unpaired_loop not in UNPAIRED_LOOPS:
            raise ValueError(
                f"unpaired_loop must be one of {', '.join(UNPAIRED_LOOPS)}, got {unpaired_loop!r}"
            )
        self.dual_weight = float(dual_weight)
        self.unpaired_loop = unpaired_loop
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.primal_tracker = keras.metrics.Mean(name="primal_loss")
        self.dual_tracker = keras.metrics.Mean(name="dual_loss")
        self.loop_tracker = keras.metrics.Mean(name="loop_error")
        self.psnr = PSNR(shave=self.scale, name="psnr")
        self.ssim = SSIM(shave=self.scale, name="ssim")
        self.skipped_steps = keras.Variable(0, dtype="int64", trainable=False, name="skipped_steps")

    @classmethod
    def from_drn(
        cls, model: DRN, dual_weight: float = 0.1, unpaired_loop: str = "cascade"
    ) -> DualRegressionModel:
        """Wraps the networks of a loaded or converted :class:`DRN` for training."""
        return cls(
            model.primal,
            model.duals,
            dual_weight=dual_weight,
            unpaired_loop=unpaired_loop,
            drn_config=model.drn_config,
            info=model.info,
            name=model.name,
        )

    @property
    def metrics(self):
        trackers = [self.loss_tracker, self.primal_tracker, self.dual_tracker, self.loop_tracker]
        return [*trackers, self.psnr, self.ssim]

    def _pyramid_losses(self, data, training: bool):
        """``(outputs, targets, losses or None, loop_errors or None)``; ``loop_errors`` is the
        per-sample closed-loop error, ``(N,)``, of batches that carry ``paired``."""
        lr, targets, paired = keras.utils.unpack_x_y_sample_weight(data)
        targets = tuple(targets) if isinstance(targets, (tuple, list)) else (targets,)
        outputs = self.primal(lr, training=training)
        if len(targets) != len(outputs) - 1:
            return outputs, targets, None, None
        dual_outputs = [
            dual(outputs[k + 1], training=training) for k, dual in enumerate(self.duals)
        ]
        loop = loop_errors = None
        if paired is not None:
            loop = closed_loop(self.duals, outputs[-1], training)
            loop_errors = _per_sample_l1(loop, lr)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        losses = pyramid_loss(
            outputs,
            dual_outputs,
            lr,
            targets,
            self.dual_weight,
            paired,
            global_batch_size=ops.shape(lr)[0] * replicas,
            # With one dual the cascade is D_0(SR_1) again: no second term.
            loop=loop if self.unpaired_loop == "cascade" and len(self.duals) > 1 else None,
        )
        return outputs, targets, losses, loop_errors

    def train_step(self, data):
        with tf.GradientTape() as tape:
            _, _, losses, loop_errors = self._pyramid_losses(data, training=True)
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
        logs = self._update_trackers(losses, ok=finite)
        if loop_errors is not None:
            unpaired = 1.0 - ops.cast(keras.utils.unpack_x_y_sample_weight(data)[2], "float32")
            self.loop_tracker.update_state(
                ops.where(finite, loop_errors, 0.0),
                sample_weight=unpaired * ops.cast(finite, "float32"),
            )
            logs["loop_error"] = self.loop_tracker.result()
        return logs

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
        outputs, targets, losses, _ = self._pyramid_losses(data, training=False)
        self.psnr.update_state(targets[-1], outputs[-1])
        self.ssim.update_state(targets[-1], outputs[-1])
        logs = {"psnr": self.psnr.result(), "ssim": self.ssim.result()}
        if losses is not None:
            logs.update(self._update_trackers(losses))
            del logs["skipped_steps"]
        return logs

    def get_config(self):
        return {
            **super().get_config(),
            "dual_weight": self.dual_weight,
            "unpaired_loop": self.unpaired_loop,
        }


# --- a training run: data, model, callbacks, outputs ------------------------------------------


# Flags that do not change what a run computes: a run resumes whatever they say. Every other
# flag must match the run's run.json.
# The strategy too: the global batch, hence the run, is the same on any number of devices.
COSMETIC_FLAGS = frozenset(
    {"output", "progress", "tensorboard", "cache_dir", "overwrite", "strategy", "cluster_timeout"}
)
RUN_FILE = "run.json"
# Everything a run writes into its folder; --overwrite deletes exactly these.
RUN_OUTPUTS = (
    RUN_FILE,
    "backup",
    "log.csv",
    "tensorboard",
    "model.keras",
    "latest.keras",
    "best.keras",
    "curves.png",
)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_writable_folder(path: str, flag: str) -> None:
    """Fails unless ``path`` is a folder, or can be created as one, that we may write in."""
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "not a folder" if existing == folder else f"{existing} is not a folder"
        raise ValueError(f"{flag} {path}: {where}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: cannot write in {existing} (permission denied)")


RunConfig = TrainConfig | AdaptConfig


# The folder flags of each kind of run, and what the required ones hold.
_REQUIRED_FOLDERS = {
    "train": {"train_dir": "training"},
    "adapt": {"paired_dir": "paired", "unpaired_dir": "LR-only"},
}


def _folder_flags(config: RunConfig) -> tuple[str, ...]:
    return (*_REQUIRED_FOLDERS[_command(config)], "val_dir")


def validate_config(config: RunConfig) -> None:
    """Checks every setting of ``config`` and the paths it names, reading no image and writing
    nothing (an :class:`AdaptConfig`'s ``--patch-size`` is checked against the model's scale
    once the model is loaded).

    Raises:
        ValueError: the first problem found, in one line naming the flag.
    """
    adapting = isinstance(config, AdaptConfig)
    for name, what in _REQUIRED_FOLDERS[_command(config)].items():
        if not getattr(config, name):
            raise ValueError(f"no {what} folder given: {_flag(name)} is required")
    for name in _folder_flags(config):
        for folder in getattr(config, name):
            if not Path(folder).is_dir():
                problem = "not a folder" if Path(folder).exists() else "folder does not exist"
                raise ValueError(f"{_flag(name)} {folder}: {problem}")
    start = config.model if adapting else config.init
    if start not in (None, "default") and not Path(start).is_file():
        raise ValueError(f"{'--model' if adapting else '--init'} {start}: file does not exist")
    if adapting:
        if config.unpaired_loop not in UNPAIRED_LOOPS:
            raise ValueError(
                f"--unpaired-loop must be one of {', '.join(UNPAIRED_LOOPS)}, "
                f"got {config.unpaired_loop!r}"
            )
        if config.batch_size >= 1:
            data.unpaired_count(config.batch_size, config.unpaired_ratio)
    else:
        if config.variant not in VARIANTS:
            raise ValueError(
                f"--variant must be one of {', '.join(VARIANTS)}, got {config.variant!r}"
            )
        if config.scale < 2 or config.scale & (config.scale - 1):
            raise ValueError(f"--scale {config.scale} is not a power of two (2, 4, 8, …)")
        for name in ("n_blocks", "n_feats"):
            value = getattr(config, name)
            if value is not None and value < 1:
                raise ValueError(f"{_flag(name)} must be at least 1, got {value}")
    for name in ("steps", "steps_per_epoch", "batch_size", "patch_size", "cluster_timeout"):
        if getattr(config, name) < 1:
            raise ValueError(f"{_flag(name)} must be at least 1, got {getattr(config, name)}")
    if not adapting:
        _check_patch_size(config.patch_size, config.scale, "--scale")
    # `not x > 0` rather than `x <= 0`, so that NaN fails too.
    if not config.learning_rate > 0:
        raise ValueError(f"--learning-rate must be positive, got {config.learning_rate}")
    if not 0 <= config.min_learning_rate <= config.learning_rate:
        raise ValueError(
            f"--min-learning-rate must be between 0 and --learning-rate {config.learning_rate}, "
            f"got {config.min_learning_rate}"
        )
    for name in ("beta_1", "beta_2"):
        if not 0 <= getattr(config, name) < 1:
            raise ValueError(f"{_flag(name)} must be in [0, 1), got {getattr(config, name)}")
    if not config.epsilon > 0:
        raise ValueError(f"--epsilon must be positive, got {config.epsilon}")
    if not config.dual_weight >= 0:
        raise ValueError(f"--dual-weight must be at least 0, got {config.dual_weight}")
    if config.precision not in PRECISIONS:
        raise ValueError(
            f"--precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}"
        )
    if config.progress not in (0, 1, 2):
        raise ValueError(f"--progress must be 0, 1 or 2, got {config.progress}")
    _check_writable_folder(config.output, "--output")
    if config.cache_dir is not None:
        _check_writable_folder(config.cache_dir, "--cache-dir")


def _check_patch_size(patch_size: int, scale: int, what: str) -> None:
    if patch_size % scale:
        raise ValueError(f"--patch-size {patch_size} is not a multiple of {what} {scale}")


def _command(config: RunConfig) -> str:
    return "adapt" if isinstance(config, AdaptConfig) else "train"


def run_record(config: RunConfig) -> dict:
    """``config`` as saved in ``run.json``, with the ``command`` (``train`` or ``adapt``):
    folders and files as absolute paths, and the variant's preset sizes filled in, so that
    equal runs compare equal however spelt."""
    record = {"command": _command(config), **dataclasses.asdict(config)}
    for name in _folder_flags(config):
        record[name] = [str(Path(folder).resolve()) for folder in record[name]]
    if isinstance(config, AdaptConfig):
        if config.model != "default":
            record["model"] = str(Path(config.model).resolve())
    elif config.init is not None:
        record["init"] = str(Path(config.init).resolve())
    elif config.variant in VARIANTS:
        sizes = DRNConfig(config.variant, config.scale, config.n_blocks, config.n_feats)
        record["n_blocks"], record["n_feats"] = sizes.n_blocks, sizes.n_feats
    return record


def _effective_steps_per_epoch(config: RunConfig) -> int:
    return min(config.steps_per_epoch, config.steps)


def check_run_folder(config: RunConfig) -> int | None:
    """Decides between a fresh run and resuming the run in ``config.output``.

    Returns ``None`` for a fresh start (no run there, or ``config.overwrite``), else the step
    the saved run resumes at (0 when it was killed before its first epoch ended).

    Raises:
        ValueError: the folder holds a run with other flags, or one without ``run.json``
            (written by drn-tf before 0.2, or not by drn-tf).
    """
    run = Path(config.output)
    if config.overwrite or not any((run / name).exists() for name in RUN_OUTPUTS):
        return None
    advice = "use a new --output or --overwrite"
    try:
        saved = json.loads((run / RUN_FILE).read_text())
    except FileNotFoundError:
        raise ValueError(
            f"{run} holds a run of unknown flags (no {RUN_FILE}; an older drn-tf?); {advice}"
        ) from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{run / RUN_FILE}: unreadable ({error}); {advice}") from None
    saved_command = saved.get("command", "train")  # run.json before drn-tf adapt had none
    if saved_command != _command(config):
        raise ValueError(f"{run} holds a drn-tf {saved_command} run; {advice}")
    current, defaults = run_record(config), run_record(type(config)())

    def shown(value) -> str:
        return " ".join(map(str, value)) if isinstance(value, list) else str(value)

    differences = [
        f"{_flag(name)} {shown(value)} vs {shown(saved.get(name, defaults[name]))} saved"
        for name, value in current.items()
        if name not in COSMETIC_FLAGS and saved.get(name, defaults[name]) != value
    ]
    if differences:
        raise ValueError(f"{run} holds a different run ({', '.join(differences)}); {advice}")
    try:
        epochs = json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0  # killed before BackupAndRestore wrote anything: the run starts over
    return min(int(epochs) * _effective_steps_per_epoch(config), config.steps)


def _start_run_folder(config: RunConfig) -> None:
    """Deletes an old run for ``--overwrite`` and records ``config`` in ``run.json``."""
    run = Path(config.output)
    if config.overwrite:
        for name in RUN_OUTPUTS:
            path = run / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    with atomic_path(run / RUN_FILE) as temp:
        temp.write_text(json.dumps(run_record(config), indent=2) + "\n")


def _numbers(rows: list[dict], x: str, y: str) -> tuple[list[float], list[float]]:
    """The ``(x, y)`` pairs of CSV ``rows`` where both are finite numbers ('NA', blanks and
    missing columns are skipped)."""
    xs, ys = [], []
    for row in rows:
        try:
            a, b = float(row.get(x) or "nan"), float(row.get(y) or "nan")
        except ValueError:
            continue
        if np.isfinite(a) and np.isfinite(b):
            xs.append(a)
            ys.append(b)
    return xs, ys


def _read_rows(log_csv: Path) -> list[dict]:
    if not log_csv.is_file():
        return []
    with open(log_csv, newline="") as file:
        return list(csv.DictReader(file))


class StopAtStep(keras.callbacks.Callback):
    """Stops ``fit`` after exactly ``steps`` batches in all, mid-epoch if need be (the last
    epoch is then shorter; validation and the epoch-end callbacks still run)."""

    def __init__(self, steps: int, steps_per_epoch: int):
        super().__init__()
        self.steps, self.steps_per_epoch, self.epoch = steps, steps_per_epoch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch * self.steps_per_epoch + batch + 1 >= self.steps:
            self.model.stop_training = True


class RunLog(keras.callbacks.Callback):
    """Appends one row per epoch to ``log.csv``: ``epoch`` (from 0), ``step`` (batches done),
    ``resumed`` (1 on the first row after a resume) and the epoch's logs.

    The columns are fixed by the file's first line, so every row of a file has the same
    columns: a value the header lacks is dropped, a missing one written as ``NA``.
    """

    def __init__(self, path: Path, steps_per_epoch: int, steps: int, resumed: bool = False):
        super().__init__()
        self.path, self.steps_per_epoch, self.steps = path, steps_per_epoch, steps
        self.resumed = resumed

    def on_epoch_end(self, epoch, logs=None):
        row = {
            "epoch": epoch,
            "step": min((epoch + 1) * self.steps_per_epoch, self.steps),
            "resumed": int(self.resumed),
            **{k: float(v) for k, v in (logs or {}).items()},
        }
        self.resumed = False
        header = None
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, newline="") as file:
                header = next(csv.reader(file), None)
        with open(self.path, "a", newline="") as file:
            writer = csv.DictWriter(file, header or list(row), restval="NA", extrasaction="ignore")
            if header is None:
                writer.writeheader()
            writer.writerow(row)


class TensorBoardLog(keras.callbacks.Callback):
    """TensorBoard summaries under ``log_dir``, against the global step (batches done):

    - ``train/``: ``batch_loss`` every ``batch_every`` steps; ``epoch_<name>`` of every training
      log at each epoch end; the text ``run`` (``note``) when training starts.
    - ``validation/``: ``epoch_<name>`` of the ``val_`` logs and, for up to three ``samples``
      ``(lr, hr)`` uint8 pairs, a bicubic | SR | HR image at each epoch end.

    Unlike ``keras.callbacks.TensorBoard(update_freq=N)``, whose step filter also silences its
    epoch summaries, every epoch is written, however short.
    """

    def __init__(
        self,
        log_dir: Path,
        steps_per_epoch: int,
        samples=(),
        note: str | None = None,
        start_step: int = 0,
        batch_every: int = 50,
        crop: int = 128,
    ):
        super().__init__()
        self.log_dir, self.steps_per_epoch, self.samples = Path(log_dir), steps_per_epoch, samples
        self.note, self.step, self.batch_every, self.crop = note, start_step, batch_every, crop
        self.epoch, self.writers = 0, {}

    def on_train_begin(self, logs=None):
        self.writers = {
            name: tf.summary.create_file_writer(str(self.log_dir / name))
            for name in ("train", "validation")
        }
        if self.note:
            with self.writers["train"].as_default():
                tf.summary.text("run", self.note, step=self.step)
            self.writers["train"].flush()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.step = self.epoch * self.steps_per_epoch + batch + 1
        if self.step % self.batch_every == 0 and "loss" in (logs or {}):
            with self.writers["train"].as_default():
                tf.summary.scalar("batch_loss", float(logs["loss"]), step=self.step)

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            writer = "validation" if name.startswith("val_") else "train"
            with self.writers[writer].as_default():
                tf.summary.scalar(f"epoch_{name.removeprefix('val_')}", float(value), self.step)
        if self.samples:
            with self.writers["validation"].as_default():
                rows = [self._sample_row(lr, hr) for lr, hr in self.samples]
                tf.summary.image(
                    "bicubic|sr|hr",
                    np.stack(rows) if len({r.shape for r in rows}) == 1 else rows[:1],
                    step=self.step,
                    max_outputs=len(rows),
                )
        for writer in self.writers.values():
            writer.flush()

    def _sample_row(self, lr: np.ndarray, hr: np.ndarray) -> np.ndarray:
        sr = self.model.primal(lr[None].astype("float32"), training=False)[-1][0]
        bicubic = imresize(lr, hr.shape[0] / lr.shape[0])
        crop = (slice(0, self.crop), slice(0, self.crop))
        return np.concatenate(
            [bicubic[crop], np.clip(np.round(sr[crop]), 0, 255).astype(np.uint8), hr[crop]],
            axis=1,
        )

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()


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
        if self.log_csv is not None:
            values = _numbers(_read_rows(self.log_csv), self.monitor, self.monitor)[1]
            self.best_value = max(values, default=-np.inf)

    def on_epoch_end(self, epoch, logs=None):
        save_model_atomic(self.model, self.latest)
        value = (logs or {}).get(self.monitor)
        if self.best is not None and value is not None and value > self.best_value:
            self.best_value = value
            save_model_atomic(self.model, self.best)


def build_model(config: RunConfig) -> DualRegressionModel:
    """A fresh model of ``config``'s size, or the ``config.init`` model wrapped for training;
    for an :class:`AdaptConfig`, the ``config.model`` to adapt (primal and dual weights as
    saved)."""
    if isinstance(config, AdaptConfig):
        loaded = load_model(config.model)  # checks the file and that it holds a DRN
        _check_patch_size(config.patch_size, loaded.scale, f"{config.model}'s scale")
        if loaded.info.get("duals") == "random":
            logging.warning(
                "%s has randomly initialised dual networks: its closed loop means nothing "
                "until they are trained (convert with the authors' --dual-checkpoint)",
                config.model,
            )
        return DualRegressionModel.from_drn(loaded, config.dual_weight, config.unpaired_loop)
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


def make_optimizer(config: RunConfig) -> keras.optimizers.Optimizer:
    """Adam with cosine decay from ``learning_rate`` to ``min_learning_rate`` over the run."""
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate,
        decay_steps=config.steps,
        alpha=config.min_learning_rate / config.learning_rate,
    )
    return keras.optimizers.Adam(
        schedule, beta_1=config.beta_1, beta_2=config.beta_2, epsilon=config.epsilon
    )


def _load_data(config: RunConfig, replicas: int, scale: int, shard: tuple[int, int] | None = None):
    """``(train dataset, validation dataset or None, validation (lr, hr) uint8 pairs)``; for
    an :class:`AdaptConfig` the training dataset is :func:`drn_tf.data.make_mixed_dataset`'s.

    Without ``shard``, the training dataset yields global batches (``--batch-size``). With
    ``shard = (workers, position)`` (multi-worker), it reads only this worker's share of the
    training files and yields per-replica batches, ``--batch-size / replicas`` samples."""
    adapting = isinstance(config, AdaptConfig)
    pyramids, skipped = load_pyramids(
        config.paired_dir if adapting else config.train_dir,
        scale,
        config.patch_size,
        cache_dir=config.cache_dir,
        progress=config.progress > 0,
        shard=shard,
    )
    lr_images = []
    if adapting:
        lr_images, lr_skipped = load_lr_images(
            config.unpaired_dir,
            config.patch_size // scale,
            progress=config.progress > 0,
            shard=shard,
        )
        skipped += lr_skipped
    batch_size, seed = config.batch_size, config.seed
    if shard is not None:
        batch_size //= replicas
        # Workers hold different files; distinct seeds keep their crops and flips unrelated.
        seed = int(np.random.SeedSequence(shard[::-1] + (config.seed,)).generate_state(1)[0])
    for path, reason in skipped:
        logging.warning("skipped %s: %s", path, reason)
    what = f"{len(pyramids)} images"
    if adapting:
        count = data.unpaired_count(batch_size, config.unpaired_ratio)
        count *= config.batch_size // batch_size  # per replica under multi_worker
        what = (
            f"{len(pyramids)} paired + {len(lr_images)} LR-only images ({count} of "
            f"{config.batch_size} LR-only per batch, {config.unpaired_loop} loop)"
        )
    if shard is not None:
        what += f" (worker {shard[1]} of {shard[0]}: its share of the files)"
    print(
        f"{'adapting' if adapting else 'training'} on {what} ({len(skipped)} skipped), "
        f"precision {resolve_precision(config.precision)}, {replicas} replica(s)"
    )
    if adapting:
        train_ds = data.make_mixed_dataset(
            pyramids,
            lr_images,
            scale,
            config.patch_size,
            batch_size,
            config.unpaired_ratio,
            seed=seed,
            augment=config.augment,
        )
    else:
        train_ds = data.make_train_dataset(
            pyramids, scale, config.patch_size, batch_size, seed=seed, augment=config.augment
        )
    val_ds, val_pairs = None, []
    for folder in config.val_dir:
        pairs = load_eval_pairs(folder, scale)
        val_pairs += [(lr, hr) for _, lr, hr in pairs]
        ds = data.make_eval_dataset(folder, scale)
        val_ds = ds if val_ds is None else val_ds.concatenate(ds)
    return train_ds, val_ds, val_pairs


def train(config: RunConfig, strategy: tf.distribute.Strategy | None = None) -> DualRegressionModel:
    """Runs ``config`` end to end and returns the trained model: exactly ``config.steps``
    optimizer steps (fewer only where a non-finite step was skipped).

    A :class:`TrainConfig` trains (``drn-tf train``); an :class:`AdaptConfig` adapts its
    ``model`` on mixed batches of paired and LR-only samples (``drn-tf adapt``, DRN-Adapt),
    with the same run folder, resume, callbacks, precision and strategy; its ``log.csv``
    also has the LR-only samples' closed-loop error ``loop_error``.

    Writes to ``config.output``: ``run.json`` (the flags), ``model.keras`` (final),
    ``best.keras`` (best validation PSNR), ``latest.keras`` (each epoch), ``backup/``
    (resumes a killed run where it stopped, optimizer state and schedule included),
    ``log.csv``, ``curves.png`` and ``tensorboard/``.

    ``strategy`` (or, when None, ``config.strategy``: :mod:`drn_tf.distribute`) spreads each
    global batch over replicas; under a multi-worker strategy only the chief writes
    ``config.output``. Every flag and path is checked before any image is read or anything is
    written. A folder that holds a run resumes it when its ``run.json`` matches ``config``
    (cosmetic flags aside); otherwise it is refused, unless ``config.overwrite``.
    """
    validate_config(config)
    resume_step = check_run_folder(config)
    strategy = (
        strategy
        or distribute.make_strategy(config.strategy, config.cluster_timeout)
        or tf.distribute.get_strategy()
    )
    multi_worker, chief = distribute.is_multi_worker(strategy), distribute.is_chief(strategy)
    # Only the chief writes the run folder; other workers of a cluster write a temporary copy.
    run = Path(config.output) if chief else distribute.worker_folder()
    if chief:
        remove_stale_temp_files(run, recursive=True)  # of runs killed while saving
    precision = resolve_precision(config.precision)
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(config.seed)

    replicas = strategy.num_replicas_in_sync
    # The loss divides each replica's sum by replicas × its own batch: shares must be equal.
    if config.batch_size % replicas:
        raise ValueError(
            f"--batch-size {config.batch_size} is not a multiple of the {replicas} replicas"
        )
    if multi_worker and isinstance(config, AdaptConfig):  # each worker mixes its own batches
        share = config.batch_size // replicas
        try:
            data.unpaired_count(share, config.unpaired_ratio)
        except ValueError:
            raise ValueError(
                f"--batch-size {config.batch_size} is {share} per replica over {replicas}, too "
                f"few for both paired and LR-only samples at --unpaired-ratio "
                f"{config.unpaired_ratio}; raise --batch-size"
            ) from None
    with strategy.scope():
        model = build_model(config)
        model.compile(optimizer=make_optimizer(config))
    shard = distribute.worker_position(strategy) if multi_worker else None
    train_ds, val_ds, val_pairs = _load_data(config, replicas, model.scale, shard)

    # Only now that the data and model are good, so a failed start leaves no folder behind.
    if resume_step is None:
        if chief:
            _start_run_folder(config)
        note = None
    else:
        note = f"resuming run {config.output} at step {resume_step}"
        print(note + (" (already complete)" if resume_step == config.steps else ""))
    steps_per_epoch = _effective_steps_per_epoch(config)
    callbacks = [
        keras.callbacks.BackupAndRestore(
            str(run / "backup"), save_freq="epoch", delete_checkpoint=False
        ),
        RunLog(run / "log.csv", steps_per_epoch, config.steps, resumed=note is not None),
        StopAtStep(config.steps, steps_per_epoch),
        keras.callbacks.TerminateOnNaN(),
        SaveModel(
            run / "latest.keras",
            run / "best.keras" if config.val_dir else None,
            log_csv=run / "log.csv",
        ),
    ]
    if config.tensorboard:
        callbacks.append(
            TensorBoardLog(
                run / "tensorboard",
                steps_per_epoch,
                val_pairs[:3],
                note=note,
                start_step=resume_step or 0,
            )
        )
    if val_ds is not None and (multi_worker or replicas > 1):
        callbacks.insert(0, distribute.Validation(val_ds, model.scale))
        val_ds = None  # fit's validation fails on the replicas' empty shares of an image
    epochs = -(-config.steps // steps_per_epoch)
    if multi_worker:
        distribute.fit_multi_worker(
            model,
            train_ds,
            callbacks,
            epochs,
            steps_per_epoch,
            verbose=config.progress if chief else 0,
            chief_backup=Path(config.output) / "backup",
        )
    else:
        model.fit(
            train_ds,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=val_ds,
            callbacks=callbacks,
            verbose=config.progress,
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
    """Draws training loss and validation PSNR against the step from a :class:`RunLog` file
    (or a ``CSVLogger`` one, against the epoch). Values that are not numbers are skipped; a
    missing or empty log draws nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_rows(Path(log_csv))
    x = "step" if rows and "step" in rows[0] else "epoch"
    loss, psnr = _numbers(rows, x, "loss"), _numbers(rows, x, "val_psnr")
    if not loss[0] and not psnr[0]:
        return
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(*loss, color="tab:blue", marker=".", label="train loss")
    loss_axis.set_xlabel(x)
    loss_axis.set_ylabel("loss (L1, 0..255)", color="tab:blue")
    if psnr[0]:
        psnr_axis = loss_axis.twinx()
        psnr_axis.plot(*psnr, color="tab:red", marker=".", label="validation PSNR")
        psnr_axis.set_ylabel("validation Y-PSNR (dB)", color="tab:red")
    figure.tight_layout()
    with atomic_path(output) as temp:
        figure.savefig(temp, dpi=100, format="png")
    plt.close(figure)
