"""``tf.data`` pipelines for DRN: random aligned multi-scale patches, full-image evaluation.

::

    load_pyramids ─► make_train_dataset: random aligned crop + dihedral augmentation ─► batches
    load_eval_pairs ─► make_eval_dataset: full images, batch size 1

Reading images and building their LR pyramids is :mod:`drn_tf.training_images`' job (numpy only);
this module adds the TensorFlow part.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from drn_tf.image_sets import load_eval_pairs
from drn_tf.images import PathLike
from drn_tf.scales import check_scale
from drn_tf.settings import unpaired_count
from drn_tf.training_images import Pyramid, pyramid_factors

__all__ = [
    "eval_dataset",
    "make_eval_dataset",
    "make_mixed_dataset",
    "make_train_dataset",
    "unpaired_count",
]


def _as_levels(pyramid: Pyramid | Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    return pyramid.levels if isinstance(pyramid, Pyramid) else tuple(pyramid)


def make_train_dataset(
    pyramids: Sequence[Pyramid] | Sequence[Sequence[np.ndarray]],
    scale: int,
    patch_size: int,
    batch_size: int,
    seed: int | None = None,
    augment: bool = True,
) -> tf.data.Dataset:
    """Infinite, shuffled dataset of aligned multi-scale training patches.

    Each element is ``(inputs, targets)``, the ``data`` a custom Keras ``train_step`` receives:

    * ``inputs``: ``LR_X{s}`` patches, float32 ``(B, P/s, P/s, 3)``;
    * ``targets``: a tuple ordered from the lowest resolution to HR,
      ``(LR_X{s/2}, ..., LR_X2, HR)``, each float32 ``(B, P/k, P/k, 3)``. For ``s = 4`` that is
      ``(LR_X2 (B, P/2, P/2, 3), HR (B, P, P, 3))``; for ``s = 8``, ``(LR_X4, LR_X2, HR)``; for
      ``s = 2``, ``(HR,)``.

    with ``B = batch_size`` and ``P = patch_size``. Values are on 0..255 (integers stored as
    float32; no normalisation, the model subtracts the mean itself). These are the model's
    primal targets ``SR_2x, ..., SR_sx`` and, shifted by one, the dual targets.

    Per sample: a random image (shuffled once per pass over the images), a random HR crop of
    ``P x P`` whose origin is a multiple of ``s`` and the matching ``P/k`` crop at ``origin/k`` in
    every level, then (``augment``) a random horizontal flip, vertical flip and transpose, each with
    p = 0.5 and identical for all levels. Cropping happens on uint8, before the float32 cast.

    The images are held in memory as uint8 (one dataset element per image, materialised once by
    ``.cache()``; this is a second copy besides ``pyramids``). They enter through
    ``Dataset.from_generator``, so the pipeline runs in this Python process (fine for
    ``MirroredStrategy`` and multi-worker training; not for tf.data service or remote TPU hosts).
    Randomness uses stateless ops fed from ``tf.data.Dataset.random``, so map functions hold no
    Python state and a fixed ``seed`` gives a reproducible stream under the same global seed
    (TensorFlow combines the two: ``drn-tf train`` sets it from ``--seed`` with
    ``keras.utils.set_random_seed`` before building its datasets). ``batch_size`` is the global
    batch: pass the dataset to ``model.fit`` (with ``steps_per_epoch``, it is infinite) or
    ``strategy.experimental_distribute_dataset``. Auto-sharding is set to DATA (each replica takes
    its share of every batch), right for one machine's replicas; ``drn-tf train --strategy
    multi_worker`` instead gives each worker its share of the files and turns it OFF
    (:mod:`drn_tf.distribute`).

    Args:
        pyramids: :class:`Pyramid` objects (or level tuples in the same order) for ``scale``.
        scale: SR factor, a power of two.
        patch_size: HR patch side ``P``, a multiple of ``scale``; every image must be at least this
            large (``load_pyramids(..., min_size=patch_size)`` ensures that).
        batch_size: samples per batch; the remainder is dropped, so batch shapes are static.
        seed: seed for shuffling, crops and flips; None for a fresh random stream.
        augment: apply the random flips/transpose.

    Returns:
        ``tf.data.Dataset`` of ``(inputs, targets)`` as above, prefetched.
    """
    scale = check_scale(scale)
    factors = pyramid_factors(scale)
    if patch_size < scale or patch_size % scale:
        raise ValueError(
            f"patch_size must be a positive multiple of scale {scale}, got {patch_size}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    all_levels = [_as_levels(p) for p in pyramids]
    if not all_levels:
        raise ValueError("make_train_dataset needs at least one pyramid")
    for number, levels in enumerate(all_levels):
        name = getattr(pyramids[number], "path", f"pyramid {number}")
        # Re-validates raw level tuples; Pyramid objects already passed this check.
        Pyramid(path=Path(str(name)), scale=scale, levels=levels)
        height, width = levels[-1].shape[:2]
        if height < patch_size or width < patch_size:
            raise ValueError(f"{name}: HR {width}x{height} is smaller than patch_size {patch_size}")

    return _random_patches(all_levels, factors, patch_size, batch_size, seed, augment)


def _random_patches(
    all_levels: Sequence[tuple[np.ndarray, ...]],
    factors: Sequence[int],
    patch_size: int,
    batch_size: int,
    seed: int | None,
    augment: bool,
) -> tf.data.Dataset:
    """Batches of aligned random crops of ``all_levels`` (see :func:`make_train_dataset`)."""
    signature = tuple(tf.TensorSpec((None, None, 3), tf.uint8) for _ in factors)

    def generate():
        yield from all_levels

    images = tf.data.Dataset.from_generator(generate, output_signature=signature).cache()
    # buffer > number of images: the shuffle then reads past the end of the first pass, which lets
    # cache() finalise even if the consumer stops early (no "cache not fully read" warning).
    images = images.shuffle(len(all_levels) + 1, seed=seed, reshuffle_each_iteration=True)
    images = images.repeat()
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    samples = tf.data.Dataset.zip((images, seeds)).map(
        _make_crop_fn(factors, patch_size, augment),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=seed is not None,
    )
    dataset = samples.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def make_mixed_dataset(
    pyramids: Sequence[Pyramid] | Sequence[Sequence[np.ndarray]],
    lr_images: Sequence[np.ndarray] | Sequence[tuple[PathLike, np.ndarray]],
    scale: int,
    patch_size: int,
    batch_size: int,
    unpaired_ratio: float = 0.3,
    seed: int | None = None,
    augment: bool = True,
) -> tf.data.Dataset:
    """Infinite DRN-Adapt batches: paired pyramid patches and LR-only patches, mixed exactly.

    Every batch holds ``m = unpaired_count(batch_size, unpaired_ratio)`` LR-only samples after
    ``n = batch_size − m`` paired ones. Elements are ``(lr, targets, paired)`` for
    :class:`drn_tf.training.DualRegressionModel` (use it with ``model.fit`` as the dataset of
    :func:`make_train_dataset`):

    * ``lr``: float32 ``(B, P/s, P/s, 3)``, paired LR patches then LR-only patches;
    * ``targets``: as in :func:`make_train_dataset`, zeros for the LR-only samples (their
      HR-derived terms are weighted 0);
    * ``paired``: float32 ``(B,)``, 1 for the first ``n``, 0 for the last ``m``.

    Values are on 0..255. The paired stream is :func:`make_train_dataset`'s with ``seed``; the
    LR-only images get random ``P/s`` crops (origin anywhere) and the same augmentation, from
    a stream seeded with ``seed + 1``.

    Args:
        pyramids: paired samples, as for :func:`make_train_dataset`.
        lr_images: LR-only uint8 ``(h, w, 3)`` images, or ``(path, image)`` pairs as
            :func:`drn_tf.training_images.load_lr_images` returns; each at least ``P/s`` on a side.
        scale, patch_size, seed, augment: as for :func:`make_train_dataset`.
        batch_size: global batch size ``B``.
        unpaired_ratio: the share ρ of LR-only samples (0 < ρ < 1).
    """
    count = unpaired_count(batch_size, unpaired_ratio)
    paired = make_train_dataset(pyramids, scale, patch_size, batch_size - count, seed, augment)
    lr_patch = patch_size // scale
    images = [image[-1] if isinstance(image, tuple) else image for image in lr_images]
    if not images:
        raise ValueError("make_mixed_dataset needs at least one LR-only image")
    for number, image in enumerate(images):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"LR image {number}: expected uint8 (h, w, 3), got {image.shape}")
        if min(image.shape[:2]) < lr_patch:
            raise ValueError(f"LR image {number}: {image.shape[:2]} is smaller than {lr_patch}")
    unpaired = _random_patches(
        [(image,) for image in images],
        (1,),
        lr_patch,
        count,
        None if seed is None else seed + 1,
        augment,
    )

    def mix(paired_batch, lr_only):
        lr, targets = paired_batch
        lr_only = lr_only[0]
        return (
            tf.concat([lr, lr_only], 0),
            tuple(tf.concat([t, tf.zeros((count, *t.shape[1:]))], 0) for t in targets),
            tf.concat([tf.ones(batch_size - count), tf.zeros(count)], 0),
        )

    return tf.data.Dataset.zip((paired, unpaired)).map(mix).prefetch(tf.data.AUTOTUNE)


def _make_crop_fn(factors: Sequence[int], patch_size: int, augment: bool):
    scale = factors[0]

    def crop(levels: tuple[tf.Tensor, ...], seed: tf.Tensor):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(crop_seed, 2))
        hr_shape = tf.shape(levels[-1])
        # Origins are drawn in units of s HR pixels = one pixel of the smallest level, so every
        # level's origin origin_hr / k is an integer.
        y = tf.random.stateless_uniform(
            [], y_seed, minval=0, maxval=(hr_shape[0] - patch_size) // scale + 1, dtype=tf.int32
        )
        x = tf.random.stateless_uniform(
            [], x_seed, minval=0, maxval=(hr_shape[1] - patch_size) // scale + 1, dtype=tf.int32
        )
        flips = tf.random.stateless_uniform([3], flip_seed) < 0.5
        patches = []
        for level, factor in zip(levels, factors, strict=True):
            step = scale // factor
            size = patch_size // factor
            patch = tf.slice(level, tf.stack([y * step, x * step, 0]), [size, size, 3])
            if augment:
                patch = _dihedral(patch, flips)
            patches.append(tf.cast(patch, tf.float32))
        return patches[0], tuple(patches[1:])

    return crop


def _dihedral(patch: tf.Tensor, flips: tf.Tensor) -> tf.Tensor:
    """Horizontal flip, vertical flip, transpose, each if its flag is set (square patches)."""
    patch = tf.cond(flips[0], lambda: tf.reverse(patch, [1]), lambda: patch)
    patch = tf.cond(flips[1], lambda: tf.reverse(patch, [0]), lambda: patch)
    return tf.cond(flips[2], lambda: tf.transpose(patch, [1, 0, 2]), lambda: patch)


def make_eval_dataset(folder: PathLike, scale: int) -> tf.data.Dataset:
    """Full-image evaluation dataset of a folder (see :func:`load_eval_pairs` for the pairing
    rules): :func:`eval_dataset` of its pairs, in sorted file order."""
    return eval_dataset([(lr, hr) for _, lr, hr in load_eval_pairs(folder, scale)])


def eval_dataset(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tf.data.Dataset:
    """Full-image evaluation dataset of ``(lr, hr)`` uint8 ``(H, W, 3)`` pairs already read.

    Returns:
        ``tf.data.Dataset`` of ``(lr, hr)`` with batch size 1: ``lr`` float32
        ``(1, H/s, W/s, 3)``, ``hr`` float32 ``(1, H, W, 3)``, both on 0..255 with dynamic H and W,
        in the pairs' order. It is finite (one pass over the set).
    """

    def generate():
        yield from pairs

    spec = tf.TensorSpec((None, None, 3), tf.uint8)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=(spec, spec))
    # A known length lets Keras end validation without an "input ran out of data" warning.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(pairs)))
    dataset = dataset.map(lambda lr, hr: (tf.cast(lr, tf.float32), tf.cast(hr, tf.float32)))
    return dataset.batch(1).prefetch(tf.data.AUTOTUNE)
