"""A dual that can only be a degradation: one learned blur kernel, then stride-``scale`` sampling.

DRN-Adapt's ``kernel`` loop (:class:`drn_tf.dual_regression.DualRegressionModel`) takes the
LR-only samples' top SR output back to the LR size with this linear operator instead of the dual
networks, as KernelGAN's linear generator does: non-negative taps that sum to one, shared by the
three channels. The dual networks, anchored to bicubic by the paired samples, can then stay
bicubic while the kernel is free to become the LR-only images' own degradation.

Positions: output pixel ``i`` is centred on input position ``s·i + (s − 1)/2`` (MATLAB's
``imresize`` convention, the one :mod:`drn_tf.degrade` follows), so a ``size × size`` kernel
(``size − s`` even) reads input pixels ``s·i − p … s·i − p + size − 1`` with ``p = (size − s)/2``;
borders are padded by mirroring.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from drn_tf.degrade import cubic

#: The kernel reaches ``2·scale`` pixels beyond the ``scale × scale`` block it stands for: the
#: support of MATLAB's antialiased bicubic kernel plus room for a blur of σ ≈ scale/2.
SIZE_PER_SCALE = 5
#: Adam moves every weight by about the learning rate per step; the taps' logits need larger
#: moves to go anywhere in a few hundred steps, so they are stored divided by this gain.
LOGIT_GAIN = 250.0
INITS = ("bicubic", "box")


def initial_kernel(scale: int, size: int, init: str = "bicubic") -> np.ndarray:
    """The starting kernel, float64 ``(size, size)``, non-negative, summing to one: the
    non-negative part of MATLAB's antialiased bicubic ×``scale`` kernel (what the dual networks
    of a bicubic-trained model approximate), or a ``scale × scale`` box."""
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    offsets = np.arange(size) - (size - 1) / 2.0  # tap position minus the output's centre
    if init == "bicubic":
        taps = np.maximum(cubic(offsets / scale), 0.0)
    else:
        taps = (np.abs(offsets) < scale / 2.0).astype(np.float64)
    kernel = np.outer(taps, taps)
    return kernel / kernel.sum()


@keras.saving.register_keras_serializable(package="drn_tf")
class DownsamplingKernel(keras.layers.Layer):
    """``x ↦ (x ⊛ K)↓s``: blur every channel with one learned kernel ``K``, keep every
    ``scale``-th pixel.

    Input float ``(N, H, W, C)`` (any range; DRN uses 0..255), ``H`` and ``W`` multiples of
    ``scale`` and at least ``(size − scale)/2``; output float32 ``(N, H/s, W/s, C)``.
    ``K`` (:attr:`kernel`, float32 ``(size, size)``) is the softmax of the logits weight
    (times :data:`LOGIT_GAIN`), so it stays non-negative and sums to one whatever the
    optimizer does. ``size`` defaults to ``5·scale``; ``init`` is ``"bicubic"`` or ``"box"``
    (:func:`initial_kernel`).
    """

    def __init__(self, scale: int, size: int | None = None, init: str = "bicubic", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        size = SIZE_PER_SCALE * scale if size is None else size
        if scale < 1 or size < scale or (size - scale) % 2:
            raise ValueError(
                f"a kernel of size {size} does not fit scale {scale}: need size >= scale "
                "and size - scale even"
            )
        self.scale, self.size, self.init = int(scale), int(size), init
        # The floor (0.4 % of the mass over 20×20 taps) lets taps outside the start grow.
        logits = np.log(initial_kernel(scale, size, init) + 1e-5) / LOGIT_GAIN
        self.logits = self.add_weight(
            shape=(size, size),
            initializer=keras.initializers.Constant(logits.astype("float32")),
            name="logits",
        )

    @property
    def kernel(self):
        """``K``, float32 ``(size, size)``, non-negative, summing to one."""
        flat = ops.softmax(ops.reshape(self.logits * LOGIT_GAIN, (-1,)))
        return ops.reshape(flat, (self.size, self.size))

    def build(self, input_shape):
        self.built = True  # the weight is made in __init__: it does not depend on the input

    def call(self, images):
        images = ops.cast(images, "float32")
        channels = images.shape[-1]
        pad = (self.size - self.scale) // 2
        padded = ops.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="symmetric")
        taps = ops.tile(ops.reshape(self.kernel, (self.size, self.size, 1, 1)), (1, 1, channels, 1))
        return ops.depthwise_conv(padded, taps, strides=self.scale, padding="valid")

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (
            n,
            None if h is None else h // self.scale,
            None if w is None else w // self.scale,
            c,
        )

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "size": self.size, "init": self.init}
