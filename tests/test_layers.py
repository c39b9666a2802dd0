"""Tests for drn_tf.layers against independent numpy re-computations from first principles."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from drn_tf import layers as drn_layers
from drn_tf.layers import (
    RCAB,
    ChannelAttention,
    DownBlock,
    MeanShift,
    PixelShuffle,
    TorchBicubicUpsample,
    torch_bicubic_phase_filters,
)

RNG_SEED = 1234


def rand_image(shape, seed: int = RNG_SEED) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 255.0, shape).astype(np.float32)


# --------------------------------------------------------------------------------------------
# independent numpy references
# --------------------------------------------------------------------------------------------

A = -0.75  # PyTorch's cubic coefficient


def _cubic_inner(x: float) -> float:
    """PyTorch `cubic_convolution1`: the Keys kernel for |x| <= 1."""
    return ((A + 2) * x - (A + 3)) * x * x + 1


def _cubic_outer(x: float) -> float:
    """PyTorch `cubic_convolution2`: the Keys kernel for 1 < |x| < 2."""
    return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A


def _torch_bicubic_1d(x: np.ndarray, axis: int, scale: int) -> np.ndarray:
    """PyTorch bicubic (align_corners=False) along one axis, one output sample at a time."""
    x = np.moveaxis(x.astype(np.float64), axis, 0)
    size = x.shape[0]
    out = np.zeros((size * scale, *x.shape[1:]))
    for o in range(size * scale):
        src = (o + 0.5) / scale - 0.5  # half-pixel centres; NOT clamped at 0 for cubic
        i0 = math.floor(src)
        t = src - i0
        weights = (_cubic_outer(t + 1), _cubic_inner(t), _cubic_inner(1 - t), _cubic_outer(2 - t))
        for tap, weight in zip(range(i0 - 1, i0 + 3), weights, strict=True):
            out[o] += weight * x[min(max(tap, 0), size - 1)]  # clamped (replicated) border
    return np.moveaxis(out, 0, axis)


def torch_bicubic_reference(x: np.ndarray, scale: int) -> np.ndarray:
    """``F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)`` on NHWC."""
    return _torch_bicubic_1d(_torch_bicubic_1d(x, 1, scale), 2, scale)


def conv2d_reference(
    x: np.ndarray, kernel: np.ndarray, bias=None, stride: int = 1, pad: int = 1
) -> np.ndarray:
    """Direct-loop cross-correlation, NHWC x HWIO kernel, zero padding ``pad`` on every side."""
    n, h, w, _ = x.shape
    kh, kw, _, cout = kernel.shape
    xp = np.zeros((n, h + 2 * pad, w + 2 * pad, x.shape[3]))
    xp[:, pad : pad + h, pad : pad + w] = x
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (w + 2 * pad - kw) // stride + 1
    out = np.zeros((n, oh, ow, cout))
    for oy in range(oh):
        for ox in range(ow):
            patch = xp[:, oy * stride : oy * stride + kh, ox * stride : ox * stride + kw, :]
            out[:, oy, ox, :] = np.einsum("nhwc,hwco->no", patch, kernel)
    if bias is not None:
        out += bias
    return out


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def channel_attention_reference(x: np.ndarray, layer: ChannelAttention) -> np.ndarray:
    pooled = x.mean(axis=(1, 2))  # (N, C)
    w1, b1 = (np.asarray(v, np.float64) for v in (layer.squeeze.kernel, layer.squeeze.bias))
    w2, b2 = (np.asarray(v, np.float64) for v in (layer.excite.kernel, layer.excite.bias))
    hidden = np.maximum(pooled @ w1[0, 0] + b1, 0.0)
    gate = sigmoid(hidden @ w2[0, 0] + b2)
    return x * gate[:, None, None, :]


# --------------------------------------------------------------------------------------------
# TorchBicubicUpsample
# --------------------------------------------------------------------------------------------


def test_reference_bicubic_is_sane():
    """The naive reference itself: constants are kept, and the taps at t = 1/4 are the well-known
    a = -0.75 weights (also OpenCV's INTER_CUBIC): -0.10546875, 0.87890625, 0.26171875,
    -0.03515625."""
    const = np.full((1, 4, 5, 2), 7.0)
    np.testing.assert_allclose(torch_bicubic_reference(const, 3), 7.0, atol=1e-12)
    t = 0.25
    weights = [_cubic_outer(t + 1), _cubic_inner(t), _cubic_inner(1 - t), _cubic_outer(2 - t)]
    np.testing.assert_allclose(weights, [-0.10546875, 0.87890625, 0.26171875, -0.03515625])
    # Output 1 of a x2 upsampling sits at source 0.25 (t = 1/4 after pixel 0): taps -1..2.
    impulse = np.zeros((1, 6, 1, 1))
    impulse[0, 2] = 1.0  # pixel 2 is tap i0 + 2 of output 1 (i0 = 0)
    assert torch_bicubic_reference(impulse, 2)[0, 1, 0, 0] == pytest.approx(-0.03515625)


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (2, 5, 7, 3), (1, 8, 6, 1)])
def test_bicubic_matches_pytorch_definition(scale, shape):
    x = rand_image(shape, seed=scale)
    got = np.asarray(TorchBicubicUpsample(scale)(x))
    want = torch_bicubic_reference(x, scale)
    assert got.shape == (shape[0], shape[1] * scale, shape[2] * scale, shape[3])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)


def test_bicubic_is_not_tf_image_resize():
    """tf.image.resize's bicubic (a = -0.5) is a different kernel: the two must disagree."""
    x = rand_image((1, 8, 6, 3))
    ours = np.asarray(TorchBicubicUpsample(4)(x))
    theirs = tf.image.resize(x, (32, 24), method="bicubic").numpy()
    assert np.abs(ours - theirs).max() > 1.0
    # ...while ours agrees with the independent PyTorch-definition reference.
    np.testing.assert_allclose(ours, torch_bicubic_reference(x, 4), atol=1e-3)


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 8, 16])
def test_phase_filters_sum_to_one(scale):
    filters = torch_bicubic_phase_filters(scale)
    assert filters.shape == (scale, 5)
    np.testing.assert_allclose(filters.sum(axis=1), 1.0, atol=1e-12)


def test_phase_filters_match_reference_weights():
    """Row r is the response of output phase r to a unit impulse at each of the 5 taps."""
    scale = 4
    filters = torch_bicubic_phase_filters(scale)
    for tap in range(5):
        impulse = np.zeros((1, 9, 1, 1))
        impulse[0, 4 + tap - 2] = 1.0  # input pixel i + tap - 2, with i = 4
        response = torch_bicubic_reference(impulse, scale)[0, 4 * scale : 5 * scale, 0, 0]
        np.testing.assert_allclose(filters[:, tap], response, atol=1e-12)


def test_bicubic_rejects_bad_scale():
    with pytest.raises(ValueError):
        TorchBicubicUpsample(0)
    with pytest.raises(ValueError):
        TorchBicubicUpsample(2.5)


# --------------------------------------------------------------------------------------------
# DownBlock
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (1, 7, 5, 3), (1, 1, 2, 3), (1, 9, 10, 3)])
def test_downblock_matches_symmetric_padding(shape):
    rng = np.random.default_rng(7)
    block = DownBlock(3, 5, 4)
    x = rand_image(shape)
    block(x)  # build
    w_down = rng.normal(0, 0.1, (3, 3, 3, 5)).astype(np.float32)
    w_conv = rng.normal(0, 0.1, (3, 3, 5, 4)).astype(np.float32)
    block.down.kernel.assign(w_down)
    block.conv.kernel.assign(w_conv)

    hidden = conv2d_reference(x, w_down, stride=2, pad=1)
    hidden = np.where(hidden > 0, hidden, 0.2 * hidden)  # LeakyReLU(0.2)
    want = conv2d_reference(hidden, w_conv, stride=1, pad=1)

    got = np.asarray(block(x))
    assert got.shape == (shape[0], -(-shape[1] // 2), -(-shape[2] // 2), 4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-2)


def test_downblock_differs_from_keras_same_padding():
    """On even sizes Keras 'same' pads bottom/right only; the block must not behave like that."""
    rng = np.random.default_rng(3)
    x = rand_image((1, 8, 8, 3))
    block = DownBlock(3, 4, 4)
    block(x)
    w = rng.normal(0, 0.1, (3, 3, 3, 4)).astype(np.float32)
    block.down.kernel.assign(w)
    same = keras.layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False)
    same.build((None, None, None, 3))
    same.kernel.assign(w)
    ours = np.asarray(block.down(np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))))
    assert np.abs(ours - np.asarray(same(x))).max() > 1.0
    np.testing.assert_allclose(ours, conv2d_reference(x, w, stride=2, pad=1), atol=1e-2)


def test_downblock_has_no_bias_and_pytorch_counts():
    block = DownBlock(3, 16, 3)
    block.build((None, None, None, 3))
    # conv3x3 3->16 + conv3x3 16->3, no biases: 2 * 432 (the dual model of DRN-S x4).
    assert block.count_params() == 864
    assert not block.down.use_bias and not block.conv.use_bias


# --------------------------------------------------------------------------------------------
# PixelShuffle
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale,channels", [(2, 3), (2, 1), (3, 2), (4, 3)])
def test_pixel_shuffle_is_dcr_depth_to_space(scale, channels):
    n, h, w = 2, 3, 5
    x = np.random.default_rng(scale).normal(size=(n, h, w, channels * scale * scale))
    x = x.astype(np.float32)
    want = np.zeros((n, h * scale, w * scale, channels), np.float32)
    for y in range(h):
        for xx in range(w):
            for i in range(scale):
                for j in range(scale):
                    for c in range(channels):
                        want[:, y * scale + i, xx * scale + j, c] = x[
                            :, y, xx, (i * scale + j) * channels + c
                        ]
    layer = PixelShuffle(scale)
    got = np.asarray(layer(x))
    np.testing.assert_array_equal(got, want)
    assert layer.compute_output_shape((n, h, w, channels * scale**2)) == (
        n,
        h * scale,
        w * scale,
        channels,
    )
    assert layer.compute_output_shape((None, None, None, channels * scale**2)) == (
        None,
        None,
        None,
        channels,
    )


# --------------------------------------------------------------------------------------------
# MeanShift, ChannelAttention, RCAB
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sign", [-1, 1])
def test_meanshift_adds_or_subtracts_div2k_mean(sign):
    x = rand_image((2, 3, 4, 3))
    got = np.asarray(MeanShift(sign)(x))
    want = x + sign * 255.0 * np.array([0.4488, 0.4371, 0.4040])
    np.testing.assert_allclose(got, want, atol=1e-3)
    layer = MeanShift(sign)
    layer.build((None, None, None, 3))
    assert layer.count_params() == 12  # a 1x1 conv 3->3 with bias, as in the authors' model


def test_meanshift_pair_is_identity():
    x = rand_image((1, 4, 4, 3))
    np.testing.assert_allclose(np.asarray(MeanShift(1)(MeanShift(-1)(x))), x, atol=1e-3)


@pytest.mark.parametrize(
    "channels,reduction,squeezed", [(8, 4, 2), (32, 16, 2), (64, 16, 4), (80, 16, 5), (4, 16, 1)]
)
def test_channel_attention_matches_numpy(channels, reduction, squeezed):
    layer = ChannelAttention(channels, reduction)
    x = np.random.default_rng(channels).normal(0, 3, (2, 5, 6, channels)).astype(np.float32)
    got = np.asarray(layer(x))
    assert layer.squeeze.filters == squeezed
    np.testing.assert_allclose(got, channel_attention_reference(x, layer), rtol=1e-4, atol=1e-4)


def test_rcab_matches_numpy():
    channels = 8
    layer = RCAB(channels, reduction=4)
    x = np.random.default_rng(5).normal(0, 2, (2, 6, 7, channels)).astype(np.float32)
    got = np.asarray(layer(x))

    def conv_weights(conv):
        return np.asarray(conv.kernel, np.float64), np.asarray(conv.bias, np.float64)

    h = conv2d_reference(x, *conv_weights(layer.conv1))
    h = np.maximum(h, 0.0)
    h = conv2d_reference(h, *conv_weights(layer.conv2))
    want = x + channel_attention_reference(h, layer.attention)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # 2 convs 3x3 with bias + CA (8->2->8 with biases): no other parameters.
    assert layer.count_params() == 2 * (9 * 8 * 8 + 8) + (8 * 2 + 2) + (2 * 8 + 8)


def test_pytorch_style_conv_initialisation():
    """U(±1/sqrt(fan_in)) for weights (kaiming_uniform a=sqrt(5)) and biases, as nn.Conv2d."""
    layer = drn_layers.conv(64, 3, 16)
    layer.build((None, None, None, 16))
    bound = 1.0 / math.sqrt(16 * 9)
    kernel, bias = np.asarray(layer.kernel), np.asarray(layer.bias)
    assert np.abs(kernel).max() <= bound + 1e-7
    assert np.abs(kernel).max() > 0.95 * bound  # 9216 draws: the range is really used
    assert np.abs(bias).max() <= bound + 1e-7
    assert np.abs(bias).max() > 0.5 * bound and bias.std() > 0


# --------------------------------------------------------------------------------------------
# serialization
# --------------------------------------------------------------------------------------------

LAYERS = [
    (lambda: TorchBicubicUpsample(3), (1, 4, 5, 3)),
    (lambda: MeanShift(-1, rgb_mean=(0.5, 0.25, 0.125), rgb_range=1.0), (1, 4, 5, 3)),
    (lambda: ChannelAttention(8, 4), (1, 4, 5, 8)),
    (lambda: RCAB(8, 4), (1, 4, 5, 8)),
    (lambda: DownBlock(3, 5, 4), (1, 5, 6, 3)),
    (lambda: PixelShuffle(2), (1, 4, 5, 8)),
]


@pytest.mark.parametrize(
    "make,shape", LAYERS, ids=["bicubic", "meanshift", "attention", "rcab", "down", "shuffle"]
)
def test_layer_config_round_trip(make, shape):
    layer = make()
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    want = np.asarray(layer(x))

    cls = type(layer)
    assert keras.saving.get_registered_name(cls) == f"drn_tf>{cls.__name__}"
    assert keras.saving.get_registered_object(f"drn_tf>{cls.__name__}") is cls

    # Through the registry, without custom_objects.
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is cls
    assert clone.get_config() == layer.get_config()
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x)), want)

    again = cls.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()


# --------------------------------------------------------------------------------------------
# fold_projection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c_in,channels,projected", [(8, 8, 4), (6, 4, 4), (3, 2, 5)])
def test_fold_projection_equals_conv_shuffle_then_projection(c_in, channels, projected):
    keras.utils.set_random_seed(c_in + channels)
    upsample = drn_layers.conv(4 * channels, 3, c_in)
    project = drn_layers.conv(projected, 1, channels)
    x = np.random.default_rng(c_in).normal(size=(2, 5, 7, c_in)).astype(np.float32)
    want = np.asarray(project(PixelShuffle(2)(upsample(x))))

    kernel, bias = drn_layers.fold_projection(upsample, project)
    assert tuple(kernel.shape) == (3, 3, c_in, 4 * projected) and tuple(bias.shape) == (
        4 * projected,
    )
    got = tf.nn.depth_to_space(tf.nn.conv2d(x, kernel, 1, "SAME") + bias, 2).numpy()
    assert want.std() > 0.1  # random weights, biases included: the check means something
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_fold_projection_refuses_layers_that_do_not_chain():
    upsample = drn_layers.conv(12, 3, 4, name="up")
    project = drn_layers.conv(2, 1, 4, name="proj")
    upsample.build((None, None, None, 4))
    project.build((None, None, None, 4))
    with pytest.raises(ValueError, match="up gives 12 channels.*proj"):
        drn_layers.fold_projection(upsample, project)
