"""Tests for drn_tf.runs: every flag and path is checked before any work, and a run folder
resumes only the same run (cosmetic flags aside), refuses another, and starts afresh with
--overwrite, deleting only what a run writes.

Expectations are the run's own inputs: the flags given, the files written before, their sizes
and modification times.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import read_log, tiny_config, write_images

from drn_tf.settings import TrainConfig
from drn_tf.training import train

pytestmark = pytest.mark.usefixtures("float32_policy")


# --------------------------------------------------------------------------------------------
# 1. flags and paths, checked before anything is read or written
# --------------------------------------------------------------------------------------------


BAD_CONFIGS = [
    ({"train_dir": []}, "no training folder given: --train-dir is required"),
    ({"train_dir": ["{tmp}/nope"]}, "--train-dir {tmp}/nope: folder does not exist"),
    ({"val_dir": ["{tmp}/images/img0.png"]}, "--val-dir {tmp}/images/img0.png: not a folder"),
    ({"val_dir": ["{tmp}/nope"]}, "--val-dir {tmp}/nope: folder does not exist"),
    ({"init": "{tmp}/nope.keras"}, "--init {tmp}/nope.keras: file does not exist"),
    ({"variant": "drn-m"}, "--variant must be one of drn-s, drn-l, got 'drn-m'"),
    ({"scale": 3}, "--scale must be a power of two (2, 4, 8, …), got 3"),
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


def test_mixed_float16_without_a_gpu_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """CPUs emulate float16 (several times slower than float32): one line, exit status 1,
    before the strategy, the model, the images and the run folder."""
    from drn_tf import cli, distribute, precision, runs, training

    def no_work(*args, **kwargs):
        raise AssertionError("work started before --precision was checked")

    for module, name in ((distribute, "make_strategy"), (training, "build_model")):
        monkeypatch.setattr(module, name, no_work)
    monkeypatch.setattr(training, "_load_data", no_work)
    monkeypatch.setattr(precision, "_has_gpu", lambda: False)
    images = write_images(tmp_path / "images", 1, seed=0, size=8)
    argv = ["train", "--train-dir", str(images), "--output", str(tmp_path / "run")]
    assert cli.main([*argv, "--precision", "mixed_float16"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "drn-tf train: error: precision mixed_float16 needs a GPU, and this machine has none "
        "(CPUs emulate float16, several times slower than float32); use auto, float32 or "
        "mixed_bfloat16"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # no run folder
    config = TrainConfig(train_dir=[str(images)], output=str(tmp_path / "run"))
    for name in ("auto", "float32", "mixed_bfloat16"):
        runs.validate_config(dataclasses.replace(config, precision=name))
    monkeypatch.setattr(precision, "_has_gpu", lambda: True)  # with a GPU: accepted
    runs.validate_config(dataclasses.replace(config, precision="mixed_float16"))


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


# --------------------------------------------------------------------------------------------
# 2. run folders: resume only the same run, refuse another, --overwrite
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
