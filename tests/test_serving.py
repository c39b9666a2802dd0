"""Tests for drn_tf.serving: the functions every exported signature is made of.

Expectations are NumPy's: ``np.round`` rounds half to even, as the pixel step must, and the
network's top output is read from the model itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from drn_tf.serving import super_resolve, super_resolve_uint8, to_pixels


def test_to_pixels_clips_rounds_half_to_even_and_sends_nan_to_zero():
    values = np.array(
        [np.nan, -np.inf, -3.7, -0.5, 0.5, 1.5, 2.5, 127.49, 254.5, 255.4, 300, np.inf]
    )
    expected = np.round(np.clip(np.nan_to_num(values, nan=0.0), 0, 255)).astype(np.uint8)
    pixels = to_pixels(tf.constant(values.reshape(1, 1, 4, 3), tf.float32)).numpy()
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels.ravel(), expected)
    assert list(expected[:9]) == [0, 0, 0, 0, 0, 2, 2, 127, 254]  # the rule, spelt out


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_to_pixels_takes_half_precision_outputs(dtype):
    values = tf.constant([[[[10.5, 11.5, 300.0]]]], dtype)
    np.testing.assert_array_equal(to_pixels(values).numpy().ravel(), [10, 12, 255])


def test_super_resolve_is_the_top_level_of_the_drn_and_of_its_primal(tiny):
    model, _ = tiny
    images = np.random.default_rng(0).uniform(0, 255, (2, 6, 5, 3)).astype(np.float32)
    top = np.asarray(model.primal(images, training=False)[-1], np.float32)
    for network in (model, model.primal):
        sr = super_resolve(network, tf.constant(images)).numpy()
        assert sr.shape == (2, 24, 20, 3) and sr.dtype == np.float32
        np.testing.assert_allclose(sr, top, rtol=1e-5, atol=1e-3)


def test_super_resolve_uint8_is_the_rounded_float_output(tiny):
    model, _ = tiny
    images = np.random.default_rng(1).integers(0, 256, (1, 5, 7, 3), dtype=np.uint8)
    top = np.asarray(model.primal(images.astype(np.float32), training=False)[-1], np.float32)
    expected = np.round(np.clip(np.nan_to_num(top), 0, 255)).astype(np.uint8)
    pixels = super_resolve_uint8(model, tf.constant(images)).numpy()
    assert pixels.shape == (1, 20, 28, 3) and pixels.dtype == np.uint8
    # Equal but where float rounding of the two runs straddles a .5: at most one level apart.
    assert np.abs(pixels.astype(int) - expected).max() <= 1
    assert (pixels == expected).mean() > 0.99
