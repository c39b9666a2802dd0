"""The dual-regression model: DRN's loss and its ``fit``-able Keras model (the paper's Algorithm 1).

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
* ``first``: ``|D_0(SR_1) − x|`` alone, Eq. 2 as the landed loss writes it;
* ``kernel``: ``|K(SR_p) − x|`` alone, ``K`` a learned blur-and-subsample operator
  (:class:`drn_tf.kernel_dual.DownsamplingKernel`, trained with the networks) in place of the
  duals, which the paired samples keep bicubic.

Why ``cascade`` is the default, measured over three seeds: ``docs/adaptation.md``.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from drn_tf.kernel_dual import DownsamplingKernel
from drn_tf.metrics import PSNR, SSIM
from drn_tf.models import DRN
from drn_tf.settings import UNPAIRED_LOOPS


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
    loop_replaces_first: bool = False,
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
        loop_replaces_first: LR-only samples get the ``loop`` term only, not
            ``|D_0(SR_1) − lr|`` (the ``kernel`` option of DRN-Adapt).

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
    first_weight = weight if loop_replaces_first else 1.0
    dual = total(first_weight * _per_sample_l1(dual_outputs[0], lr))
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
    ``|closed_loop − x|``; the same loop for ×2 models, so no extra term), ``"first"``
    (``|D_0(SR_1) − x|`` alone) or ``"kernel"`` (``|K(SR_p) − x|`` alone, ``K`` the
    :class:`~drn_tf.kernel_dual.DownsamplingKernel` ``self.degradation``, a training-time part:
    saved with this model, left out by :func:`drn_tf.models.package_model`). Paired samples never
    get the LR-only loop terms.
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
        self.degradation = (
            DownsamplingKernel(self.scale, name="degradation")
            if unpaired_loop == "kernel"
            else None
        )
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

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Keras' ``compile`` for the optimizer and how steps run. The loss and the metrics
        are built in, so ``loss``, ``metrics``, ``loss_weights`` and ``weighted_metrics`` are
        refused rather than silently ignored."""
        if loss is not None or kwargs.get("loss_weights") is not None:
            raise ValueError(
                "DualRegressionModel trains with its own loss, the dual-regression pyramid loss "
                "(drn_tf.dual_regression.pyramid_loss), so compile() takes no loss or "
                "loss_weights; "
                "set its dual_weight= and unpaired_loop= when making the model "
                "(drn-tf train/adapt --dual-weight, drn-tf adapt --unpaired-loop)"
            )
        if metrics is not None or kwargs.get("weighted_metrics") is not None:
            raise ValueError(
                "DualRegressionModel logs its own metrics (loss, primal_loss, dual_loss, "
                "skipped_steps, loop_error; psnr and ssim of the top output in validation), so "
                "compile() takes no metrics or weighted_metrics; measure others on model(lr)[-1]"
            )
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # What Keras does for models that keep its compile(); for one that overrides it, Keras
        # would skip compiling a loaded file (with a warning).
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

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
        loop = loop_errors = trained_loop = None
        if paired is not None:
            loop = closed_loop(self.duals, outputs[-1], training)
            loop_errors = _per_sample_l1(loop, lr)
            if self.degradation is not None:
                trained_loop = self.degradation(outputs[-1])
            elif self.unpaired_loop == "cascade" and len(self.duals) > 1:
                trained_loop = loop  # with one dual the cascade is D_0(SR_1) again: no term
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        losses = pyramid_loss(
            outputs,
            dual_outputs,
            lr,
            targets,
            self.dual_weight,
            paired,
            global_batch_size=ops.shape(lr)[0] * replicas,
            loop=trained_loop,
            loop_replaces_first=self.degradation is not None,
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
        # NaN, not Mean's 0, while no step of the epoch has been finite: nothing was learnt.
        logs = {
            m.name: ops.where(m.count > 0, m.result(), float("nan"))
            for m in (self.loss_tracker, self.primal_tracker, self.dual_tracker)
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
