"""Tests for drn_tf.callbacks: divergence stops a run, the log keeps one column set, the curves
skip what is not a number, and the progress bar of a short last epoch counts the steps it ran.

Expectations are written out by hand: the steps at which a run must stop, the CSV rows, the
points of the curves, the step counts of each epoch.
"""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest
from helpers import SMALL, read_log, tiny_config
from PIL import Image

from drn_tf.dual_regression import DualRegressionModel
from drn_tf.models import build_drn, build_duals
from drn_tf.settings import TrainConfig
from drn_tf.training import train

pytestmark = pytest.mark.usefixtures("float32_policy")


# --------------------------------------------------------------------------------------------
# 1. stopping on divergence
# --------------------------------------------------------------------------------------------


def test_divergence_is_ten_skipped_steps_in_a_row_or_non_finite_weights():
    from drn_tf.callbacks import StopWhenDiverged, TrainingDiverged

    keras.utils.set_random_seed(6)
    model = DualRegressionModel(
        build_drn("drn-s", 4, **SMALL), build_duals("drn-s", 4, **SMALL), dual_weight=0.1
    )
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


# --------------------------------------------------------------------------------------------
# 2. the log and its plot
# --------------------------------------------------------------------------------------------


def test_run_log_keeps_one_column_set(tmp_path):
    from drn_tf.callbacks import RunLog

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
    from drn_tf.callbacks import _numbers, plot_curves

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
# 3. the progress bar
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_progress_bar_of_a_short_last_epoch_counts_its_steps(tmp_path, capsys):
    config = tiny_config(tmp_path, steps=3, steps_per_epoch=2, val_dir=[], progress=2)
    train(TrainConfig(**config))
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if " - loss" in line or line.startswith("Epoch")]
    assert lines[0] == "Epoch 1/2" and lines[1].startswith("2/2 - ")
    assert lines[2] == "Epoch 2/2" and lines[3].startswith("1/1 - "), out
