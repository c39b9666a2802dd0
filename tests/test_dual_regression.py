"""Tests for drn_tf.dual_regression: pyramid_loss, and DualRegressionModel's step and compile.

Expectations come from outside our code: the loss formula of docs/drn-reference.md §1.3 written out
in numpy, the authors' losses and one Adam step recorded with PyTorch (``drn_s_x4_io.npz``), a
float32 step for the mixed-precision and multi-replica steps, and ``GradientTape`` gradients for
the update of a plain SGD step.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    DUAL_PT,
    IO_NPZ,
    PRIMAL_PT,
    REFERENCE,
    last_json,
    pyramid_batch,
    run_python,
    small_model,
)

from drn_tf.dual_regression import DualRegressionModel, pyramid_loss
from drn_tf.models import build_drn, build_duals, save_model_atomic

pytestmark = pytest.mark.usefixtures("float32_policy")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


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
# 6. Keras habits: compile's loss and metrics
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
