"""Tests for drn_tf.training: --precision, a diverged run, killed-and-resumed runs and what a
run writes (DualRegressionModel's loss and step: tests/test_dual_regression.py; the run folder's
own checks: tests/test_runs.py; the callbacks: tests/test_callbacks.py).
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import errno
import importlib
import inspect
import io
import json
import os
import signal
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    SMALL,
    pyramid_batch,
    read_log,
    run_killed,
    small_model,
    tiny_config,
    write_images,
)
from PIL import Image

import drn_tf
from drn_tf import callbacks, cli
from drn_tf.dual_regression import DualRegressionModel
from drn_tf.models import DRN, save_model_atomic
from drn_tf.settings import TrainConfig
from drn_tf.training import resolve_precision, train
from drn_tf.training_images import load_pyramids

pytestmark = pytest.mark.usefixtures("float32_policy")


# --------------------------------------------------------------------------------------------
# 1. precision
# --------------------------------------------------------------------------------------------


def test_resolve_precision():
    from drn_tf.cpu import cpu_flags

    native_bf16 = {"amx_bf16", "avx512_bf16"} & cpu_flags()
    cpu = "mixed_bfloat16" if native_bf16 else "float32"
    expected = "mixed_float16" if tf.config.list_physical_devices("GPU") else cpu
    assert resolve_precision("auto") == expected
    names = ("float32", "mixed_float16", "mixed_bfloat16")
    gpu = bool(tf.config.list_physical_devices("GPU"))
    for name in names if gpu else names[::2]:  # mixed_float16 needs a GPU (test_precision)
        assert resolve_precision(name) == name
    for bad in ("float16", "fp16", "bfloat16", "", "AUTO"):
        with pytest.raises(ValueError, match="precision must be one of"):
            resolve_precision(bad)


# --------------------------------------------------------------------------------------------
# 2. a diverged run, a model with non-finite weights, and a packaged training file
# --------------------------------------------------------------------------------------------


def _diverging_optimizer(config):
    """Adam at the run's learning rate for 3 steps, then at 1e6: the weights blow up."""
    rate = keras.optimizers.schedules.PiecewiseConstantDecay([2], [config.learning_rate, 1e6])
    return keras.optimizers.Adam(rate)


@pytest.mark.slow
@pytest.mark.parametrize("val", [True, False])
def test_a_diverged_run_stops_and_keeps_the_last_finite_epoch(tmp_path, monkeypatch, val):
    from drn_tf import training
    from drn_tf.callbacks import TrainingDiverged

    monkeypatch.setattr(training, "make_optimizer", _diverging_optimizer)
    config = tiny_config(tmp_path, steps=30, steps_per_epoch=2)
    if not val:
        config["val_dir"] = []
    with pytest.raises(TrainingDiverged) as error:
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


# --------------------------------------------------------------------------------------------
# 3. a training run: outputs, and a killed run resumed where it stopped
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


def test_failed_start_leaves_no_run_folder(tmp_path):
    # The flags are fine, but the only training image is smaller than a patch.
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(small / "tiny.png")
    config = tiny_config(tmp_path, train_dir=[str(small)], val_dir=[])
    with pytest.raises(ValueError, match="no usable training image"):
        train(TrainConfig(**config))
    assert not Path(config["output"]).exists()


# Who writes each file of a run: (owner, method, the argument naming the path).
WRITERS = {
    "run.json": (Path, "write_text", "self"),
    "log.csv": (builtins, "open", "file"),
    "latest.keras": (DualRegressionModel, "save", "filepath"),
    "model.keras": (DualRegressionModel, "save", "filepath"),
    "curves.png": ("matplotlib.figure.Figure", "savefig", "fname"),
    "backup": (DualRegressionModel, "save_weights", "filepath"),  # Keras' BackupAndRestore
}


@pytest.mark.parametrize(
    "written",
    [w if w == "run.json" else pytest.param(w, marks=pytest.mark.slow) for w in WRITERS],
)
def test_a_full_disk_names_what_could_not_be_written(tmp_path, monkeypatch, written):
    config = tiny_config(tmp_path, steps=1, val_dir=[])
    run = Path(config["output"])
    owner, method, argument = WRITERS[written]
    if isinstance(owner, str):
        module, _, name = owner.rpartition(".")
        owner = getattr(importlib.import_module(module), name)
    write = getattr(owner, method)
    signature = inspect.signature(write)

    def full_disk(*args, **kwargs):
        path = signature.bind(*args, **kwargs).arguments[argument]
        if isinstance(path, (str, os.PathLike)) and (
            Path(path).name == written  # the file, its temporary twin, or one in the folder
            or Path(path).name.startswith(f".{Path(written).stem}.")
            or written in Path(path).parent.parts
        ):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a full disk fails a write
        return write(*args, **kwargs)

    monkeypatch.setattr(owner, method, full_disk)
    with pytest.raises(OSError) as error:
        train(TrainConfig(**config))
    # Keras' own writers (backup/) are named by the run folder, ours by the file.
    where = run if written == "backup" else run / written
    assert str(error.value) == f"{where}: cannot write, no space left on device"


# --------------------------------------------------------------------------------------------
# 4. configuration and command line
# --------------------------------------------------------------------------------------------


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
    for flag, value in (("n_feats", 8), ("variant", "drn-l")):
        with pytest.raises(ValueError) as error:  # the run.json would say what is not trained
            build_model(TrainConfig(train_dir=["unused"], init=str(path), **{flag: value}))
        assert str(error.value) == (
            f"{path}: a drn-s model (--n-blocks 1, --n-feats 4), but "
            f"--{flag.replace('_', '-')} is {value}; match it or leave it out (or give more "
            "--n-blocks to deepen it)"
        )
    build_model(TrainConfig(train_dir=["unused"], init=str(path), n_feats=4, n_blocks=1))
    plain = path.with_name("plain.keras")
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save(plain)
    with pytest.raises(ValueError, match="not a DRN"):
        build_model(TrainConfig(train_dir=["unused"], init=str(plain)))


def test_init_with_more_blocks_deepens_the_model_and_keeps_its_outputs(tiny, tmp_path, capsys):
    from drn_tf.training import build_model

    model, path = tiny
    deeper = build_model(TrainConfig(train_dir=["unused"], init=str(path), n_blocks=3))
    assert capsys.readouterr().err.strip() == (
        f"{path}: deepened from 1 to 3 RCABs per phase; the new ones start as identities"
    )
    names = {layer.name for layer in deeper.primal.layers}
    assert {f"up_{k}_rcab_{j}" for k in (0, 1) for j in (0, 1, 2)} <= names
    lr = np.random.default_rng(5).uniform(0, 255, (1, 6, 5, 3)).astype(np.float32)
    for ours, saved in zip(deeper.primal(lr), model.primal(lr), strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(saved), rtol=1e-6, atol=1e-4)
    # The new blocks are trainable layers like the others, not frozen identities.
    new_block = deeper.primal.get_layer("up_1_rcab_2")
    assert new_block.trainable and not np.any(new_block.conv2.get_weights()[0])
    assert np.any(new_block.conv1.get_weights()[0])

    two = drn_tf.build_drn_bundle("drn-s", 4, n_blocks=2, n_feats=4)
    fewer = save_model_atomic(two, tmp_path / "two.keras")
    with pytest.raises(ValueError, match="--n-blocks 2, --n-feats 4\\), but --n-blocks is 1"):
        build_model(TrainConfig(train_dir=["unused"], init=str(fewer), n_blocks=1))


def test_init_with_random_duals_says_so_and_the_run_no_longer_records_them(tiny, capsys):
    """``--init`` of a model converted without the authors' dual checkpoint: one note line
    (the duals start from random weights), and the run's model, whose duals it trains, is
    not refused later by adapt and ``evaluate --lr-only`` for random duals."""
    from drn_tf.loading import check_trained_duals
    from drn_tf.training import build_model

    model, path = tiny
    converted = DRN(model.primal, model.duals, drn_config=model.drn_config, info={
        "duals": "random initialisation: no dual checkpoint was converted", "kept": "yes"
    })  # fmt: skip
    no_duals = save_model_atomic(converted, path.with_name("no_duals.keras"))
    started = build_model(TrainConfig(train_dir=["unused"], init=str(no_duals)))
    assert capsys.readouterr().err.splitlines() == [
        f"note: {no_duals} has random dual networks (converted without --dual-checkpoint): "
        "they start from random weights and train with the primal; convert with the authors' "
        "dual checkpoint to start from theirs"
    ]
    assert started.info == {"kept": "yes"}
    check_trained_duals(started, "the run's model", "adapting it")  # not refused
    build_model(TrainConfig(train_dir=["unused"], init=str(path)))  # trained duals: no note
    assert capsys.readouterr().err == ""


def test_validation_set_is_read_once_so_a_missing_lr_file_is_noted_once(tmp_path, caplog):
    """``--val-dir`` with a benchmark set missing one LR file: "… missing; computing it" once
    (it was logged twice: the TensorBoard samples and the dataset each read the set)."""
    from drn_tf.training import _load_data

    val = tmp_path / "val"
    write_images(val / "HR", 2, seed=1, size=24)
    (val / "LR_bicubic" / "X4").mkdir(parents=True)
    Image.new("RGB", (6, 6)).save(val / "LR_bicubic" / "X4" / "img0x4.png")
    config = TrainConfig(
        train_dir=[str(write_images(tmp_path / "train", 2, seed=0, size=32))],
        val_dir=[str(val)], patch_size=32, batch_size=2, progress=0,
    )  # fmt: skip
    _, val_ds, val_pairs = _load_data(config, replicas=1, scale=4)
    missing = val / "LR_bicubic" / "X4" / "img1x4.png"
    notes = [r.getMessage() for r in caplog.records if "missing; computing" in r.getMessage()]
    assert notes == [
        f"{missing} missing; computing it from {val / 'HR' / 'img1.png'} with imresize"
    ]
    lrs = [lr for lr, _ in val_ds.as_numpy_iterator()]
    assert len(lrs) == len(val_pairs) == 2
    for lr, (expected, _) in zip(lrs, val_pairs, strict=True):  # the dataset is the pairs read
        np.testing.assert_array_equal(lr[0], expected)


def test_an_interrupt_a_library_swallowed_still_stops_training(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM whose ``KeyboardInterrupt`` was lost (raised in a finalizer, or caught
    inside a library) ends the run at the next batch: such a run used to go on to ``--steps``
    (seen as a `kill -TERM` that took minutes in test_cli's SIGTERM test)."""
    from drn_tf import console

    monkeypatch.setattr(console, "_received", [signal.SIGTERM])  # the handler ran; lost since
    config = tiny_config(tmp_path, steps=1000, steps_per_epoch=2, val_dir=[])
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**config))
    log = Path(config["output"]) / "log.csv"
    assert not log.is_file() or read_log(log) == []  # stopped within its first epoch


def test_scale_augment_adds_a_copy_of_each_training_image(tmp_path, monkeypatch):
    """``--scale-augment 0.7`` reaches the pyramids: 2 images and their 2 copies (34 × 34 ≥ the
    32-pixel patch); validation is not augmented."""
    from drn_tf import training

    loaded = []

    def recording_load_pyramids(*args, **kwargs):
        pyramids, skipped = load_pyramids(*args, **kwargs)
        loaded.append([p.hr.shape[:2] for p in pyramids])
        return pyramids, skipped

    monkeypatch.setattr(training, "load_pyramids", recording_load_pyramids)
    config = TrainConfig(
        train_dir=[str(write_images(tmp_path / "train", 2, seed=0, size=48))],
        scale_augment=[0.7], patch_size=32, batch_size=2, progress=0,
    )  # fmt: skip
    training._load_data(config, replicas=1, scale=4)
    assert loaded == [[(48, 48), (48, 48), (32, 32), (32, 32)]]  # 34 modcropped to 32


# --------------------------------------------------------------------------------------------
# Keras habits: the global dtype policy
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
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
def test_skipped_training_images_are_one_plain_line_each(tmp_path, capsys):
    config = tiny_config(tmp_path, steps=1, val_dir=[])
    junk = Path(config["train_dir"][0]) / "junk.png"
    junk.write_bytes(b"not an image")
    train(TrainConfig(**config))
    err = capsys.readouterr().err
    assert f"skipped {junk}: not an image file (PIL cannot identify it)\n" in err
    assert "WARNING" not in err
    assert all(line.count(str(junk)) <= 1 for line in err.splitlines())  # not path: path: …


@pytest.mark.slow
def test_a_backup_the_disk_has_no_room_for_is_not_started(tmp_path, monkeypatch):
    """h5py crashes the process when the disk fills during a weights save: the backup checks
    the free space first, and stops the run with one line naming the backup folder."""
    config = tiny_config(tmp_path, steps=1, val_dir=[])
    run = Path(config["output"])
    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(callbacks.shutil, "disk_usage", lambda path: Usage(1 << 30, 1 << 30, 4096))
    with pytest.raises(OSError) as error:
        train(TrainConfig(**config))
    assert str(error.value) == f"{run / 'backup'}: cannot write, no space left on device"
    assert not list((run / "backup").glob("*.h5"))  # nothing half-written
