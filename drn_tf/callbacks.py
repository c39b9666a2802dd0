"""The Keras callbacks of a training run, and the curves drawn from its log.

Callbacks: :class:`ProgressBar` (Keras' bar, plain lines in a log), :class:`StopAtStep`
(exactly ``--steps``), :class:`StopOnInterrupt` (Ctrl-C or SIGTERM, even one a library
swallowed), :class:`StopWhenDiverged` (:class:`TrainingDiverged`), :class:`RunLog`
(``log.csv``), :class:`TensorBoardLog` (``tensorboard/``) and :class:`SaveModel`
(``latest.keras``, ``best.keras``); :func:`plot_curves` draws ``curves.png`` from ``log.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import math
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from drn_tf.console import check_interrupted
from drn_tf.degrade import imresize
from drn_tf.files import DiskFull, atomic_path, naming_full_disk
from drn_tf.models import save_model_atomic
from drn_tf.progress import LOG_INTERVAL, PlainLines, is_terminal


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


class ProgressBar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, except that an epoch :class:`StopAtStep` cuts short ends at the
    steps it ran (Keras' own ends every epoch at the full count: ``20/20`` for 10 steps), and
    that where stdout is no terminal (a log) it writes plain lines, one every
    :data:`~drn_tf.progress.LOG_INTERVAL` seconds and one per epoch end (Keras' own redraws
    its bar with ANSI escape codes and ``\\r`` there too: it takes any POSIX system for a
    terminal)."""

    @staticmethod
    def _output():
        if is_terminal(sys.stdout):
            return contextlib.nullcontext()
        return contextlib.redirect_stdout(PlainLines(sys.stdout))

    def _maybe_init_progbar(self):
        super()._maybe_init_progbar()
        if not is_terminal(sys.stdout):
            # No bar: without its colours, done and to-do look alike. The count says it all.
            self.progbar.interval, self.progbar.width = LOG_INTERVAL, 0

    def on_epoch_begin(self, epoch, logs=None):
        with self._output():
            super().on_epoch_begin(epoch, logs)

    def _update_progbar(self, batch, logs=None):
        with self._output():
            super()._update_progbar(batch, logs)

    def _finalize_progbar(self, logs):
        if self.progbar is not None and 0 < self.seen < (self.target or 0):
            self.target = self.progbar.target = self.seen
        with self._output():
            super()._finalize_progbar(logs)


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


class StopOnInterrupt(keras.callbacks.Callback):
    """Ends ``fit`` with ``KeyboardInterrupt`` at the batch after Ctrl-C or SIGTERM, also when
    the ``KeyboardInterrupt`` the signal raised was lost in a finalizer or caught inside a
    library (:func:`drn_tf.console.check_interrupted`): otherwise such a run went on to its
    last step before the command stopped."""

    def on_train_batch_end(self, batch, logs=None):
        check_interrupted()


class TrainingDiverged(ValueError):
    """A run stopped because its model no longer computes finite numbers."""


class StopWhenDiverged(keras.callbacks.Callback):
    """Stops ``fit`` with :class:`TrainingDiverged` once the model has diverged: its weights
    are not finite, its output on a test image is not (checked at each epoch end), or
    ``patience`` steps in a row were skipped (a skipped step changes nothing, so the next
    fails alike). It raises before the epoch-end saves (placed first among the callbacks), so
    ``latest.keras``, ``best.keras`` and ``backup/`` keep the last finite epoch."""

    def __init__(self, steps_per_epoch: int, patience: int = 10):
        super().__init__()
        self.steps_per_epoch, self.patience = steps_per_epoch, patience
        self.epoch = self.streak = self.skipped = 0

    def on_train_begin(self, logs=None):
        self.skipped = int(self.model.skipped_steps.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        skipped = int(self.model.skipped_steps.numpy())
        self.streak = self.streak + 1 if skipped > self.skipped else 0
        self.skipped = skipped
        step = self.epoch * self.steps_per_epoch + batch + 1
        if self.streak and not self._weights_finite():
            self._stop(step, "its weights are no longer finite (NaN or inf)")
        if self.streak >= self.patience:
            self._stop(step, f"the last {self.streak} steps had a non-finite loss or gradient")

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.steps_per_epoch
        if not self._weights_finite():
            self._stop(step, "its weights are no longer finite (NaN or inf)")
        probe = np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 3)).astype("float32")
        if not all(np.isfinite(np.asarray(out)).all() for out in self.model.primal(probe)):
            self._stop(step, "its output on a test image is not finite")

    def _weights_finite(self) -> bool:
        return all(np.isfinite(w).all() for w in self.model.get_weights() if w.dtype.kind == "f")

    def _stop(self, step: int, why: str):
        raise TrainingDiverged(
            f"training diverged by step {step}: {why}; stopped without saving it (latest.keras "
            "and backup/ hold the last finite epoch, if any); lower --learning-rate"
        )


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
        with naming_full_disk(self.path), open(self.path, "a", newline="") as file:
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


class Backup(keras.callbacks.BackupAndRestore):
    """Keras' ``BackupAndRestore`` (what a resumed run starts from, saved every epoch) that
    first checks the disk has room: h5py ends the whole process with a segmentation fault when
    the disk fills while it writes the weights, and leaves a half-written backup that no resume
    can read. Without room, :class:`~drn_tf.files.DiskFull` names the backup folder and the
    last backup stays as it was."""

    #: Room asked for beyond the weights and the optimizer state: HDF5's own records and the
    #: epoch's metadata file.
    MARGIN = 1 << 20

    def on_epoch_end(self, epoch, logs=None):
        variables = [*self.model.variables, *self.model.optimizer.variables]
        # At most 8 bytes a value (float32 weights and slots, int64 counters).
        needed = 8 * sum(math.prod(v.shape) for v in variables) + self.MARGIN
        folder = Path(self.backup_dir)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if shutil.disk_usage(folder).free < needed:
            raise DiskFull(f"{self.backup_dir}: cannot write, no space left on device")
        super().on_epoch_end(epoch, logs)


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
        with naming_full_disk(self.latest):
            save_model_atomic(self.model, self.latest)
        value = (logs or {}).get(self.monitor)
        if self.best is not None and value is not None and value > self.best_value:
            self.best_value = value
            with naming_full_disk(self.best):
                save_model_atomic(self.model, self.best)


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
    with atomic_path(output) as temp:  # names the file on a full disk
        figure.savefig(temp, dpi=100, format="png")
    plt.close(figure)
