"""The serving function: what every way of running a DRN model computes.

``drn_tf.inference.upscale`` and every exported artifact (SavedModel signatures, and the
pixel step documented for TFLite, ONNX, OpenVINO and TensorRT) produce pixels exactly as here,
so they agree byte for byte:

1. the primal network's top output (×scale), float32 on (about) 0..255, as
   :func:`drn_tf.models.top_level` computes it;
2. :func:`to_pixels`: NaN → 0, clip to 0..255, round half to even, cast to uint8.

Only TensorFlow ops that lower to TFLite builtins and ONNX operators are used.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from drn_tf.models import top_level

#: Input of the float serving function: a batch of RGB images, float32 on 0..255, any size.
FLOAT_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
#: Input of the uint8 serving function: a batch of RGB images, uint8.
UINT8_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")


def to_pixels(sr: tf.Tensor) -> tf.Tensor:
    """float ``(…, 3)`` on 0..255 → uint8: NaN → 0, clipped, rounded half to even.

    ``where(x >= 0, x, 0)`` sends NaN to 0 with a comparison that every runtime lowers the
    same way (``maximum`` with NaN differs between runtimes).
    """
    sr = tf.cast(sr, tf.float32)
    sr = tf.where(sr >= 0.0, sr, tf.zeros_like(sr))
    return tf.cast(tf.round(tf.minimum(sr, 255.0)), tf.uint8)


def super_resolve(model: keras.Model, images: tf.Tensor) -> tf.Tensor:
    """The top SR level of ``model`` (a DRN or its primal network) for float32 NHWC 0..255
    ``images`` ``(N, H, W, 3)``: float32 ``(N, s·H, s·W, 3)``, not clipped; computed by
    :func:`drn_tf.models.top_level` (the projections folded in). Any other Keras model of
    images gives its (last) output."""
    network = getattr(model, "primal", model)
    if any(layer.name == "up_0_project" for layer in network.layers):
        return tf.cast(top_level(network, images), tf.float32)
    outputs = network(images, training=False)
    return tf.cast(outputs[-1] if isinstance(outputs, (list, tuple)) else outputs, tf.float32)


def super_resolve_uint8(model: keras.Model, images: tf.Tensor) -> tf.Tensor:
    """uint8 NHWC ``(N, H, W, 3)`` → uint8 ``(N, s·H, s·W, 3)``: :func:`super_resolve` then
    :func:`to_pixels`."""
    return to_pixels(super_resolve(model, tf.cast(images, tf.float32)))
