"""Tests for drn_tf.models: paper sizes, shapes at every level, config, saving, mixed precision."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
from helpers import SMALL

import drn_tf
from drn_tf import DRN, DRNConfig, build_drn, build_drn_bundle, build_duals
from drn_tf.layers import RCAB
from drn_tf.models import deepen, top_level

# Paper / authors' code (reference §2.2): primal parameters (MeanShift included) and duals.
PAPER = {
    ("drn-s", 4): (4_804_065, 1_728, 30, 16),
    ("drn-s", 8): (5_403_000, 1_296, 30, 8),
    ("drn-l", 4): (9_825_893, 2_160, 40, 20),
    ("drn-l", 8): (10_004_018, 1_620, 36, 10),
}
# Reference §2.3: RCAB widths per up block, 1x1 projection widths, concat (= tail input) widths.
WIDTHS = {
    ("drn-s", 4): ([64, 64], [32, 16], [64, 64, 32]),
    ("drn-l", 4): ([80, 80], [40, 20], [80, 80, 40]),
    ("drn-s", 8): ([64, 64, 32], [32, 16, 8], [64, 64, 32, 16]),
    ("drn-l", 8): ([80, 80, 40], [40, 20, 10], [80, 80, 40, 20]),
}


def images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def as_numpy(outputs):
    return [np.asarray(o) for o in outputs]


# --------------------------------------------------------------------------------------------
# the paper's four configurations (built once; structure checks only, no forward pass)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_models():
    return {key: (build_drn(*key), build_duals(*key)) for key in PAPER}


@pytest.mark.slow
@pytest.mark.parametrize("key", list(PAPER), ids=lambda k: f"{k[0]}-x{k[1]}")
def test_paper_parameter_counts(paper_models, key):
    primal, duals = paper_models[key]
    n_params, dual_params, _, _ = PAPER[key]
    assert primal.count_params() == n_params
    assert sum(d.count_params() for d in duals) == dual_params
    phases = {4: 2, 8: 3}[key[1]]
    assert len(duals) == phases
    # Each dual: conv3x3 3->F and F->3, no biases.
    feats = PAPER[key][3]
    assert all(d.count_params() == 2 * 27 * feats for d in duals)
    # Every weight is trainable, MeanShift included (the authors' freeze does not freeze).
    assert sum(int(np.prod(w.shape)) for w in primal.trainable_weights) == n_params


@pytest.mark.slow
@pytest.mark.parametrize("key", list(PAPER), ids=lambda k: f"{k[0]}-x{k[1]}")
def test_paper_structure(paper_models, key):
    primal, _ = paper_models[key]
    _, _, n_blocks, n_feats = PAPER[key]
    rcab_widths, project_widths, tail_widths = WIDTHS[key]
    phases = len(rcab_widths)

    assert len(primal.outputs) == phases + 1
    assert primal.get_layer("head").filters == n_feats
    rcabs = [layer for layer in primal.layers if isinstance(layer, RCAB)]
    assert len(rcabs) == n_blocks * phases
    for k in range(phases):
        block = [r for r in rcabs if r.name.startswith(f"up_{k}_")]
        assert len(block) == n_blocks
        assert {r.channels for r in block} == {rcab_widths[k]}
        # Reduction 16 by integer division (64 -> 4, 80 -> 5, 32 -> 2, 40 -> 2).
        assert block[0].attention.squeeze.filters == rcab_widths[k] // 16
        assert primal.get_layer(f"up_{k}_upsample").filters == 4 * rcab_widths[k]
        assert primal.get_layer(f"up_{k}_project").filters == project_widths[k]
    for k, width in enumerate(tail_widths):
        tail = primal.get_layer(f"tail_{k}")
        assert tail.kernel.shape == (3, 3, width, 3)
    # Down path widths F * 2^k, doubling in each block, without biases.
    for k in range(phases):
        down = primal.get_layer(f"down_{k}")
        assert (down.in_channels, down.mid_channels, down.out_channels) == (
            n_feats * 2**k,
            n_feats * 2**k,
            n_feats * 2 ** (k + 1),
        )
        assert not down.down.use_bias and not down.conv.use_bias
    # Input: any size RGB; outputs: RGB at every level.
    assert tuple(primal.inputs[0].shape) == (None, None, None, 3)
    assert all(tuple(o.shape) == (None, None, None, 3) for o in primal.outputs)


# --------------------------------------------------------------------------------------------
# shapes on small models
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_models():
    return {
        scale: (build_drn("drn-s", scale, **SMALL), build_duals("drn-s", scale, **SMALL))
        for scale in (2, 4, 8, 16)
    }


SHAPES = {
    2: [(1, 5, 7), (2, 6, 6), (3, 4, 9), (1, 1, 1)],
    4: [(2, 5, 7), (1, 6, 4), (3, 3, 3), (1, 1, 2)],
    8: [(1, 3, 5), (2, 4, 4)],
    16: [(2, 3, 2)],
}


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_top_level_is_the_top_output_with_fewer_convolutions(small_models, scale):
    import tensorflow as tf

    primal, _ = small_models[scale]
    x = images((2, 5, 3, 3), seed=scale)
    want = np.asarray(primal(x)[-1])
    np.testing.assert_allclose(np.asarray(top_level(primal, x)), want, rtol=1e-5, atol=1e-3)

    def convolutions(function):
        spec = tf.TensorSpec((1, 8, 8, 3), tf.float32)
        graph = tf.function(function).get_concrete_function(spec).graph
        graphs = [graph, *(f.graph for f in graph._functions.values())]
        return sum(op.type == "Conv2D" for g in graphs for op in g.get_operations())

    # Per phase, the 1×1 projection (folded) and a lower level's tail and mean shift are gone.
    phases = scale.bit_length() - 1
    assert convolutions(lambda t: top_level(primal, t)) == (
        convolutions(lambda t: primal(t)) - 3 * phases
    )


@pytest.mark.parametrize("scale", [2, 4, 8, 16])
def test_output_shapes_at_every_level(small_models, scale):
    primal, duals = small_models[scale]
    phases = scale.bit_length() - 1
    for i, (n, h, w) in enumerate(SHAPES[scale]):  # the same model, several sizes
        outputs = as_numpy(primal(images((n, h, w, 3), seed=i)))
        assert len(outputs) == phases + 1
        for k, out in enumerate(outputs):
            assert out.shape == (n, h * 2**k, w * 2**k, 3)
            assert out.dtype == np.float32
            assert np.isfinite(out).all()
        # Dual k maps level k+1 back to the size of level k.
        for k, dual in enumerate(duals):
            back = np.asarray(dual(outputs[k + 1]))
            assert back.shape == outputs[k].shape
            assert back.dtype == np.float32


def test_static_shape_inference(small_models):
    primal, duals = small_models[4]
    assert [tuple(s) for s in primal.compute_output_shape((2, 5, 7, 3))] == [
        (2, 5, 7, 3),
        (2, 10, 14, 3),
        (2, 20, 28, 3),
    ]
    symbolic = primal(keras.Input((5, 7, 3), batch_size=2))
    assert [tuple(o.shape) for o in symbolic] == [(2, 5, 7, 3), (2, 10, 14, 3), (2, 20, 28, 3)]
    assert tuple(duals[0](keras.Input((7, 9, 3))).shape) == (None, 4, 5, 3)


@pytest.mark.parametrize("h,w", [(7, 9), (8, 8), (1, 1), (2, 5)])
def test_dual_halves_odd_and_even_sizes(small_models, h, w):
    _, duals = small_models[4]
    out = np.asarray(duals[1](images((2, h, w, 3))))
    assert out.shape == (2, -(-h // 2), -(-w // 2), 3)


def test_batch_items_are_independent(small_models):
    """The primal network treats batch items separately (no batch-level ops)."""
    primal, _ = small_models[4]
    x = images((3, 4, 5, 3), seed=9)
    together = as_numpy(primal(x))
    alone = as_numpy(primal(x[1:2]))
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a[1:2], b, atol=1e-2)


# --------------------------------------------------------------------------------------------
# DRNConfig
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"variant": "drn-m"},
        {"variant": "DRN-S"},
        {"scale": 3},
        {"scale": 6},
        {"scale": 1},
        {"scale": 0},
        {"scale": 12},
        {"n_blocks": -1},
        {"n_feats": -4},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        DRNConfig(**kwargs)


@pytest.mark.parametrize("field", ["n_blocks", "n_feats"])
def test_config_rejects_zero_sizes(field):
    with pytest.raises(ValueError):
        DRNConfig("drn-s", 4, **{field: 0})


@pytest.mark.parametrize(
    "variant,scale,expected",
    [
        ("drn-s", 2, (30, 16)),
        ("drn-s", 4, (30, 16)),
        ("drn-s", 8, (30, 8)),
        ("drn-s", 16, (30, 8)),
        ("drn-l", 2, (40, 20)),
        ("drn-l", 4, (40, 20)),
        ("drn-l", 8, (36, 10)),
        ("drn-l", 32, (36, 10)),
    ],
)
def test_config_presets(variant, scale, expected):
    cfg = DRNConfig(variant, scale)
    assert (cfg.n_blocks, cfg.n_feats) == expected
    assert cfg.phases == scale.bit_length() - 1


def test_config_overrides():
    assert (
        DRNConfig("drn-l", 8, n_feats=12).n_blocks,
        DRNConfig("drn-l", 8, n_feats=12).n_feats,
    ) == (36, 12)
    cfg = DRNConfig("drn-s", 4, n_blocks=3)
    assert (cfg.n_blocks, cfg.n_feats) == (3, 16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.scale = 8  # type: ignore[misc]


def test_build_passes_overrides_and_presets():
    primal = build_drn("drn-l", 2, n_blocks=1)  # n_feats from the drn-l preset: 20
    assert primal.get_layer("head").filters == 20
    assert sum(isinstance(layer, RCAB) for layer in primal.layers) == 1
    duals = build_duals("drn-l", 2, n_blocks=1)
    assert len(duals) == 1 and duals[0].count_params() == 2 * 27 * 20
    with pytest.raises(TypeError):
        build_drn("drn-s", 4, n_block=1)  # a typo must not be silently ignored
    with pytest.raises(ValueError):
        build_drn("drn-s", 3, **SMALL)


# --------------------------------------------------------------------------------------------
# saving and loading
# --------------------------------------------------------------------------------------------


def test_bundle_keras_round_trip(tmp_path):
    model = build_drn_bundle("drn-s", 4, **SMALL)
    assert isinstance(model, DRN) and model.scale == 4 and len(model.duals) == 2
    x = images((2, 5, 6, 3), seed=3)
    want = as_numpy(model(x))
    want_duals = [np.asarray(d(want[k + 1])) for k, d in enumerate(model.duals)]

    path = tmp_path / "bundle.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: the classes are registered

    assert type(loaded) is DRN
    assert loaded.scale == 4 and len(loaded.duals) == 2
    assert loaded.count_params() == model.count_params()
    got = as_numpy(loaded(x))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    for k, dual in enumerate(loaded.duals):
        np.testing.assert_array_equal(np.asarray(dual(want[k + 1])), want_duals[k])
    # Weights really came from the file: duals differ from one another, and from a fresh model.
    fresh = build_drn_bundle("drn-s", 4, **SMALL)
    assert not np.allclose(np.asarray(fresh(x)[-1]), got[-1])


def test_primal_keras_round_trip(tmp_path):
    primal = build_drn("drn-s", 2, **SMALL)
    x = images((1, 7, 5, 3), seed=4)
    want = as_numpy(primal(x))
    path = tmp_path / "primal.keras"
    primal.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(as_numpy(loaded(x)), want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bundle_rejects_mismatched_duals():
    primal = build_drn("drn-s", 4, **SMALL)
    with pytest.raises(ValueError):
        DRN(primal, build_duals("drn-s", 8, **SMALL))


def test_public_api():
    assert set(drn_tf.__all__) >= {
        "DRN",
        "DRNConfig",
        "build_drn",
        "build_drn_bundle",
        "build_duals",
    }


# --------------------------------------------------------------------------------------------
# mixed precision
# --------------------------------------------------------------------------------------------


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mixed_bfloat16_outputs_are_float32_and_close(mixed_bfloat16):
    mixed = build_drn("drn-s", 4, **SMALL)
    mixed_duals = build_duals("drn-s", 4, **SMALL)
    keras.mixed_precision.set_global_policy("float32")
    reference = build_drn("drn-s", 4, **SMALL)
    reference.set_weights(mixed.get_weights())

    # The body really runs in bfloat16; bicubic, mean shifts and tails stay float32.
    assert mixed.get_layer("head").compute_dtype == "bfloat16"
    assert mixed.get_layer("up_0_rcab_0").conv1.compute_dtype == "bfloat16"
    for name in ("upsample", "sub_mean", "add_mean", "tail_0", "tail_2"):
        assert mixed.get_layer(name).compute_dtype == "float32"
    assert all(w.dtype == "float32" for w in mixed.weights)  # variables stay float32

    x = images((2, 6, 5, 3), seed=11)
    got, want = as_numpy(mixed(x)), as_numpy(reference(x))
    for a, b in zip(got, want, strict=True):
        assert a.dtype == np.float32
        assert b.std() > 1.0  # the outputs carry signal, so closeness means something
        assert np.mean(np.abs(a - b)) < 2.0
    assert not np.array_equal(got[-1], want[-1])  # bfloat16 was really used
    for k, dual in enumerate(mixed_duals):
        assert np.asarray(dual(got[k + 1])).dtype == np.float32


def test_deepen_keeps_every_output_and_refuses_to_remove_blocks():
    keras.utils.set_random_seed(4)
    model = build_drn_bundle("drn-s", 2, **SMALL)
    deeper = deepen(model, 2)
    assert deeper.drn_config.n_blocks == 2
    x = images((1, 5, 6, 3), seed=4)
    for ours, theirs in zip(deeper(x), model(x), strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6, atol=1e-4)
    y = images((1, 10, 12, 3), seed=5)
    np.testing.assert_array_equal(np.asarray(deeper.duals[0](y)), np.asarray(model.duals[0](y)))
    with pytest.raises(ValueError, match="cannot deepen a model of 2 RCABs per phase to 1"):
        deepen(deeper, 1)


def test_top_level_runs_in_the_layers_compute_dtype(mixed_bfloat16):
    mixed = build_drn("drn-s", 4, **SMALL)
    x = images((1, 6, 5, 3), seed=12)
    got, want = np.asarray(top_level(mixed, x)), np.asarray(mixed(x)[-1])
    assert got.dtype == np.float32  # the float32 tail
    assert np.mean(np.abs(got - want)) < 1.0  # both bfloat16, rounded in different places
    keras.mixed_precision.set_global_policy("float32")
    reference = build_drn("drn-s", 4, **SMALL)
    reference.set_weights(mixed.get_weights())
    assert not np.array_equal(got, np.asarray(top_level(reference, x)))  # bfloat16 was used


def test_export_as_keras_users_call_it(tmp_path):
    """``model.export(path)`` with no signature: any batch, height and width, every level."""
    import tensorflow as tf

    model = build_drn_bundle("drn-s", 4, **SMALL)
    model.export(str(tmp_path / "saved"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    for shape in ((1, 5, 7, 3), (2, 9, 4, 3)):
        x = images(shape, seed=3)
        got, want = as_numpy(served.serve(x)), as_numpy(model(x))
        assert [a.shape for a in got] == [b.shape for b in want]
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-3)
