"""Tests for DRN-Adapt: the LR-only samples' loss and gradient, the mixed batches, and
``drn-tf adapt`` runs (start from the given weights, resume at the same step, refuse bad flags).

Expectations come from outside the code under test: the closed-loop terms written out with the
networks themselves and differentiated with ``GradientTape``, the linearity of a plain SGD step,
pixel values that tell paired and LR-only samples apart, and Adam's bound on its first step.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import SMALL, as_flags, run_killed
from PIL import Image

from drn_tf import cli, data
from drn_tf.dual_regression import DualRegressionModel
from drn_tf.kernel_dual import LOGIT_GAIN
from drn_tf.models import build_drn, build_duals
from drn_tf.settings import AdaptConfig, TrainConfig
from drn_tf.training import build_model, train
from drn_tf.training_images import Pyramid

pytestmark = pytest.mark.usefixtures("float32_policy")


def flat(arrays) -> np.ndarray:
    return np.concatenate([np.ravel(a).astype(np.float64) for a in arrays])


# --------------------------------------------------------------------------------------------
# 1. the loss of LR-only samples: only the closed loop
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def start_weights():
    keras.utils.set_random_seed(5)
    model = DualRegressionModel(build_drn("drn-s", 4, **SMALL), build_duals("drn-s", 4, **SMALL))
    return model.get_weights()


def sgd_step(weights, loop: str, lr, targets, paired):
    """``(weight change, logs)`` of one SGD step of learning rate 1 from ``weights``: the
    negative gradient of the model's loss, up to the float32 resolution of the weights
    (:func:`resolution`)."""
    model = DualRegressionModel(
        build_drn("drn-s", 4, **SMALL), build_duals("drn-s", 4, **SMALL), unpaired_loop=loop
    )
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(1.0), run_eagerly=True)
    before = [v.numpy() for v in model.trainable_variables]
    logs = model.train_on_batch(lr, targets, sample_weight=paired, return_dict=True)
    after = flat(v.numpy() for v in model.trainable_variables)
    return after - flat(before), logs, resolution(before)


def resolution(weights) -> np.ndarray:
    """Per weight, the float32 rounding error of ``(w + step) − w``."""
    return flat(np.spacing(np.abs(w).astype(np.float32)) for w in weights)


def closed_loop_terms(model, x, loop: str):
    """Eq. 2's λ·L_D(D(P(x)), x) for an LR-only batch, written out with the networks:
    ``|D_0(SR_1) − x|``, plus ``|D_0(D_1(SR_2)) − x|`` for the cascade; and the readout."""
    outputs = model.primal(x, training=True)
    first = keras.ops.mean(keras.ops.abs(model.duals[0](outputs[1]) - x))
    full_loop = model.duals[0](model.duals[1](outputs[2]))
    cascade = keras.ops.mean(keras.ops.abs(full_loop - x))
    return 0.1 * (first + (cascade if loop == "cascade" else 0.0)), float(cascade)


def batch(seed: int, size: int = 1, lr_size: int = 6):
    rng = np.random.default_rng(seed)
    lr = rng.uniform(0, 255, (size, lr_size, lr_size, 3)).astype(np.float32)
    targets = tuple(
        rng.uniform(0, 255, (size, lr_size * k, lr_size * k, 3)).astype(np.float32) for k in (2, 4)
    )
    return lr, targets


@pytest.mark.parametrize("loop", ["first", "cascade"])
def test_lr_only_sample_gradient_is_the_closed_loop_gradient(start_weights, loop):
    lr, _ = batch(seed=1)
    # Targets an LR-only sample must not see: huge, so any leak would dominate the gradient.
    garbage = tuple(np.full((1, 6 * k, 6 * k, 3), 1e6, np.float32) for k in (2, 4))
    update, logs, rounding = sgd_step(start_weights, loop, lr, garbage, np.zeros(1, np.float32))

    model = DualRegressionModel(build_drn("drn-s", 4, **SMALL), build_duals("drn-s", 4, **SMALL))
    model.set_weights(start_weights)
    with tf.GradientTape() as tape:
        loss, readout = closed_loop_terms(model, tf.constant(lr), loop)
    gradient = flat(
        np.zeros(v.shape) if g is None else g
        for v, g in zip(
            model.trainable_variables, tape.gradient(loss, model.trainable_variables), strict=True
        )
    )
    assert np.abs(gradient).max() > 0
    # float32 sums: relative to each value and to the largest, plus the weights' resolution.
    tolerance = 1e-5 * np.abs(gradient) + 1e-6 * np.abs(gradient).max() + 2 * rounding
    assert np.all(np.abs(-update - gradient) <= tolerance)
    assert float(logs["primal_loss"]) == 0.0
    assert float(logs["loss"]) == pytest.approx(float(loss), rel=1e-5)
    assert float(logs["loop_error"]) == pytest.approx(readout, rel=1e-5)


def test_first_loop_leaves_the_top_phase_alone_and_cascade_reaches_it(start_weights):
    """The ×4 phase (its RCABs, upsampler and tail) only gets an LR-only gradient through the
    cascade: with ``first`` the loop ends at the ×2 output."""
    lr, _ = batch(seed=2)
    model = DualRegressionModel(build_drn("drn-s", 4, **SMALL), build_duals("drn-s", 4, **SMALL))
    top_phase = [
        i for i, v in enumerate(model.trainable_variables) if "up_1" in v.path or "tail_2" in v.path
    ]
    assert top_phase, [v.path for v in model.trainable_variables]
    sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
    starts = np.cumsum([0, *sizes])
    updates = {
        loop: sgd_step(start_weights, loop, lr, batch(seed=3)[1], np.zeros(1, np.float32))[0]
        for loop in ("first", "cascade")
    }
    for loop, touched in (("first", False), ("cascade", True)):
        moved = [np.abs(updates[loop][starts[i] : starts[i + 1]]).max() > 0 for i in top_phase]
        assert any(moved) == touched, loop


@pytest.mark.parametrize("loop", ["first", "cascade"])
def test_lr_only_sample_in_a_mixed_batch_adds_its_share(start_weights, loop):
    """A batch of a paired sample a and an LR-only sample b steps by the mean of the steps of
    a alone and b alone (the loss is a per-sample sum over the batch size)."""
    lr_a, targets_a = batch(seed=4)
    lr_b, targets_b = batch(seed=5)
    lr = np.concatenate([lr_a, lr_b])
    targets = tuple(np.concatenate(pair) for pair in zip(targets_a, targets_b, strict=True))
    mixed, logs, rounding = sgd_step(start_weights, loop, lr, targets, np.array([1, 0], "float32"))
    alone_a, _, _ = sgd_step(start_weights, loop, lr_a, targets_a, np.ones(1, np.float32))
    alone_b, logs_b, _ = sgd_step(start_weights, loop, lr_b, targets_b, np.zeros(1, np.float32))
    tolerance = 1e-5 * np.abs(mixed) + 1e-6 * np.abs(mixed).max() + 4 * rounding
    assert np.all(np.abs(mixed - (alone_a + alone_b) / 2) <= tolerance)
    # The readout averages the LR-only samples only.
    assert float(logs["loop_error"]) == pytest.approx(float(logs_b["loop_error"]), rel=1e-5)


# --------------------------------------------------------------------------------------------
# 1b. the kernel loop: a learned blur-and-subsample dual for the LR-only samples
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel_start_weights():
    keras.utils.set_random_seed(6)
    model = DualRegressionModel(
        build_drn("drn-s", 4, **SMALL), build_duals("drn-s", 4, **SMALL), unpaired_loop="kernel"
    )
    # A kernel off its bicubic start, so its gradient is not a special case.
    rng = np.random.default_rng(3)
    kernel = rng.dirichlet(np.ones(400)).reshape(20, 20)
    model.degradation.logits.assign((np.log(kernel + 1e-12) / LOGIT_GAIN).astype(np.float32))
    return model.get_weights()


def test_kernel_loop_reaches_the_primal_through_the_kernel_only(kernel_start_weights):
    """An LR-only sample's step is the gradient of λ·|K(SR_4) − x|: primal and kernel move,
    the dual networks do not (no |D_0(SR_2) − x| term), HR-derived targets are not seen."""
    lr, _ = batch(seed=7)
    garbage = tuple(np.full((1, 6 * k, 6 * k, 3), 1e6, np.float32) for k in (2, 4))
    update, logs, rounding = sgd_step(
        kernel_start_weights, "kernel", lr, garbage, np.zeros(1, np.float32)
    )
    model = DualRegressionModel(
        build_drn("drn-s", 4, **SMALL), build_duals("drn-s", 4, **SMALL), unpaired_loop="kernel"
    )
    model.set_weights(kernel_start_weights)
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        top = model.primal(tf.constant(lr), training=True)[-1]
        loss = 0.1 * keras.ops.mean(keras.ops.abs(model.degradation(top) - lr))
    gradient = flat(
        np.zeros(v.shape) if g is None else g
        for v, g in zip(variables, tape.gradient(loss, variables), strict=True)
    )
    tolerance = 1e-5 * np.abs(gradient) + 1e-6 * np.abs(gradient).max() + 2 * rounding
    assert np.all(np.abs(-update - gradient) <= tolerance)
    assert float(logs["loss"]) == pytest.approx(float(loss), rel=1e-5)
    sizes = np.cumsum([0, *(int(np.prod(v.shape)) for v in variables)])
    moved = {
        v.path: np.abs(update[sizes[i] : sizes[i + 1]]).max() > 0 for i, v in enumerate(variables)
    }
    assert moved[model.degradation.logits.path]
    assert any(moved[v.path] for v in model.primal.trainable_variables)
    assert not any(moved[v.path] for dual in model.duals for v in dual.trainable_variables)


def test_kernel_model_saves_loads_and_upscales(kernel_start_weights, tmp_path):
    """The kernel is a training-time part: saved with the training model (so a resumed run
    keeps it), left out of the packaged model; both load and upscale alike."""
    import drn_tf
    from drn_tf.models import DRN, package_model, save_model_atomic

    model = DualRegressionModel(
        build_drn("drn-s", 4, **SMALL), build_duals("drn-s", 4, **SMALL), unpaired_loop="kernel"
    )
    model.set_weights(kernel_start_weights)
    saved = drn_tf.load_model(save_model_atomic(model, tmp_path / "run.keras"))
    assert isinstance(saved, DualRegressionModel) and saved.unpaired_loop == "kernel"
    np.testing.assert_array_equal(saved.degradation.kernel, model.degradation.kernel)
    packaged = drn_tf.load_model(package_model(model, tmp_path / "adapted.keras"))
    assert type(packaged) is DRN and not hasattr(packaged, "degradation")
    image = np.random.default_rng(4).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    expected = drn_tf.upscale(image, model)
    assert expected.shape == (48, 40, 3)
    np.testing.assert_array_equal(drn_tf.upscale(image, saved), expected)
    np.testing.assert_array_equal(drn_tf.upscale(image, packaged), expected)


# --------------------------------------------------------------------------------------------
# 2. mixed batches
# --------------------------------------------------------------------------------------------


def dark_pyramids(count: int, size: int = 48) -> list[Pyramid]:
    """Paired samples with every value in 0..100 (LR-only ones are 200..255)."""
    rng = np.random.default_rng(0)
    pyramids = []
    for number in range(count):
        hr = rng.integers(1, 100, (size, size, 3), dtype=np.uint8)
        levels = (hr[::4, ::4].copy(), hr[::2, ::2].copy(), hr)
        pyramids.append(Pyramid(Path(f"p{number}.png"), 4, levels))
    return pyramids


def coded_lr_image(height: int, width: int, number: int) -> np.ndarray:
    """Values 200..255 whose red and green channels encode the row and column."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([200 + y, 200 + x, np.full_like(y, 200 + number)], -1).astype(np.uint8)


@pytest.mark.parametrize("size, ratio", [(10, 0.3), (8, 0.3), (4, 0.5), (3, 0.2)])
def test_every_batch_holds_the_share_of_lr_only_samples(size, ratio):
    lr_images = [coded_lr_image(12, 15, n) for n in range(3)]
    dataset = data.make_mixed_dataset(dark_pyramids(3), lr_images, 4, 32, size, ratio, seed=2)
    counts = set()
    for lr, targets, paired in dataset.take(12).as_numpy_iterator():
        lr_only = paired == 0
        counts.add(int(lr_only.sum()))
        assert set(np.unique(paired)) == {0.0, 1.0}
        assert lr.shape == (size, 8, 8, 3)
        assert lr[~lr_only].max() <= 100 and lr[lr_only].min() >= 200
        for target in targets:
            assert not target[lr_only].any()  # LR-only samples have no target
            assert 0 < target[~lr_only].max() <= 100
    [count] = counts  # the same number in every batch
    # Exact up to rounding: the nearest achievable share.
    assert abs(count / size - ratio) <= 1 / (2 * size) + 1e-9
    assert 1 <= count <= size - 1


def test_lr_only_patches_are_crops_of_the_lr_images():
    lr_images = [coded_lr_image(12, 15, n) for n in range(3)]
    dataset = data.make_mixed_dataset(
        dark_pyramids(2), lr_images, 4, 32, 4, 0.5, seed=3, augment=False
    )
    origins = set()
    for lr, _, paired in dataset.take(10).as_numpy_iterator():
        for patch in lr[paired == 0].astype(np.uint8):
            number, top, left = patch[0, 0, 2] - 200, patch[0, 0, 0] - 200, patch[0, 0, 1] - 200
            expected = lr_images[number][top : top + 8, left : left + 8]
            np.testing.assert_array_equal(patch, expected)
            origins.add((number, top, left))
    assert len(origins) > 5  # random crops, not one fixed window


@pytest.mark.parametrize(
    "size, ratio, message",
    [
        (4, 0.1, "gives 0 LR-only sample(s) per batch"),
        (4, 0.9, "gives 4 LR-only sample(s) per batch"),
        (8, 0.0, "--unpaired-ratio must be more than 0 and less than 1, got 0.0"),
        (8, 1.0, "--unpaired-ratio must be more than 0 and less than 1, got 1.0"),
    ],
)
def test_a_share_that_leaves_a_kind_out_is_refused(size, ratio, message):
    with pytest.raises(ValueError) as error:
        data.unpaired_count(size, ratio)
    assert message in str(error.value)


# --------------------------------------------------------------------------------------------
# 3. drn-tf adapt runs
# --------------------------------------------------------------------------------------------


def write_images(folder: Path, count: int, seed: int, size: tuple[int, int], suffix: str):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for number in range(count):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"img{number}{suffix}")
    return folder


def adapt_config(root: Path, model: Path, **changes) -> dict:
    """A tiny adaptation: 48×48 paired photos, 12×14 LR-only JPEGs, batch 4 (2 LR-only)."""
    if not (root / "paired").is_dir():
        write_images(root / "paired", 3, seed=0, size=(48, 48), suffix=".png")
        write_images(root / "lr_only", 3, seed=1, size=(12, 14), suffix=".jpg")
    config = {
        "model": str(model),
        "paired_dir": [str(root / "paired")],
        "unpaired_dir": [str(root / "lr_only")],
        "unpaired_ratio": 0.5,
        "output": str(root / "run"),
        "steps": 5,
        "steps_per_epoch": 2,
        "batch_size": 4,
        "patch_size": 32,
        "precision": "float32",
        "tensorboard": False,
        "progress": 0,
    }
    return {**config, **changes}


@pytest.fixture(scope="module")
def resumed_adapt(tmp_path_factory, tiny):
    """A tiny adapt run of 5 steps, 2 per epoch, killed as its third epoch starts, then run
    again to the end with the same flags through ``drn-tf adapt``."""
    root = tmp_path_factory.mktemp("adapt")
    config = adapt_config(root, tiny[1])
    killed = run_killed(config, "adapt")
    run = Path(config["output"])
    killed_log = (run / "log.csv").read_text() if (run / "log.csv").is_file() else ""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = cli.main(["adapt", *as_flags(config)])
    return {"killed": killed, "killed_log": killed_log, "run": run, "status": status,
            "stdout": output.getvalue()}  # fmt: skip


@pytest.mark.slow
def test_killed_adapt_run_died_after_two_epochs(resumed_adapt):
    killed = resumed_adapt["killed"]
    assert killed.returncode == 17, killed.stderr[-3000:]
    assert "adapting on 3 paired + 3 LR-only images (2 of 4 LR-only per batch" in killed.stdout
    assert [row["step"] for row in csv.DictReader(io.StringIO(resumed_adapt["killed_log"]))] == [
        "2",
        "4",
    ]


@pytest.mark.slow
def test_resumed_adapt_run_continues_at_the_same_step(resumed_adapt):
    run = resumed_adapt["run"]
    assert resumed_adapt["status"] == 0
    assert f"resuming run {run} at step 4" in resumed_adapt["stdout"]
    with open(run / "log.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["step"] for row in rows] == ["2", "4", "5"]
    assert [row["resumed"] for row in rows] == ["0", "0", "1"]
    # The no-reference readout is logged in every epoch, and is a mean absolute error.
    assert all(0 < float(row["loop_error"]) < 255 for row in rows)
    saved = keras.saving.load_model(run / "model.keras")
    assert isinstance(saved, DualRegressionModel)
    record = json.loads((run / "run.json").read_text())
    assert record["command"] == "adapt" and record["unpaired_ratio"] == 0.5
    assert record["unpaired_dir"] == [str((run.parent / "lr_only").resolve())]


@pytest.mark.slow
def test_resumed_adapt_run_took_exactly_the_steps(resumed_adapt):
    backup = json.loads((resumed_adapt["run"] / "backup" / "training_metadata.json").read_text())
    assert backup["epoch"] == 3  # 2 + 2 + 1 steps: three epochs in all, none repeated


@pytest.mark.slow
def test_adaptation_starts_from_the_given_weights(tiny, tmp_path):
    model, path = tiny
    config = adapt_config(tmp_path, path, steps=1, learning_rate=1e-3, min_learning_rate=1e-3)

    def networks(m):  # primal and duals, without the training counters
        return flat(w for net in (m.primal, *m.duals) for w in net.get_weights())

    started = build_model(AdaptConfig(**config))
    np.testing.assert_array_equal(networks(started), networks(model))
    assert started.unpaired_loop == "cascade"  # the default, by the README's experiment

    adapted = train(AdaptConfig(**config))
    change = networks(adapted) - networks(model)
    # Adam's first step moves each weight by at most about the learning rate, so the run
    # started from the file's weights (a fresh initialisation is orders of magnitude away).
    assert 0 < np.abs(change).max() <= 1e-3 * 1.001
    assert int(adapted.optimizer.iterations.numpy()) == 1


@pytest.mark.slow
def test_kernel_loop_adapt_run_trains_the_kernel_and_its_model_upscales(tiny, tmp_path):
    import drn_tf
    from drn_tf.kernel_dual import initial_kernel

    config = adapt_config(tmp_path, tiny[1], steps=2, unpaired_loop="kernel")
    train(AdaptConfig(**config))
    saved = drn_tf.load_model(tmp_path / "run" / "model.keras")
    assert saved.unpaired_loop == "kernel"
    start = initial_kernel(4, 20) + 1e-5
    assert np.abs(saved.degradation.kernel.numpy() - start / start.sum()).max() > 1e-4
    image = np.random.default_rng(5).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    assert drn_tf.upscale(image, saved).shape == (36, 44, 3)


def bad_adapt_configs():
    return [
        ({"unpaired_dir": []}, "no LR-only folder given: --unpaired-dir is required"),
        ({"paired_dir": []}, "no paired folder given: --paired-dir is required"),
        ({"unpaired_dir": ["{tmp}/nope"]}, "--unpaired-dir {tmp}/nope: folder does not exist"),
        ({"model": "{tmp}/nope.keras"}, "--model {tmp}/nope.keras: file does not exist"),
        ({"unpaired_ratio": 0.1}, "--unpaired-ratio 0.1 of --batch-size 4 gives 0 LR-only"),
        ({"unpaired_loop": "both"}, "--unpaired-loop must be one of first, cascade"),
        ({"patch_size": 30}, "--patch-size 30 is not a multiple of {model}'s scale 4"),
    ]


@pytest.mark.parametrize("changes, message", bad_adapt_configs())
def test_bad_adapt_flags_are_refused_before_reading_images(
    tiny, tmp_path, monkeypatch, changes, message
):
    from drn_tf import training

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the flags were checked")

    monkeypatch.setattr(training, "_load_data", no_data)
    config = adapt_config(tmp_path, tiny[1])
    config.update({k: [v.format(tmp=tmp_path) for v in v] if isinstance(v, list) else
                   v.format(tmp=tmp_path) if isinstance(v, str) else v
                   for k, v in changes.items()})  # fmt: skip
    with pytest.raises(ValueError) as error:
        train(AdaptConfig(**config))
    assert str(error.value).startswith(message.format(tmp=tmp_path, model=tiny[1]))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_adapt_and_train_do_not_resume_each_other(tiny, tmp_path):
    config = adapt_config(tmp_path, tiny[1], steps=1)
    train(AdaptConfig(**config))
    train_config = {"train_dir": config["paired_dir"], "output": config["output"]}
    with pytest.raises(ValueError, match="holds a drn-tf adapt run; use a new --output"):
        train(TrainConfig(**train_config, n_blocks=1, n_feats=4, patch_size=32, batch_size=2))


def test_cli_adapt_help_and_usage(capsys):
    assert cli.main(["adapt", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--paired-dir", "--unpaired-dir", "--unpaired-ratio",
                 "--unpaired-loop", "--steps", "--output", "--precision"):  # fmt: skip
        assert flag in out
    assert "--train-dir" not in out and "--variant" not in out
    assert cli.main(["adapt", "--unpaired-loop", "both"]) == 2
    assert cli.main(["adapt", "--output", "/nonexistent-parent/x"]) == 2  # a flag missing
    assert "--paired-dir is required" in capsys.readouterr().err
    folders = ["--paired-dir", ".", "--unpaired-dir", ".", "--output", "/nonexistent-parent/x"]
    assert cli.main(["adapt", *folders, "--unpaired-ratio", "1.0"]) == 2
    assert "--unpaired-ratio must be more than 0" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# 4. the experiment (python -m benchmarks.adaptation), tiny
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_adaptation_benchmark_runs_tiny(tiny, tmp_path, capsys):
    import re
    import shlex

    from benchmarks import adaptation
    from drn_tf.flags import parse_config

    text = adaptation.__doc__.replace("\\\n", " ")
    for example in re.findall(r"python -m benchmarks.adaptation( [^\n]*)", text):
        parse_config(adaptation.AdaptationConfig, shlex.split(example), "adaptation")
    train_dir = tmp_path / "train"
    write_images(train_dir / "T91", 2, seed=0, size=(40, 44), suffix=".bmp")
    write_images(train_dir / "BSD200", 4, seed=1, size=(36, 40), suffix=".png")
    test_set = tmp_path / "Set"
    write_images(test_set / "HR", 2, seed=2, size=(48, 52), suffix=".png")
    picture = tmp_path / "picture.png"
    argv = ["--model", str(tiny[1]), "--train-dir", str(train_dir), "--test-dir", str(test_set),
            "--steps", "2", "--batch-size", "4", "--patch-size", "32", "--unpaired-ratio", "0.5",
            "--work-dir", str(tmp_path / "work"), "--picture", str(picture),
            "--variants", "first", "kernel", "paired-degraded", "--seeds", "1", "2",
            "--crop", "Set", "img0", "0", "0", "24"]  # fmt: skip
    assert adaptation.main(argv) == 0
    report = json.loads((tmp_path / "work" / "results.json").read_text())
    rows = report["rows"]
    assert list(rows) == ["un-adapted", "first", "kernel", "paired-degraded"]
    for row in rows.values():
        assert set(row["scores"]) == {"Set nearest", "Set bicubic"}
        assert row["scores"]["Set nearest"]["loop_error"] > 0
    # Fine-tuned rows: one run per seed, the mean and the range of their PSNRs.
    for variant in ("first", "kernel", "paired-degraded"):
        runs = rows[variant]["runs"]
        assert [run["seed"] for run in runs] == [1, 2]
        psnrs = [run["scores"]["Set nearest"]["psnr"] for run in runs]
        assert rows[variant]["scores"]["Set nearest"]["psnr"] == pytest.approx(np.mean(psnrs))
        assert rows[variant]["psnr_range"]["Set nearest"] == [min(psnrs), max(psnrs)]
    for run in rows["kernel"]["runs"]:  # the learned kernel: 20×20 taps, summing to one
        assert np.sum(run["kernel"]["taps"]) == pytest.approx(1.0, abs=0.01)
    # un-adapted | adapted | upper bound | HR: 24-pixel crops shown at ×2, 6 px apart.
    assert Image.open(picture).size == (4 * 48 + 3 * 6, 48 + 22)
    out = capsys.readouterr().out
    assert "paired 4 photos, LR-only 2 photos; batch 4 = 2 paired + 2 LR-only" in out


def test_adapt_scale_picks_the_packaged_model(tiny, tiny_x2, tmp_path, monkeypatch):
    from drn_tf import bundled

    monkeypatch.setattr(bundled, "DEFAULT_MODEL_PATHS", {2: tiny_x2, 4: tiny[1]})
    config = adapt_config(tmp_path, "default")
    assert build_model(AdaptConfig(**config, scale=2)).scale == 2
    assert build_model(AdaptConfig(**config)).scale == 4
    with pytest.raises(ValueError, match="no packaged ×8 model"):
        build_model(AdaptConfig(**config, scale=8))
    with pytest.raises(ValueError, match="a ×4 model, but the scale asked for is ×2"):
        build_model(AdaptConfig(**{**config, "model": str(tiny[1])}, scale=2))
    with pytest.raises(ValueError, match="--scale must be a power of two"):
        train(AdaptConfig(**config, scale=3))


def test_adapt_model_fast_is_the_packaged_fast_x4_model(tiny, tiny_x2, tmp_path, monkeypatch):
    from drn_tf import bundled, runs

    monkeypatch.setattr(bundled, "DEFAULT_MODEL_PATHS", {2: tiny_x2, 4: tiny_x2})
    monkeypatch.setattr(bundled, "FAST_MODEL_PATHS", {4: tiny[1]})
    config = adapt_config(tmp_path, "fast")
    runs.validate_config(AdaptConfig(**config))  # a packaged name, not a missing file
    assert runs.run_record(AdaptConfig(**config))["model"] == "fast"
    with pytest.raises(ValueError, match="--model fastest: file does not exist"):
        runs.validate_config(AdaptConfig(**{**config, "model": "fastest"}))
    model = build_model(AdaptConfig(**config))
    assert model.scale == 4 and model.primal.count_params() == tiny[0].primal.count_params()
    with pytest.raises(ValueError, match=r"no packaged fast ×2 model \(packaged: ×4\)"):
        build_model(AdaptConfig(**config, scale=2))
