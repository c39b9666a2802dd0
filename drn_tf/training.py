"""Training and adapting DRN: the ``train`` flow behind ``drn-tf train`` and ``drn-tf adapt``.

Builds or loads the model (:class:`drn_tf.dual_regression.DualRegressionModel`, the loss and
the paper's Algorithm 1), reads the data (:mod:`drn_tf.data`), checks and keeps the run folder
(``run.json``, resume, ``--overwrite``), runs ``fit`` (or :mod:`drn_tf.distribute`'s loop
across machines) with the callbacks that log, save and stop it, and writes the curves.

DRN-Adapt (``drn-tf adapt``, ``train(AdaptConfig(...))``, ``docs/drn-reference.md`` §1.5) starts
from a trained model and fine-tunes primal and duals on batches with an exact share ρ of LR-only
samples (:func:`drn_tf.data.make_mixed_dataset`); what it gains: ``docs/adaptation.md``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import json
import os
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from drn_tf import data, distribute
from drn_tf import precision as precision_rule
from drn_tf.config import AdaptConfig, TrainConfig, check_patch_size
from drn_tf.degrade import imresize
from drn_tf.dual_regression import DualRegressionModel
from drn_tf.files import atomic_path, remove_stale_temp_files
from drn_tf.frames import is_video
from drn_tf.image_sets import load_eval_pairs, load_lr_images, load_pyramids
from drn_tf.inference import check_trained_duals, load_model
from drn_tf.models import VARIANTS, DRNConfig, build_drn_bundle, save_model_atomic
from drn_tf.progress import LOG_INTERVAL, PlainLines, is_terminal


def resolve_precision(precision: str) -> str:
    """A training ``--precision`` → a Keras dtype policy: :func:`drn_tf.precision.resolve_precision`
    for training (``auto``: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with AMX, else
    float32)."""
    return precision_rule.resolve_precision(precision, training=True)


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


# The folder flags of each kind of run.
_FOLDER_FLAGS = {
    "train": ("train_dir", "val_dir"),
    "adapt": ("paired_dir", "unpaired_dir", "val_dir"),
}


def _folder_flags(config: RunConfig) -> tuple[str, ...]:
    return _FOLDER_FLAGS[_command(config)]


def validate_config(config: RunConfig) -> None:
    """Checks every setting of ``config`` (its ``check()``) and the paths it names, reading no
    image and writing nothing (an :class:`AdaptConfig`'s ``--patch-size`` is checked against
    the model's scale once the model is loaded).

    Raises:
        ValueError: the first problem found, in one line naming the flag (:class:`FlagError`
            for a wrong flag value).
    """
    config.check()
    for name in _folder_flags(config):
        for folder in getattr(config, name):
            if name == "unpaired_dir" and is_video(folder) and Path(folder).is_file():
                continue  # footage: its frames are LR-only samples
            if not Path(folder).is_dir():
                problem = "not a folder" if Path(folder).exists() else "folder does not exist"
                raise ValueError(f"{_flag(name)} {folder}: {problem}")
    adapting = isinstance(config, AdaptConfig)
    start = config.model if adapting else config.init
    if start not in (None, "default") and not Path(start).is_file():
        raise ValueError(f"{'--model' if adapting else '--init'} {start}: file does not exist")
    _check_writable_folder(config.output, "--output")
    if config.cache_dir is not None:
        _check_writable_folder(config.cache_dir, "--cache-dir")


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
        loaded = load_model(config.model, config.scale)  # checks the file, DRN and scale
        check_patch_size(config.patch_size, loaded.scale, f"{config.model}'s scale")
        check_trained_duals(loaded, config.model, "adapting it")
        return DualRegressionModel.from_drn(loaded, config.dual_weight, config.unpaired_loop)
    if config.init:
        loaded = load_model(config.init)  # checks the file and that it holds a DRN
        if loaded.scale != config.scale:
            raise ValueError(
                f"{config.init}: a ×{loaded.scale} model, but --scale is {config.scale}"
            )
        saved = loaded.drn_config  # run.json must say what is trained
        for flag, given, real in (
            ("--variant", config.variant, saved.variant),
            ("--n-blocks", config.n_blocks, saved.n_blocks),
            ("--n-feats", config.n_feats, saved.n_feats),
        ):
            if given is not None and given != real:
                raise ValueError(
                    f"{config.init}: a {saved.variant} model (--n-blocks {saved.n_blocks}, "
                    f"--n-feats {saved.n_feats}), but {flag} is {given}; match it or leave it out"
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
            frames_per_video=config.frames_per_video,
        )
        skipped += lr_skipped
    batch_size, seed = config.batch_size, config.seed
    if shard is not None:
        batch_size //= replicas
        # Workers hold different files; distinct seeds keep their crops and flips unrelated.
        seed = int(np.random.SeedSequence(shard[::-1] + (config.seed,)).generate_state(1)[0])
    for path, reason in skipped:
        print(f"skipped {path}: {str(reason).removeprefix(f'{path}: ')}", file=sys.stderr)
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


def _keeps_global_policy(function):
    """``function``, restoring Keras' global dtype policy when it returns or raises: a run
    computes in its own precision and leaves its caller's as it found it."""

    @functools.wraps(function)
    def keeping_global_policy(*args, **kwargs):
        previous = keras.config.dtype_policy()
        try:
            return function(*args, **kwargs)
        finally:
            keras.config.set_dtype_policy(previous)

    return keeping_global_policy


@_keeps_global_policy
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
        StopWhenDiverged(steps_per_epoch),  # first: before anything saves a diverged model
        keras.callbacks.BackupAndRestore(
            str(run / "backup"), save_freq="epoch", delete_checkpoint=False
        ),
        RunLog(run / "log.csv", steps_per_epoch, config.steps, resumed=note is not None),
        StopAtStep(config.steps, steps_per_epoch),
        SaveModel(
            run / "latest.keras",
            run / "best.keras" if config.val_dir else None,
            log_csv=run / "log.csv",
        ),
    ]
    if config.progress:
        callbacks.append(ProgressBar())
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
        print(
            f"note: {skipped_steps} step(s) had a non-finite loss or gradient and were skipped",
            file=sys.stderr,
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
