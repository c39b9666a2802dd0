"""Training and adapting DRN: the ``train`` flow behind ``drn-tf train`` and ``drn-tf adapt``.

Builds or loads the model (:class:`drn_tf.dual_regression.DualRegressionModel`, the loss and
the paper's Algorithm 1), reads the data (:mod:`drn_tf.data`), checks and starts or resumes the
run folder (:mod:`drn_tf.runs`), runs ``fit`` (or :mod:`drn_tf.distribute`'s loop across
machines) with the callbacks that log, save and stop it (:mod:`drn_tf.callbacks`), and writes
the curves.

DRN-Adapt (``drn-tf adapt``, ``train(AdaptConfig(...))``, ``docs/drn-reference.md`` §1.5) starts
from a trained model and fine-tunes primal and duals on batches with an exact share ρ of LR-only
samples (:func:`drn_tf.data.make_mixed_dataset`); what it gains: ``docs/adaptation.md``.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from drn_tf import data, distribute
from drn_tf import precision as precision_rule
from drn_tf.callbacks import (
    Backup,
    ProgressBar,
    RunLog,
    SaveModel,
    StopAtStep,
    StopOnInterrupt,
    StopWhenDiverged,
    TensorBoardLog,
    plot_curves,
)
from drn_tf.dual_regression import DualRegressionModel
from drn_tf.files import naming_full_disk, remove_stale_temp_files
from drn_tf.image_sets import load_eval_pairs
from drn_tf.loading import check_trained_duals, forget_random_duals, load_model
from drn_tf.models import build_drn_bundle, deepen, save_model_atomic
from drn_tf.runs import (
    RunConfig,
    check_run_folder,
    effective_steps_per_epoch,
    start_run_folder,
    validate_config,
)
from drn_tf.settings import AdaptConfig, check_patch_size
from drn_tf.training_images import load_lr_images, load_pyramids


def resolve_precision(precision: str) -> str:
    """A training ``--precision`` → a Keras dtype policy: :func:`drn_tf.precision.resolve_precision`
    for training (``auto``: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with AMX, else
    float32)."""
    return precision_rule.resolve_precision(precision, training=True)


def build_model(config: RunConfig, policy: str = "float32") -> DualRegressionModel:
    """A fresh model of ``config``'s size, or the ``config.init`` model wrapped for training;
    for an :class:`AdaptConfig`, the ``config.model`` to adapt (primal and dual weights as
    saved); computing in the Keras dtype ``policy``."""
    if isinstance(config, AdaptConfig):
        loaded = load_model(config.model, config.scale, policy=policy)  # checks DRN and scale
        check_patch_size(config.patch_size, loaded.scale, f"{config.model}'s scale")
        check_trained_duals(loaded, config.model, "adapting it")
        return DualRegressionModel.from_drn(loaded, config.dual_weight, config.unpaired_loop)
    if config.init:
        loaded = load_model(config.init, policy=policy)  # checks that it holds a DRN
        if loaded.scale != config.scale:
            raise ValueError(
                f"{config.init}: a ×{loaded.scale} model, but --scale is {config.scale}"
            )
        saved = loaded.drn_config  # run.json must say what is trained
        deeper = config.n_blocks is not None and config.n_blocks > saved.n_blocks
        for flag, given, real in (
            ("--variant", config.variant, saved.variant),
            ("--n-blocks", None if deeper else config.n_blocks, saved.n_blocks),
            ("--n-feats", config.n_feats, saved.n_feats),
        ):
            if given is not None and given != real:
                raise ValueError(
                    f"{config.init}: a {saved.variant} model (--n-blocks {saved.n_blocks}, "
                    f"--n-feats {saved.n_feats}), but {flag} is {given}; match it or leave it "
                    "out (or give more --n-blocks to deepen it)"
                )
        note = forget_random_duals(loaded, config.init)  # random duals: trained from here
        if note:
            print(note, file=sys.stderr)
        if deeper:
            with _building_in(policy):
                loaded = deepen(loaded, config.n_blocks)
            print(
                f"{config.init}: deepened from {saved.n_blocks} to {config.n_blocks} RCABs per "
                "phase; the new ones start as identities",
                file=sys.stderr,
            )
        return DualRegressionModel.from_drn(loaded, config.dual_weight)
    with _building_in(policy):
        fresh = build_drn_bundle(
            config.variant, config.scale, n_blocks=config.n_blocks, n_feats=config.n_feats
        )
    return DualRegressionModel.from_drn(fresh, config.dual_weight)


@contextlib.contextmanager
def _building_in(policy: str) -> Iterator[None]:
    """Layers built inside compute in the Keras dtype ``policy``."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


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
        scale_augment=config.scale_augment,
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
        f"precision {keras.config.dtype_policy().name}, {replicas} replica(s)"
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
    # Each set read once (its notes shown once), for the dataset and the TensorBoard samples.
    val_pairs = [
        (lr, hr) for folder in config.val_dir for _, lr, hr in load_eval_pairs(folder, scale)
    ]
    val_ds = data.eval_dataset(val_pairs) if config.val_dir else None
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
        model = build_model(config, precision)
        model.compile(optimizer=make_optimizer(config))
    shard = distribute.worker_position(strategy) if multi_worker else None
    train_ds, val_ds, val_pairs = _load_data(config, replicas, model.scale, shard)

    # Only now that the data and model are good, so a failed start leaves no folder behind.
    if resume_step is None:
        if chief:
            start_run_folder(config)
        note = None
    else:
        note = f"resuming run {config.output} at step {resume_step}"
        print(note + (" (already complete)" if resume_step == config.steps else ""))
    steps_per_epoch = effective_steps_per_epoch(config)
    callbacks = [
        StopWhenDiverged(steps_per_epoch),  # first: before anything saves a diverged model
        StopOnInterrupt(),
        Backup(str(run / "backup"), save_freq="epoch", delete_checkpoint=False),
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
    # What Keras and TensorFlow write (backup/, tensorboard/) is named by the run folder.
    with naming_full_disk(run):
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
    with naming_full_disk(run / "model.keras"):
        save_model_atomic(model, run / "model.keras")
    skipped_steps = int(model.skipped_steps.numpy())
    if skipped_steps:
        print(
            f"note: {skipped_steps} step(s) had a non-finite loss or gradient and were skipped",
            file=sys.stderr,
        )
    plot_curves(run / "log.csv", run / "curves.png")
    return model
