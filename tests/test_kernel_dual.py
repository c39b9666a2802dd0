"""Tests for drn_tf.kernel_dual: the learned blur-and-subsample dual of the `kernel` loop.

Expectations come from outside the layer: MATLAB's nearest and bicubic downsampling
(drn_tf.degrade.imresize) and a kernel made and applied in NumPy.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from drn_tf import degrade
from drn_tf.kernel_dual import LOGIT_GAIN, DownsamplingKernel


def strided_blur(image: np.ndarray, kernel: np.ndarray, scale: int) -> np.ndarray:
    """``(image ⊛ kernel)↓scale`` written out in NumPy: output pixel ``i`` reads input pixels
    ``scale·i − p … scale·i − p + size − 1`` (``p = (size − scale)/2``), mirrored borders."""
    size = kernel.shape[0]
    pad = (size - scale) // 2
    padded = np.pad(image.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)), "symmetric")
    h, w = image.shape[0] // scale, image.shape[1] // scale
    out = np.zeros((h, w, image.shape[2]))
    for i in range(h):
        for j in range(w):
            window = padded[scale * i : scale * i + size, scale * j : scale * j + size]
            out[i, j] = np.tensordot(kernel, window, axes=([0, 1], [0, 1]))
    return out


def set_kernel(layer: DownsamplingKernel, kernel: np.ndarray) -> None:
    """Sets the layer's logits so that its kernel is ``kernel`` (up to a 1e-12 floor)."""
    layer.logits.assign((np.log(kernel + 1e-12) / LOGIT_GAIN).astype(np.float32))


@pytest.mark.parametrize("init", ["bicubic", "box"])
def test_kernel_stays_non_negative_and_sums_to_one(init):
    layer = DownsamplingKernel(4, init=init)
    assert layer.kernel.shape == (20, 20)
    # Whatever the optimizer makes of the logits: huge random steps.
    optimizer = keras.optimizers.SGD(100.0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        for kernel in (layer.kernel.numpy(),):
            assert kernel.min() >= 0.0
            assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
        optimizer.apply([rng.normal(size=(20, 20)).astype(np.float32)], [layer.logits])
    assert np.abs(layer.kernel.numpy() - DownsamplingKernel(4, init=init).kernel.numpy()).max() > 0


def test_kernel_positions_follow_matlab():
    """A delta on tap ``p + s//2`` is MATLAB's nearest; the bicubic start is close to MATLAB's
    antialiased bicubic (its small negative lobes dropped)."""
    rng = np.random.default_rng(1)
    hr = rng.uniform(0, 255, (48, 48, 3)).astype(np.uint8)
    smooth = degrade.imresize(degrade.imresize(hr, 0.25), 4.0).astype(np.float64)
    bicubic = degrade.imresize(smooth, 0.25)
    layer = DownsamplingKernel(4)
    errors = [  # away from the borders (MATLAB replicates them, the layer mirrors them)
        np.abs(layer(np.roll(smooth, shift, (0, 1))[None])[0] - bicubic)[2:-2, 2:-2].mean()
        for shift in (0, 1)
    ]
    assert errors[0] < 2.0 and errors[0] < 0.5 * errors[1], errors
    delta = np.zeros((20, 20))
    delta[8 + 2, 8 + 2] = 1.0
    set_kernel(layer, delta)
    nearest = degrade.degrade(hr, "nearest", 4).astype(np.float32)
    np.testing.assert_allclose(layer(hr[None].astype(np.float32))[0], nearest, atol=1e-3)


def test_kernel_learns_a_known_kernel():
    """Fitted by L1 from a box to map a noise image to its LR under a shifted, anisotropic
    Gaussian kernel (made in NumPy), the layer recovers that kernel."""
    scale, size = 2, 10
    offsets = np.arange(size) - (size - 1) / 2
    rows = np.exp(-((offsets - 1.0) ** 2) / (2 * 0.8**2))
    columns = np.exp(-((offsets + 0.5) ** 2) / (2 * 1.5**2))
    truth = np.outer(rows, columns) / np.outer(rows, columns).sum()
    rng = np.random.default_rng(2)
    hr = rng.uniform(0, 255, (48, 48, 3))
    lr = strided_blur(hr, truth, scale)
    layer = DownsamplingKernel(scale, size, init="box")
    optimizer = keras.optimizers.Adam(0.1 / LOGIT_GAIN)  # logit steps of 0.1
    hr_batch, lr_batch = tf.constant(hr[None], tf.float32), tf.constant(lr[None], tf.float32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.abs(layer(hr_batch) - lr_batch))
        optimizer.apply(tape.gradient(loss, [layer.logits]), [layer.logits])
        return loss

    start = np.abs(layer.kernel.numpy() - truth).sum()
    for _ in range(400):
        step()
    assert start > 0.5
    assert np.abs(layer.kernel.numpy() - truth).sum() < 0.1
