"""Tests for drn_tf.training: the DRN loss, one training step against the authors' PyTorch code,
mixed precision, skipped non-finite steps, tf.distribute, and killed-and-resumed runs.

Expectations come from outside our code: the loss formula of docs/drn-reference.md §1.3 written out
in numpy, the authors' losses and one Adam step recorded with PyTorch (``drn_s_x4_io.npz``), a
float32 step for the mixed-precision and multi-replica steps, and ``GradientTape`` gradients for
the update of a plain SGD step.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    DUAL_PT,
    IO_NPZ,
    PRIMAL_PT,
    REFERENCE,
    SMALL,
    last_json,
    read_log,
    run_killed,
    run_python,
    tiny_config,
    write_images,
)
from PIL import Image

import drn_tf
from drn_tf import cli
from drn_tf.dual_regression import DualRegressionModel, pyramid_loss
from drn_tf.models import DRN, build_drn, build_duals, save_model_atomic
from drn_tf.training import TrainConfig, resolve_precision, train

pytestmark = pytest.mark.usefixtures("float32_policy")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def small_model(scale: int = 4, dual_weight: float = 0.1, seed: int = 0) -> DualRegressionModel:
    keras.utils.set_random_seed(seed)
    return DualRegressionModel(
        build_drn("drn-s", scale, **SMALL),
        build_duals("drn-s", scale, **SMALL),
        dual_weight=dual_weight,
    )


def pyramid_batch(scale: int = 4, lr_size: int = 8, batch: int = 2, seed: int = 0):
    """``(lr, (T_1 … T_p))`` as ``make_train_dataset`` yields them: float32 on 0..255."""
    rng = np.random.default_rng(seed)
    levels = [
        rng.uniform(0, 255, (batch, lr_size * 2**k, lr_size * 2**k, 3)).astype(np.float32)
        for k in range(int(np.log2(scale)) + 1)
    ]
    return levels[0], tuple(levels[1:])


def snapshot(variables) -> list[np.ndarray]:
    return [np.array(v.numpy(), copy=True) for v in variables]


def flat(arrays) -> np.ndarray:
    return np.concatenate([np.ravel(a).astype(np.float64) for a in arrays])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------------------------
# 1. one training step against the authors' PyTorch code (full-size DRN-S ×4)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_io():
    if not (PRIMAL_PT.is_file() and DUAL_PT.is_file() and IO_NPZ.is_file()):
        pytest.skip(f"reference checkpoints and outputs not found under {REFERENCE}")
    with np.load(IO_NPZ) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.slow
def test_reference_step_matches_pytorch(reference_io):
    from drn_tf.convert import load_authors_weights

    io = reference_io
    model = DualRegressionModel(build_drn("drn-s", 4), build_duals("drn-s", 4))
    load_authors_weights(model, PRIMAL_PT, DUAL_PT)
    # Eager: tracing the full model's train function takes minutes on 2 cores, one eager step
    # seconds; the step code is the same.
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4, beta_1=0.9, beta_2=0.999, epsilon=1e-8),
        run_eagerly=True,
    )
    before = np.asarray(model.primal(io["lr"])[-1])
    logs = model.train_on_batch(io["lr"], (io["step_lr_1"], io["step_hr"]), return_dict=True)

    # The logs are the losses of the batch before the update.
    for key, expected in (
        ("loss", io["step_loss"]),
        ("primal_loss", io["step_primary"]),
        ("dual_loss", io["step_dual"]),
    ):
        assert logs[key] == pytest.approx(float(expected), rel=1e-3), key
    assert logs["skipped_steps"] == 0
    assert int(model.optimizer.iterations.numpy()) == 1

    after = np.asarray(model.primal(io["lr"])[-1])
    moved = np.abs(before - io["step_sr_after"]).mean()
    assert moved > 0.5  # the step visibly changes the output, so the check below means something
    assert np.abs(after - io["step_sr_after"]).mean() < 0.05


# --------------------------------------------------------------------------------------------
# 2. pyramid_loss against the §1.3 formula in numpy
# --------------------------------------------------------------------------------------------


def l1(a, b) -> float:
    """``nn.L1Loss()``: the mean over the whole tensor, in float64."""
    return float(np.mean(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def reference_terms(outputs, dual_outputs, lr, targets):
    """§1.3: primal terms ``|SR_k − T_k|`` for k = 0…p, dual terms ``|D_k(SR_{k+1}) − T_k|`` for
    k = 0…p−1, with ``T_0`` the LR input and ``T_p`` the HR image."""
    levels = [lr, *targets]
    primal = [l1(sr, t) for sr, t in zip(outputs, levels, strict=True)]
    dual = [l1(d, t) for d, t in zip(dual_outputs, levels[:-1], strict=True)]
    return primal, dual


def random_pyramid(scale: int, batch: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = int(np.log2(scale))

    def image(k):
        return rng.uniform(0, 255, (batch, 5 * 2**k, 4 * 2**k, 3)).astype(np.float32)

    outputs = [image(k) for k in range(p + 1)]
    dual_outputs = [image(k) for k in range(p)]
    lr = image(0)
    targets = tuple(image(k) for k in range(1, p + 1))
    return outputs, dual_outputs, lr, targets


@pytest.mark.parametrize("scale", [4, 8])
@pytest.mark.parametrize("dual_weight", [0.1, 0.25])
def test_pyramid_loss_is_the_formula(scale, dual_weight):
    outputs, duals, lr, targets = random_pyramid(scale)
    primal_terms, dual_terms = reference_terms(outputs, duals, lr, targets)
    assert len(primal_terms) == int(np.log2(scale)) + 1 and len(dual_terms) == len(targets)
    primal, dual = sum(primal_terms), sum(dual_terms)

    batch = lr.shape[0]
    for paired in (None, np.ones(batch, np.float32)):
        loss, got_primal, got_dual = pyramid_loss(
            outputs, duals, lr, targets, dual_weight, paired=paired
        )
        for value in (loss, got_primal, got_dual):
            assert keras.backend.standardize_dtype(value.dtype) == "float32"
        assert float(got_primal) == pytest.approx(primal, rel=1e-5)
        assert float(got_dual) == pytest.approx(dual, rel=1e-5)
        assert float(loss) == pytest.approx(primal + dual_weight * dual, rel=1e-5)

    # Under a strategy the sums are divided by the global batch: each replica gives its share.
    loss, _, _ = pyramid_loss(outputs, duals, lr, targets, dual_weight, global_batch_size=2 * batch)
    assert float(loss) == pytest.approx((primal + dual_weight * dual) / 2, rel=1e-5)


@pytest.mark.parametrize("scale", [4, 8])
def test_pyramid_loss_unpaired_samples_keep_only_the_closed_loop_term(scale):
    outputs, duals, lr, targets = random_pyramid(scale, seed=1)
    batch = lr.shape[0]
    loss, primal, dual = pyramid_loss(
        outputs, duals, lr, targets, 0.1, paired=np.zeros(batch, np.float32)
    )
    closed_loop = l1(duals[0], lr)  # |D_0(SR_1) − LR|: needs the LR image only (Eq. 2)
    assert float(primal) == 0.0
    assert float(dual) == pytest.approx(closed_loop, rel=1e-5)
    assert float(loss) == pytest.approx(0.1 * closed_loop, rel=1e-5)


@pytest.mark.parametrize("scale", [4, 8])
def test_pyramid_loss_mixed_batch_is_the_per_sample_mean(scale):
    outputs, duals, lr, targets = random_pyramid(scale, batch=4, seed=2)
    paired = np.array([1, 0, 0, 1], np.float32)
    weight = 0.1
    expected_loss = expected_primal = expected_dual = 0.0
    for i, is_paired in enumerate(paired):
        primal_terms, dual_terms = reference_terms(
            [o[i : i + 1] for o in outputs],
            [d[i : i + 1] for d in duals],
            lr[i : i + 1],
            tuple(t[i : i + 1] for t in targets),
        )
        # Eq. 2: 1_P(x_i) · L_P + λ · L_D, where only the closed-loop dual term needs no HR.
        primal_i = is_paired * sum(primal_terms)
        dual_i = dual_terms[0] + is_paired * sum(dual_terms[1:])
        expected_primal += primal_i / len(paired)
        expected_dual += dual_i / len(paired)
        expected_loss += (primal_i + weight * dual_i) / len(paired)
    loss, primal, dual = pyramid_loss(outputs, duals, lr, targets, weight, paired=paired)
    assert float(loss) == pytest.approx(expected_loss, rel=1e-5)
    assert float(primal) == pytest.approx(expected_primal, rel=1e-5)
    assert float(dual) == pytest.approx(expected_dual, rel=1e-5)


def test_pyramid_loss_rejects_a_broken_pyramid():
    outputs, duals, lr, targets = random_pyramid(4)
    with pytest.raises(ValueError, match="pyramid"):
        pyramid_loss(outputs, duals, lr, targets[:1])
    with pytest.raises(ValueError, match="pyramid"):
        pyramid_loss(outputs, duals[:1], lr, targets)


# --------------------------------------------------------------------------------------------
# 3. precision: one SGD step under mixed precision equals the float32 step
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def float32_reference():
    """Initial weights of a small ×4 model, a batch, and its float32 SGD update."""
    keras.mixed_precision.set_global_policy("float32")
    model = small_model(seed=3)
    weights = model.get_weights()
    lr, targets = pyramid_batch(scale=4, lr_size=8, batch=2, seed=3)
    update, logs, _ = sgd_update(weights, lr, targets, "float32")
    # The float32 update is the gradient of the loss (SGD, learning rate 1), computed here
    # independently of train_step.
    with tf.GradientTape() as tape:
        outputs = model.primal(lr, training=True)
        dual_outputs = [dual(outputs[k + 1], training=True) for k, dual in enumerate(model.duals)]
        loss = pyramid_loss(outputs, dual_outputs, lr, targets, model.dual_weight)[0]
    gradient = flat(tape.gradient(loss, model.trainable_variables))
    return {
        "weights": weights,
        "lr": lr,
        "targets": targets,
        "update": update,
        "logs": logs,
        "gradient": gradient,
    }


def sgd_update(weights, lr, targets, policy, scale_loss=True):
    """The weight change of the first applied SGD step (learning rate 1) under ``policy``.

    Under mixed_float16 the optimizer is a ``LossScaleOptimizer``: a step whose scaled gradients
    overflow float16 is skipped (weights untouched) and the scale halved, so this retries the
    same batch until one step is applied, which is then a step from the same weights.
    """
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = small_model(seed=3)
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(1.0), run_eagerly=True)
        if not scale_loss:  # the trap: a train_step that forgets optimizer.scale_loss
            model.optimizer.scale_loss = lambda loss: loss
        before = snapshot(model.trainable_variables)
        for _ in range(4):
            logs = model.train_on_batch(lr, targets, return_dict=True)
            if int(model.optimizer.iterations.numpy()) == 1:
                break
        assert int(model.optimizer.iterations.numpy()) == 1, "every step overflowed"
        update = flat(
            after - start
            for after, start in zip(snapshot(model.trainable_variables), before, strict=True)
        )
        return update, logs, model
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_float32_step_is_the_gradient(float32_reference):
    ref = float32_reference
    assert cosine(-ref["update"], ref["gradient"]) > 0.99999
    assert np.linalg.norm(ref["update"]) == pytest.approx(np.linalg.norm(ref["gradient"]), rel=1e-4)


@pytest.mark.parametrize(
    "policy, min_cosine, ratio",
    [
        ("mixed_float16", 0.99, (0.9, 1.1)),
        ("mixed_bfloat16", 0.95, (0.8, 1.25)),
    ],
)
def test_mixed_precision_step_matches_float32(float32_reference, policy, min_cosine, ratio):
    ref = float32_reference
    update, logs, model = sgd_update(ref["weights"], ref["lr"], ref["targets"], policy)
    compute = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[policy]
    # The policy took effect: convolutions compute in 16 bits, variables stay float32.
    assert model.primal.get_layer("head").compute_dtype == compute
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (
        policy == "mixed_float16"
    )

    norm_ratio = np.linalg.norm(update) / np.linalg.norm(ref["update"])
    # A loss that is not scaled (or not unscaled) is off by 2^15 here, far outside this range.
    assert ratio[0] < norm_ratio < ratio[1], norm_ratio
    assert cosine(update, ref["update"]) > min_cosine
    for key in ("loss", "primal_loss", "dual_loss"):
        assert logs[key] == pytest.approx(ref["logs"][key], rel=1e-2), key

    # Outputs and losses are float32 under every policy.
    outputs = model.primal(ref["lr"])
    dual_outputs = [dual(outputs[k + 1]) for k, dual in enumerate(model.duals)]
    for tensor in [
        *outputs,
        *dual_outputs,
        *pyramid_loss(outputs, dual_outputs, ref["lr"], ref["targets"]),
    ]:
        assert keras.backend.standardize_dtype(tensor.dtype) == "float32"


def test_unscaled_float16_loss_is_the_trap_the_check_catches(float32_reference):
    """A step that skips ``scale_loss`` moves the weights 2^15 times too little: the norm-ratio
    check of the test above would catch it."""
    ref = float32_reference
    update, _, _ = sgd_update(
        ref["weights"], ref["lr"], ref["targets"], "mixed_float16", scale_loss=False
    )
    norm_ratio = np.linalg.norm(update) / np.linalg.norm(ref["update"])
    assert norm_ratio == pytest.approx(1 / 32768, rel=0.1)


def test_resolve_precision():
    from drn_tf.precision import cpu_has_amx_bf16

    cpu = "mixed_bfloat16" if cpu_has_amx_bf16() else "float32"
    expected = "mixed_float16" if tf.config.list_physical_devices("GPU") else cpu
    assert resolve_precision("auto") == expected
    for name in ("float32", "mixed_float16", "mixed_bfloat16"):
        assert resolve_precision(name) == name
    for bad in ("float16", "fp16", "bfloat16", "", "AUTO"):
        with pytest.raises(ValueError, match="precision must be one of"):
            resolve_precision(bad)


# --------------------------------------------------------------------------------------------
# 4. non-finite steps are skipped
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adam_model():
    """A small model compiled with Adam (graph mode, as ``fit`` runs it) after one finite step,
    so that its Adam moments are not zero."""
    keras.mixed_precision.set_global_policy("float32")
    model = small_model(seed=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.train_on_batch(*pyramid_batch(seed=40))
    assert int(model.optimizer.iterations.numpy()) == 1
    return model


def poisoned_batch(where: str, seed: int):
    lr, (lr_x2, hr) = pyramid_batch(seed=seed)
    if where == "nan-hr":
        hr[1, 3, 5, 0] = np.nan
    elif where == "inf-hr":
        hr[0, 0, 0, 2] = np.inf
    elif where == "nan-lr":
        lr[0, 2, 2, 1] = np.nan
    return lr, (lr_x2, hr)


def check_skipped_then_recovers(model, where):
    # A LossScaleOptimizer is meant to lower its scale on a skipped step; what must not move is
    # the optimizer it wraps (iterations, Adam moments).
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    weights, state = snapshot(model.trainable_variables), snapshot(optimizer.variables)
    skipped = int(model.skipped_steps.numpy())

    logs = model.train_on_batch(*poisoned_batch(where, seed=41), return_dict=True)
    assert int(model.skipped_steps.numpy()) == skipped + 1
    assert logs["skipped_steps"] == skipped + 1
    # train_on_batch starts its metrics afresh: no finite step, so the losses are NaN, not 0.
    assert all(np.isnan(logs[k]) for k in ("loss", "primal_loss", "dual_loss"))
    for before, after in zip(weights, snapshot(model.trainable_variables), strict=True):
        np.testing.assert_array_equal(after, before)
    for before, after in zip(state, snapshot(optimizer.variables), strict=True):
        np.testing.assert_array_equal(after, before)  # iterations and both Adam moments

    iterations = int(model.optimizer.iterations.numpy())
    logs = model.train_on_batch(*pyramid_batch(seed=42), return_dict=True)
    assert int(model.optimizer.iterations.numpy()) == iterations + 1
    assert int(model.skipped_steps.numpy()) == skipped + 1
    assert np.isfinite(logs["loss"]) and logs["loss"] > 0
    after = snapshot(model.trainable_variables)
    assert all(np.isfinite(a).all() for a in after)
    assert any(not np.array_equal(a, b) for a, b in zip(after, weights, strict=True))


@pytest.mark.parametrize("where", ["nan-hr", "inf-hr", "nan-lr"])
def test_non_finite_step_is_skipped(adam_model, where):
    check_skipped_then_recovers(adam_model, where)


def _diverging_optimizer(config):
    """Adam at the run's learning rate for 3 steps, then at 1e6: the weights blow up."""
    rate = keras.optimizers.schedules.PiecewiseConstantDecay([2], [config.learning_rate, 1e6])
    return keras.optimizers.Adam(rate)


@pytest.mark.slow
@pytest.mark.parametrize("val", [True, False])
def test_a_diverged_run_stops_and_keeps_the_last_finite_epoch(tmp_path, monkeypatch, val):
    from drn_tf import training

    monkeypatch.setattr(training, "make_optimizer", _diverging_optimizer)
    config = tiny_config(tmp_path, steps=30, steps_per_epoch=2)
    if not val:
        config["val_dir"] = []
    with pytest.raises(training.TrainingDiverged) as error:
        train(TrainConfig(**config))
    message = str(error.value)
    assert message.startswith("training diverged by step ") and "\n" not in message
    run = Path(config["output"])
    assert not (run / "model.keras").exists()
    # Epoch 0 (steps 1-2) was finite and saved; nothing after it was.
    rows = read_log(run / "log.csv")
    assert [row["epoch"] for row in rows] == ["0"] and np.isfinite(float(rows[0]["loss"]))
    latest = training.load_model(run / "latest.keras")
    assert all(np.isfinite(w).all() for w in latest.get_weights() if w.dtype.kind == "f")
    # Step 4 diverged; the end of its epoch sees the non-finite output.
    assert "by step 4: its output on a test image is not finite" in message


def test_divergence_is_ten_skipped_steps_in_a_row_or_non_finite_weights():
    from drn_tf.training import StopWhenDiverged, TrainingDiverged

    model = small_model(seed=6)
    stop = StopWhenDiverged(steps_per_epoch=100)
    stop.set_model(model)
    stop.on_train_begin()
    stop.on_epoch_begin(0)
    for batch in range(9):  # nine skipped steps, then a good one: the count starts again
        model.skipped_steps.assign_add(1)
        stop.on_train_batch_end(batch)
    stop.on_train_batch_end(9)
    for batch in range(10, 19):
        model.skipped_steps.assign_add(1)
        stop.on_train_batch_end(batch)
    model.skipped_steps.assign_add(1)
    with pytest.raises(TrainingDiverged, match="by step 20: the last 10 steps had a non-fin"):
        stop.on_train_batch_end(19)
    weights = model.primal.get_weights()
    weights[-1][...] = np.inf
    model.primal.set_weights(weights)
    model.skipped_steps.assign_add(1)
    with pytest.raises(TrainingDiverged, match="by step 21: its weights are no longer finite"):
        stop.on_train_batch_end(20)


@pytest.mark.slow
def test_a_model_with_non_finite_weights_is_refused(tiny, tmp_path, capsys):
    model = drn_tf.build_drn_bundle("drn-s", 4, **SMALL)
    weights = model.primal.get_weights()
    weights[0][..., 0] = np.nan
    model.primal.set_weights(weights)
    path = save_model_atomic(model, tmp_path / "nan.keras")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    upscale = ["upscale", str(tmp_path / "a.png"), "--output", str(tmp_path / "o")]
    evaluate = ["evaluate", str(write_images(tmp_path / "hr", 1, seed=0, size=16))]
    for argv in (upscale, evaluate):
        assert cli.main([*argv, "--model", str(path)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"{path}: the model's weights are not all finite (NaN or inf)")
        assert "\n" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_package_keeps_the_networks_and_drops_the_training_state(tmp_path):
    # The best.keras of a mixed_bfloat16 run: bf16 layers, Adam moments, training state.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = small_model(seed=6)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        model.train_on_batch(*pyramid_batch(seed=60))
        trained = save_model_atomic(model, tmp_path / "best.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    shipped = tmp_path / "ship.keras"
    argv = ["package", "--model", str(trained), "--output", str(shipped), "--note", "one step"]
    assert cli.main(argv) == 0
    packaged = keras.saving.load_model(shipped, compile=False)  # as saved, no policy rebuild
    assert type(packaged) is DRN and packaged.info["training"] == "one step"
    assert packaged.drn_config == model.drn_config
    pairs = zip((packaged.primal, *packaged.duals), (model.primal, *model.duals), strict=True)
    for network, source in pairs:
        assert {layer.dtype_policy.name for layer in network.layers} == {"float32"}
        for got, want in zip(network.get_weights(), source.get_weights(), strict=True):
            np.testing.assert_array_equal(got, want)
    # Adam's two moments per weight stay behind: the file is well under the training file's size.
    assert shipped.stat().st_size < 0.6 * trained.stat().st_size
    assert cli.main(["package", "--model", str(trained), "--output", str(tmp_path / "a.h5")]) == 2


@pytest.mark.slow
def test_non_finite_loss_is_skipped_with_a_loss_scale_optimizer():
    # A LossScaleOptimizer under the float32 policy takes the same train_step branch as
    # mixed_float16, without float16 overflows muddying which steps are skipped.
    model = small_model(seed=5)
    model.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3)), run_eagerly=True
    )
    model.train_on_batch(*pyramid_batch(seed=50))
    assert int(model.optimizer.iterations.numpy()) == 1
    check_skipped_then_recovers(model, "inf-hr")


# --------------------------------------------------------------------------------------------
# 5. tf.distribute: two CPU replicas take the single-device step
# --------------------------------------------------------------------------------------------

MIRRORED_SCRIPT = """
    import json

    import numpy as np
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras

    from drn_tf.models import build_drn, build_duals
    from drn_tf.dual_regression import DualRegressionModel

    SMALL = {"n_blocks": 1, "n_feats": 4}
    rng = np.random.default_rng(0)
    lr = rng.uniform(0, 255, (4, 8, 8, 3)).astype("float32")  # global batch 4: 2 per replica
    targets = (rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32"),
               rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32"))
    dataset = tf.data.Dataset.from_tensors((lr, targets)).repeat()

    keras.utils.set_random_seed(0)
    initial = DualRegressionModel(build_drn("drn-s", 4, **SMALL), build_duals("drn-s", 4, **SMALL))
    initial = initial.get_weights()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


    def step(distribute, loss_scale):
        with strategy.scope() if distribute else tf.distribute.get_strategy().scope():
            model = DualRegressionModel(build_drn("drn-s", 4, **SMALL),
                                        build_duals("drn-s", 4, **SMALL))
            model.set_weights(initial)
            optimizer = keras.optimizers.SGD(1e-3)
            if loss_scale:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            # The replicas trace fit's graph, where the step's control flow matters; the
            # single-device reference step runs eagerly (seconds instead of a trace).
            model.compile(optimizer=optimizer, run_eagerly=not distribute)
        if distribute:
            loss = model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0).history["loss"][0]
        else:
            loss = model.train_on_batch(lr, targets, return_dict=True)["loss"]
        update = np.concatenate([np.ravel(a - b) for a, b in zip(model.get_weights(), initial)])
        return {"loss": float(loss), "update": update,
                "iterations": int(model.optimizer.iterations.numpy())}


    single = step(False, False)
    results = {"replicas": strategy.num_replicas_in_sync}
    # A loss scale (a power of two) is exact in float32, so both compare to the same step.
    for name, loss_scale in (("sgd", False), ("loss_scale_sgd", True)):
        try:
            mirrored = step(True, loss_scale)
        except Exception as error:  # reported to the test
            results[name] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
            continue
        results[name] = {
            "loss": [single["loss"], mirrored["loss"]],
            "max_update_diff": float(np.abs(single["update"] - mirrored["update"]).max()),
            "update_norm": [float(np.linalg.norm(r["update"])) for r in (single, mirrored)],
            "iterations": [single["iterations"], mirrored["iterations"]],
        }
    print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def mirrored_results():
    result = run_python(MIRRORED_SCRIPT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = last_json(result.stdout)
    assert results["replicas"] == 2
    return results


def check_mirrored(results: dict):
    assert "error" not in results, results.get("error")
    assert results["iterations"] == [1, 1]
    single_norm, mirrored_norm = results["update_norm"]
    assert single_norm > 0
    # Replica gradients are summed: each replica's loss must be its share of the global mean,
    # else the update doubles.
    assert mirrored_norm == pytest.approx(single_norm, rel=1e-4)
    assert results["max_update_diff"] < 1e-6
    assert results["loss"][1] == pytest.approx(results["loss"][0], rel=1e-5)


@pytest.mark.slow
def test_mirrored_step_equals_single_device_step(mirrored_results):
    check_mirrored(mirrored_results["sgd"])


@pytest.mark.slow
def test_mirrored_step_with_loss_scale_optimizer_equals_single_device_step(mirrored_results):
    # The LossScaleOptimizer branch (mixed_float16) decides in a cross-replica context.
    check_mirrored(mirrored_results["loss_scale_sgd"])


# --------------------------------------------------------------------------------------------
# 6. a training run: outputs, and a killed run resumed where it stopped
# --------------------------------------------------------------------------------------------


def read_events(folder: Path) -> dict[str, list[tuple[int, object]]]:
    """``tag -> [(step, value)]`` of every summary in the TensorBoard event files in ``folder``,
    decoded with TensorFlow's own ``Event`` proto; a text summary's value is its string."""
    found: dict[str, list] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                content = tf.make_ndarray(value.tensor) if value.HasField("tensor") else None
                if value.metadata.plugin_data.plugin_name == "text":
                    content = b" ".join(content.ravel()).decode()
                found.setdefault(value.tag, []).append((event.step, content))
    return {tag: sorted(entries, key=lambda e: e[0]) for tag, entries in found.items()}


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """A tiny run of 5 steps, 2 per epoch, killed at the start of its third epoch, then run
    again to the end with the same flags."""
    root = tmp_path_factory.mktemp("train")
    config = tiny_config(root, tensorboard=True)
    killed = run_killed(config, "train")
    run = Path(config["output"])
    killed_log = read_log(run / "log.csv") if (run / "log.csv").is_file() else []
    killed_files = sorted(p.name for p in run.iterdir())
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        model = train(TrainConfig(**config))
    return {
        "killed": killed,
        "killed_log": killed_log,
        "killed_files": killed_files,
        "run": run,
        "model": model,
        "stdout": output.getvalue(),
    }


@pytest.mark.slow
def test_killed_run_died_after_two_epochs(resumed_run):
    killed = resumed_run["killed"]
    assert killed.returncode == 17, killed.stderr[-3000:]
    assert [row["epoch"] for row in resumed_run["killed_log"]] == ["0", "1"]
    assert {"backup", "run.json"} <= set(resumed_run["killed_files"])
    assert "model.keras" not in resumed_run["killed_files"]


@pytest.mark.slow
def test_resumed_run_continues_where_it_stopped(resumed_run):
    run, model = resumed_run["run"], resumed_run["model"]
    assert f"resuming run {run} at step 4" in resumed_run["stdout"]
    rows = read_log(run / "log.csv")
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]  # each epoch once
    assert [row["step"] for row in rows] == ["2", "4", "5"]  # the last epoch is 1 step long
    assert [row["resumed"] for row in rows] == ["0", "0", "1"]
    # One column set in the whole file: DictReader puts extra fields under None.
    assert all(None not in row and None not in row.values() for row in rows)
    assert all(np.isfinite(float(row["loss"])) for row in rows)
    assert {"loss", "primal_loss", "dual_loss", "val_psnr", "val_ssim"} <= set(rows[0])
    # Exactly --steps 5, not rounded up to whole epochs (6), and the optimizer state came back
    # with the weights: 2 epochs × 2 steps + 1 more step.
    assert int(model.optimizer.iterations.numpy()) == 5
    assert int(model.skipped_steps.numpy()) == 0


@pytest.mark.slow
def test_tensorboard_has_every_epoch_and_the_resume(resumed_run):
    """Epoch scalars and samples at the end of every epoch (steps 2, 4, 5), though no step is
    a multiple of 50; the resume is noted at the step it resumed at."""
    board = resumed_run["run"] / "tensorboard"
    train_events, val_events = read_events(board / "train"), read_events(board / "validation")
    rows = read_log(resumed_run["run"] / "log.csv")
    for tag, events, column in (
        ("epoch_loss", train_events, "loss"),
        ("epoch_dual_loss", train_events, "dual_loss"),
        ("epoch_psnr", val_events, "val_psnr"),
    ):
        assert [step for step, _ in events[tag]] == [2, 4, 5], tag
        got = [float(value) for _, value in events[tag]]
        np.testing.assert_allclose(got, [float(row[column]) for row in rows], rtol=1e-5)
    assert [step for step, _ in val_events["bicubic|sr|hr"]] == [2, 4, 5]
    [(step, note)] = train_events["run"]
    assert step == 4 and "resuming run" in note and "step 4" in note


@pytest.mark.slow
def test_run_writes_its_outputs(resumed_run):
    run, model = resumed_run["run"], resumed_run["model"]
    for name in ("model.keras", "latest.keras", "best.keras", "log.csv", "curves.png", "run.json"):
        assert (run / name).is_file(), name
    assert not list(run.rglob(".*"))  # no temporary files of the atomic saves left
    loaded = keras.saving.load_model(run / "model.keras")
    assert isinstance(loaded, DualRegressionModel)
    assert loaded.scale == 4 and loaded.dual_weight == pytest.approx(0.1)
    lr = pyramid_batch(seed=6)[0]
    for got, expected in zip(loaded(lr), model(lr), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=0, atol=1e-4)
    saved = json.loads((run / "run.json").read_text())
    assert saved["steps"] == 5 and saved["n_feats"] == 4
    assert saved["train_dir"] == [str(Path(resumed_run["run"].parent / "train").resolve())]


# --------------------------------------------------------------------------------------------
# 7. run folders: resume only the same run, refuse another, --overwrite
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run of 3 steps with the default 1000 steps per epoch, no validation."""
    root = tmp_path_factory.mktemp("finished")
    config = tiny_config(root, steps=3, val_dir=[])
    del config["steps_per_epoch"]
    model = train(TrainConfig(**config))
    return {"config": config, "run": Path(config["output"]), "model": model}


def copy_run(finished_run: dict, tmp_path: Path, **changes) -> dict:
    """The finished run copied into ``tmp_path``, and its config with ``changes``."""
    run = tmp_path / "run"
    shutil.copytree(finished_run["run"], run)
    return {**finished_run["config"], "output": str(run), **changes}


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.slow
def test_steps_shorter_than_an_epoch_are_exact(finished_run):
    # --steps 3 with --steps-per-epoch 1000: 3 steps, not 1000.
    assert int(finished_run["model"].optimizer.iterations.numpy()) == 3
    rows = read_log(finished_run["run"] / "log.csv")
    assert [(row["epoch"], row["step"], row["resumed"]) for row in rows] == [("0", "3", "0")]
    assert "val_psnr" not in rows[0]
    assert (finished_run["run"] / "curves.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes, differences",
    [
        ({"n_feats": 8}, ["--n-feats 8 vs 4 saved"]),
        ({"steps": 4, "seed": 2}, ["--steps 4 vs 3 saved", "--seed 2 vs 1 saved"]),
        ({"batch_size": 1, "learning_rate": 1e-3}, ["--batch-size 1", "--learning-rate 0.001"]),
        ({"precision": "mixed_bfloat16"}, ["--precision mixed_bfloat16 vs float32 saved"]),
        ({"augment": False}, ["--augment False vs True saved"]),
    ],
)
def test_a_different_run_is_refused_before_loading_data(
    finished_run, tmp_path, monkeypatch, changes, differences
):
    from drn_tf import training

    config = copy_run(finished_run, tmp_path, **changes)
    run = Path(config["output"])
    before = listing(run)

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the run folder was checked")

    monkeypatch.setattr(training, "_load_data", no_data)
    with pytest.raises(ValueError) as error:
        train(TrainConfig(**config))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{run} holds a different run (")
    assert message.endswith("use a new --output or --overwrite")
    for difference in differences:
        assert difference in message
    assert message.count(" vs ") == len(changes)  # cosmetic flags are not listed
    assert listing(run) == before  # nothing touched


@pytest.mark.slow
def test_the_same_run_resumes_whatever_the_cosmetic_flags(finished_run, tmp_path, capsys):
    # Same run, other cosmetic flags and the folders spelt differently: it resumes, at its end.
    config = copy_run(
        finished_run,
        tmp_path,
        progress=2,
        tensorboard=True,
        cache_dir=str(tmp_path / "cache"),
        train_dir=[os.path.relpath(finished_run["config"]["train_dir"][0])],
    )
    run = Path(config["output"])
    stale = [
        run / f".latest.{dead_pid()}.0123abcd.keras",
        run / "backup" / f".x.{dead_pid()}.89abcdef.h5",
    ]
    alive = run / f".best.{os.getpid()}.00000000.keras"  # a live writer's: kept
    for path in [*stale, alive]:
        path.write_bytes(b"partial")
    log_before = (run / "log.csv").read_text()
    model = train(TrainConfig(**config))
    assert f"resuming run {run} at step 3 (already complete)" in capsys.readouterr().out
    assert int(model.optimizer.iterations.numpy()) == 3
    assert (run / "log.csv").read_text() == log_before  # no epoch ran again
    assert not any(path.exists() for path in stale)
    assert alive.exists()
    for ours, saved in zip(model.get_weights(), finished_run["model"].get_weights(), strict=True):
        np.testing.assert_array_equal(ours, saved)


@pytest.mark.slow
def test_a_run_without_run_json_is_refused_and_overwrite_starts_afresh(finished_run, tmp_path):
    config = copy_run(finished_run, tmp_path)
    run = Path(config["output"])
    (run / "run.json").unlink()  # as drn-tf 0.1 left its runs: backup/ but no run.json
    unrelated = run / "notes.txt"
    unrelated.write_text("mine")
    with pytest.raises(ValueError, match=r"holds a run of unknown flags \(no run.json"):
        train(TrainConfig(**config))

    model = train(TrainConfig(**{**config, "n_feats": 8, "steps": 2, "overwrite": True}))
    assert model.primal.get_layer("head").filters == 8
    assert int(model.optimizer.iterations.numpy()) == 2  # not restored from the old backup
    rows = read_log(run / "log.csv")
    assert [(row["step"], row["resumed"]) for row in rows] == [("2", "0")]
    assert json.loads((run / "run.json").read_text())["n_feats"] == 8
    assert unrelated.read_text() == "mine"  # --overwrite deletes only what a run writes


def test_failed_start_leaves_no_run_folder(tmp_path):
    # The flags are fine, but the only training image is smaller than a patch.
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(small / "tiny.png")
    config = tiny_config(tmp_path, train_dir=[str(small)], val_dir=[])
    with pytest.raises(ValueError, match="no usable training image"):
        train(TrainConfig(**config))
    assert not Path(config["output"]).exists()


# --------------------------------------------------------------------------------------------
# 8. the log and its plot
# --------------------------------------------------------------------------------------------


def test_run_log_keeps_one_column_set(tmp_path):
    from drn_tf.training import RunLog

    path = tmp_path / "log.csv"
    first = RunLog(path, steps_per_epoch=10, steps=25)
    first.on_epoch_end(0, {"loss": 2.0, "val_psnr": 20.0})
    resumed = RunLog(path, steps_per_epoch=10, steps=25, resumed=True)
    resumed.on_epoch_end(1, {"loss": 1.5, "primal_loss": 1.0})  # no val_psnr; one new key
    resumed.on_epoch_end(2, {"loss": 1.0, "val_psnr": 22.0})
    with open(path, newline="") as file:
        lines = list(csv.reader(file))
    assert lines[0] == ["epoch", "step", "resumed", "loss", "val_psnr"]
    assert lines[1:] == [
        ["0", "10", "0", "2.0", "20.0"],
        ["1", "20", "1", "1.5", "NA"],
        ["2", "25", "0", "1.0", "22.0"],
    ]


@pytest.mark.slow
def test_plot_curves_skips_values_that_are_not_numbers(tmp_path):
    from drn_tf.training import _numbers, plot_curves

    log = tmp_path / "log.csv"
    log.write_text(
        "epoch,step,resumed,loss,val_psnr\n0,10,0,2.0,NA\n1,20,1,1.5,21.5\n2,30,0,nan,\n"
    )
    rows = read_log(log)
    assert _numbers(rows, "step", "val_psnr") == ([20.0], [21.5])
    assert _numbers(rows, "step", "loss") == ([10.0, 20.0], [2.0, 1.5])
    assert _numbers(rows, "step", "absent") == ([], [])
    plot_curves(log, tmp_path / "curves.png")
    assert Image.open(tmp_path / "curves.png").size == (700, 400)

    # A CSVLogger file of drn-tf 0.1: no step column, no validation.
    old = tmp_path / "old.csv"
    old.write_text("epoch,loss\n0,2.0\n1,NA\n")
    plot_curves(old, tmp_path / "old.png")
    assert (tmp_path / "old.png").is_file()
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,loss\n")
    plot_curves(empty, tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


# --------------------------------------------------------------------------------------------
# 9. configuration and command line
# --------------------------------------------------------------------------------------------


BAD_CONFIGS = [
    ({"train_dir": []}, "no training folder given: --train-dir is required"),
    ({"train_dir": ["{tmp}/nope"]}, "--train-dir {tmp}/nope: folder does not exist"),
    ({"val_dir": ["{tmp}/images/img0.png"]}, "--val-dir {tmp}/images/img0.png: not a folder"),
    ({"val_dir": ["{tmp}/nope"]}, "--val-dir {tmp}/nope: folder does not exist"),
    ({"init": "{tmp}/nope.keras"}, "--init {tmp}/nope.keras: file does not exist"),
    ({"variant": "drn-m"}, "--variant must be one of drn-s, drn-l, got 'drn-m'"),
    ({"scale": 3}, "--scale 3 is not a power of two"),
    ({"n_feats": 0}, "--n-feats must be at least 1, got 0"),
    ({"steps": 0}, "--steps must be at least 1, got 0"),
    ({"steps_per_epoch": -1}, "--steps-per-epoch must be at least 1, got -1"),
    ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
    ({"cluster_timeout": 0}, "--cluster-timeout must be at least 1, got 0"),
    ({"patch_size": 50}, "--patch-size 50 is not a multiple of --scale 4"),
    ({"learning_rate": 0.0}, "--learning-rate must be positive, got 0.0"),
    ({"learning_rate": float("nan")}, "--learning-rate must be positive, got nan"),
    ({"min_learning_rate": 1.0}, "--min-learning-rate must be between 0 and --learning-rate"),
    ({"beta_2": 1.0}, "--beta-2 must be in [0, 1), got 1.0"),
    ({"epsilon": 0.0}, "--epsilon must be positive"),
    ({"dual_weight": -0.1}, "--dual-weight must be at least 0"),
    ({"precision": "fp16"}, "--precision must be one of auto, float32, mixed_float16"),
    ({"progress": 3}, "--progress must be 0, 1 or 2, got 3"),
    ({"output": "{tmp}/images/img0.png"}, "--output {tmp}/images/img0.png: not a folder"),
    ({"output": "{tmp}/images/img0.png/run"}, "--output {tmp}/images/img0.png/run: {tmp}/images"),
    ({"cache_dir": "{tmp}/images/img0.png"}, "--cache-dir {tmp}/images/img0.png: not a folder"),
]


@pytest.mark.parametrize("changes, message", BAD_CONFIGS, ids=[m[:22] for _, m in BAD_CONFIGS])
def test_bad_configs_are_refused_up_front(tmp_path, monkeypatch, changes, message):
    from drn_tf import training

    images = write_images(tmp_path / "images", 1, seed=0, size=8)
    changes = {
        k: [v.format(tmp=tmp_path) for v in v] if isinstance(v, list) else
        v.format(tmp=tmp_path) if isinstance(v, str) else v
        for k, v in changes.items()
    }  # fmt: skip
    config = {"train_dir": [str(images)], "output": str(tmp_path / "run"), **changes}

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the flags were checked")

    monkeypatch.setattr(training, "_load_data", no_data)
    with pytest.raises(ValueError) as error:
        train(TrainConfig(**config))
    assert str(error.value).startswith(message.format(tmp=tmp_path))
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # no run folder


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_output_is_refused_up_front(tmp_path):
    images = write_images(tmp_path / "images", 1, seed=0, size=8)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ValueError, match=f"--output {locked}/run: cannot write in {locked}"):
            train(TrainConfig(train_dir=[str(images)], output=str(locked / "run")))
    finally:
        locked.chmod(0o755)


def test_cli_train_help_and_missing_folder(tmp_path, capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--train-dir", "--patch-size", "--precision", "--steps-per-epoch"):
        assert flag in out
    assert cli.main(["train"]) == 2  # a wrong flag, as the README promises: exit 2
    assert "no training folder" in capsys.readouterr().err
    images = str(write_images(tmp_path / "images", 1, seed=0, size=8))
    assert cli.main(["train", "--train-dir", images, "--learning-rate", "0"]) == 2
    assert "--learning-rate must be positive, got 0.0" in capsys.readouterr().err
    assert cli.main(["train", "--train-dir", str(tmp_path / "nope")]) == 1  # a missing folder
    assert "folder does not exist" in capsys.readouterr().err


def test_init_starts_from_a_saved_model(tiny):
    from drn_tf.training import build_model

    model, path = tiny
    started = build_model(TrainConfig(train_dir=["unused"], init=str(path)))
    assert isinstance(started, DualRegressionModel)
    for network, saved_network in zip(
        [started.primal, *started.duals], [model.primal, *model.duals], strict=True
    ):
        for ours, saved in zip(network.get_weights(), saved_network.get_weights(), strict=True):
            np.testing.assert_array_equal(ours, saved)
    with pytest.raises(ValueError, match="×4 model, but --scale is 8"):
        build_model(TrainConfig(train_dir=["unused"], init=str(path), scale=8))
    for flag, value in (("n_feats", 8), ("n_blocks", 2), ("variant", "drn-l")):
        with pytest.raises(ValueError) as error:  # the run.json would say what is not trained
            build_model(TrainConfig(train_dir=["unused"], init=str(path), **{flag: value}))
        assert str(error.value) == (
            f"{path}: a drn-s model (--n-blocks 1, --n-feats 4), but "
            f"--{flag.replace('_', '-')} is {value}; match it or leave it out"
        )
    build_model(TrainConfig(train_dir=["unused"], init=str(path), n_feats=4, n_blocks=1))
    plain = path.with_name("plain.keras")
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save(plain)
    with pytest.raises(ValueError, match="not a DRN"):
        build_model(TrainConfig(train_dir=["unused"], init=str(plain)))


# --------------------------------------------------------------------------------------------
# Keras habits: compile's loss and metrics, the global dtype policy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"loss": "mae"}, r"its own loss.*dual_weight= and unpaired_loop="),
        ({"loss_weights": [1.0]}, "no loss or loss_weights"),
        ({"metrics": ["mae"]}, r"its own metrics.*no metrics or weighted_metrics"),
        ({"weighted_metrics": ["mae"]}, "no metrics or weighted_metrics"),
    ],
)
def test_compile_refuses_a_loss_or_metrics_it_would_ignore(arguments, message):
    model = small_model()
    with pytest.raises(ValueError, match=message):
        model.compile(optimizer=keras.optimizers.Adam(1e-3), **arguments)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    assert model.run_eagerly and isinstance(model.optimizer, keras.optimizers.Adam)


@pytest.mark.slow
def test_a_saved_compiled_model_loads_compiled(tmp_path):
    model = small_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.train_on_batch(*pyramid_batch())
    path = save_model_atomic(model, tmp_path / "compiled.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns when it skips compiling a custom compile()
        loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, keras.optimizers.Adam)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(1e-3)
    assert int(loaded.optimizer.iterations.numpy()) == 1  # its state came back too


def test_train_leaves_the_global_policy_as_it_found_it(tmp_path, monkeypatch):
    from drn_tf import training

    keras.config.set_dtype_policy("mixed_float16")  # the caller's, unlike the run's
    config = tiny_config(tmp_path, precision="mixed_bfloat16", steps=1, val_dir=[])
    model = train(TrainConfig(**config))
    assert model.primal.get_layer("head").dtype_policy.name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "mixed_float16"

    def fails(*args):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"  # set by the run
        raise OSError("disk gone")

    monkeypatch.setattr(training, "_load_data", fails)
    with pytest.raises(OSError, match="disk gone"):
        train(TrainConfig(**{**config, "output": str(tmp_path / "failed")}))
    assert keras.config.dtype_policy().name == "mixed_float16"


@pytest.mark.slow
def test_the_progress_bar_of_a_short_last_epoch_counts_its_steps(tmp_path, capsys):
    config = tiny_config(tmp_path, steps=3, steps_per_epoch=2, val_dir=[], progress=2)
    train(TrainConfig(**config))
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if " - loss" in line or line.startswith("Epoch")]
    assert lines[0] == "Epoch 1/2" and lines[1].startswith("2/2 - ")
    assert lines[2] == "Epoch 2/2" and lines[3].startswith("1/1 - "), out


@pytest.mark.slow
def test_skipped_training_images_are_one_plain_line_each(tmp_path, capsys):
    config = tiny_config(tmp_path, steps=1, val_dir=[])
    junk = Path(config["train_dir"][0]) / "junk.png"
    junk.write_bytes(b"not an image")
    train(TrainConfig(**config))
    err = capsys.readouterr().err
    assert f"skipped {junk}: not an image file (PIL cannot identify it)\n" in err
    assert "WARNING" not in err
    assert all(line.count(str(junk)) <= 1 for line in err.splitlines())  # not path: path: …
