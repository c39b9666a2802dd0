"""Tests for drn_tf.data: aligned, identically augmented patches and the tf.data pipelines; and
that reading images needs none of it."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from sample_images import noise

import drn_tf
from drn_tf import data
from drn_tf.training_images import Pyramid, compute_pyramid_levels, pyramid_factors


def block_mean_pyramid(hr: np.ndarray, scale: int) -> Pyramid:
    """Levels = rounded k x k block means of HR: a pyramid whose alignment is checkable by hand."""
    levels = []
    for factor in pyramid_factors(scale):
        h, w = hr.shape[0] // factor, hr.shape[1] // factor
        blocks = hr.reshape(h, factor, w, factor, 3).astype(np.float64).mean(axis=(1, 3))
        levels.append(np.floor(blocks + 0.5).astype(np.uint8))
    return Pyramid(path=Path("synthetic"), scale=scale, levels=tuple(levels))


# The 8 dihedral transforms as (hflip, vflip, transpose), applied in the pipeline's order.
DIHEDRAL = [(h, v, t) for h in (False, True) for v in (False, True) for t in (False, True)]


def dihedral(a: np.ndarray, flags: tuple[bool, bool, bool]) -> np.ndarray:
    hflip, vflip, transpose = flags
    if hflip:
        a = a[:, ::-1]
    if vflip:
        a = a[::-1]
    if transpose:
        a = a.transpose(1, 0, 2)
    return a


def dihedral_inverse(a: np.ndarray, flags: tuple[bool, bool, bool]) -> np.ndarray:
    hflip, vflip, transpose = flags
    if transpose:
        a = a.transpose(1, 0, 2)
    if vflip:
        a = a[::-1]
    if hflip:
        a = a[:, ::-1]
    return a


@pytest.mark.parametrize(("scale", "patch"), [(2, 16), (4, 32), (8, 32)])
def test_train_batches_structure(scale, patch):
    pyramids = [block_mean_pyramid(noise(64, 72, seed=i), scale) for i in range(3)]
    dataset = data.make_train_dataset(pyramids, scale, patch, batch_size=5, seed=0)
    inputs, targets = next(iter(dataset))
    assert inputs.dtype == tf.float32 and inputs.shape == (5, patch // scale, patch // scale, 3)
    factors = pyramid_factors(scale)[1:]
    assert isinstance(targets, tuple) and len(targets) == len(factors)
    for target, factor in zip(targets, factors, strict=True):
        assert target.dtype == tf.float32 and target.shape == (
            5,
            patch // factor,
            patch // factor,
            3,
        )
    for tensor in (inputs, *targets):
        values = tensor.numpy()
        assert values.min() >= 0 and values.max() <= 255
        np.testing.assert_array_equal(values, np.round(values))
    spec_inputs, spec_targets = dataset.element_spec
    assert spec_inputs.shape == (5, patch // scale, patch // scale, 3)
    assert dataset.cardinality() == tf.data.INFINITE_CARDINALITY


@pytest.mark.parametrize(("scale", "augment"), [(4, True), (8, True), (4, False)])
def test_crops_are_aligned_and_identically_augmented(scale, augment):
    patch = 32
    hrs = [noise(64, 80, seed=10 + i) for i in range(2)]
    pyramids = [block_mean_pyramid(hr, scale) for hr in hrs]
    # Index every HR pixel by its colour to locate a crop in O(1); noise makes them ~unique.
    where = []
    for hr in hrs:
        codes = (hr.astype(np.int64) << [16, 8, 0]).sum(-1)
        index: dict[int, list[tuple[int, int]]] = {}
        for (y, x), code in np.ndenumerate(codes):
            index.setdefault(int(code), []).append((y, x))
        where.append(index)

    dataset = data.make_train_dataset(
        pyramids, scale, patch, batch_size=16, seed=3, augment=augment
    )
    factors = pyramid_factors(scale)
    seen_transforms = set()
    for inputs, targets in dataset.take(4):
        batch = [inputs.numpy(), *(t.numpy() for t in targets)]
        for i in range(batch[0].shape[0]):
            levels = [b[i].astype(np.uint8) for b in batch]
            matches = []
            for number, hr in enumerate(hrs):
                for flags in DIHEDRAL:
                    crop = dihedral_inverse(levels[-1], flags)
                    code = int((crop[0, 0].astype(np.int64) << [16, 8, 0]).sum())
                    for y, x in where[number].get(code, []):
                        if np.array_equal(hr[y : y + patch, x : x + patch], crop):
                            matches.append((number, flags, y, x))
            assert len(matches) >= 1, "HR patch is not a (transformed) crop of any HR image"
            number, flags, y, x = matches[0]
            assert y % scale == 0 and x % scale == 0, "crop origin must be a multiple of the scale"
            seen_transforms.add(flags)
            for level, factor, source in zip(levels, factors, pyramids[number].levels, strict=True):
                size = patch // factor
                expected = source[
                    y // factor : y // factor + size, x // factor : x // factor + size
                ]
                np.testing.assert_array_equal(level, dihedral(expected, flags))
                # Independent check: the LR patch is the block mean of the (transformed) HR patch.
                hr_patch = dihedral(hrs[number][y : y + patch, x : x + patch], flags)
                mean = hr_patch.reshape(size, factor, size, factor, 3).mean(axis=(1, 3))
                assert np.abs(level - mean).max() <= 0.5
    if augment:
        assert len(seen_transforms) >= 6, seen_transforms
    else:
        assert seen_transforms == {(False, False, False)}


def test_crop_origins_cover_every_aligned_position():
    # HR pixel (y, x) holds (y, x, 0), so a patch's first pixel is its origin.
    scale, patch, height, width = 4, 16, 48, 40
    y, x = np.mgrid[0:height, 0:width]
    hr = np.stack([y, x, 0 * y], -1).astype(np.uint8)
    pyramid = Pyramid(path=Path("grid"), scale=scale, levels=compute_pyramid_levels(hr, scale))
    dataset = data.make_train_dataset(
        [pyramid], scale, patch, batch_size=500, seed=5, augment=False
    )
    corners = np.concatenate([t[-1].numpy()[:, 0, 0, :2] for _, t in dataset.take(4)]).astype(int)
    assert (corners % scale == 0).all()
    ys, ycounts = np.unique(corners[:, 0], return_counts=True)
    xs, xcounts = np.unique(corners[:, 1], return_counts=True)
    np.testing.assert_array_equal(ys, np.arange(0, height - patch + 1, scale))
    np.testing.assert_array_equal(xs, np.arange(0, width - patch + 1, scale))
    # 2000 draws over 9 (7) positions: every count is far from 0 if the draw is uniform.
    assert ycounts.min() > 2000 / len(ys) / 2 and xcounts.min() > 2000 / len(xs) / 2


def test_train_dataset_seed_is_reproducible():
    pyramids = [block_mean_pyramid(noise(64, 64, seed=i), 4) for i in range(4)]

    def first_batch(seed):
        inputs, _ = next(iter(data.make_train_dataset(pyramids, 4, 32, batch_size=8, seed=seed)))
        return inputs.numpy()

    np.testing.assert_array_equal(first_batch(7), first_batch(7))
    assert not np.array_equal(first_batch(7), first_batch(8))


def test_train_dataset_rejects_bad_arguments():
    pyramid = block_mean_pyramid(noise(32, 48), 4)
    with pytest.raises(ValueError, match="multiple of scale"):
        data.make_train_dataset([pyramid], 4, 30, batch_size=2)
    with pytest.raises(ValueError, match="smaller than patch_size"):
        data.make_train_dataset([pyramid], 4, 40, batch_size=2)
    with pytest.raises(ValueError, match="needs 4 levels"):
        data.make_train_dataset([pyramid], 8, 16, batch_size=2)
    with pytest.raises(ValueError, match="at least one"):
        data.make_train_dataset([], 4, 16, batch_size=2)


def test_train_dataset_with_distribution_strategy_and_fit():
    import keras

    scale, patch = 4, 16
    pyramids = [block_mean_pyramid(noise(32, 32, seed=i), scale) for i in range(3)]
    dataset = data.make_train_dataset(pyramids, scale, patch, batch_size=4, seed=1)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    inputs, targets = next(iter(strategy.experimental_distribute_dataset(dataset)))
    assert inputs.shape == (4, 4, 4, 3) and targets[-1].shape == (4, 16, 16, 3)

    with strategy.scope():
        lr = keras.Input((None, None, 3))
        x2 = keras.layers.Conv2D(3, 1)(keras.layers.UpSampling2D(2)(lr))
        x4 = keras.layers.Conv2D(3, 1)(keras.layers.UpSampling2D(4)(lr))
        model = keras.Model(lr, [x2, x4])
        model.compile(optimizer="sgd", loss="mae")
    history = model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


def _top_level_imports(module: str) -> set[str]:
    """``a.b`` for ``import a.b``, and ``a`` and ``a.b`` for ``from a import b``."""
    tree = ast.parse((Path(drn_tf.__file__).parent / f"{module}.py").read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def test_reading_images_does_not_need_the_training_pipeline():
    heavy = {"tensorflow", "keras", "drn_tf.data", "drn_tf.training"}
    for module in ("images", "pictures", "image_sets", "training_images", "scales"):
        assert not _top_level_imports(module) & heavy, module
    for module in ("inference", "demo", "evaluation"):
        assert "drn_tf.data" not in _top_level_imports(module), module
