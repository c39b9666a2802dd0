"""PSNR / SSIM on the Y channel, following the standard SR evaluation protocol.

The protocol (EDSR/BasicSR, and the DRN authors' ``calc_ssim``):

1. quantize both images to 8-bit integers (``clip(round(x), 0, 255)``);
2. convert to BT.601 luma as MATLAB ``rgb2ycbcr`` does on 8-bit images,
   ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (float, 16..235, no rounding);
3. shave ``shave`` pixels (usually the scale factor) from every border;
4. PSNR with peak 255 on Y; SSIM as Wang et al.'s MATLAB ``ssim_index`` (11x11 Gaussian window,
   sigma 1.5, ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``, 'valid' filtering, mean of the map);
5. average the per-image values over the set.

Two implementations are provided: numpy references (``psnr_y``, ``ssim_y``) computed in float64
for offline evaluation, and Keras metrics (``PSNR``, ``SSIM``) for validation inside ``model.fit``
that run the same formulas in float64 TensorFlow ops and accept dynamic image sizes.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

__all__ = ["PSNR", "SSIM", "psnr_y", "rgb_to_y", "ssim_y"]

# MATLAB rgb2ycbcr coefficients for 8-bit R, G, B (ITU-R BT.601, studio range).
_Y_COEFFS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0
_PEAK = 255.0
_SSIM_C1 = (0.01 * _PEAK) ** 2
_SSIM_C2 = (0.03 * _PEAK) ** 2
_SSIM_RADIUS = 5  # 11x11 window
_SSIM_SIGMA = 1.5


def _gaussian_1d() -> np.ndarray:
    """Normalized 11-tap Gaussian (sigma 1.5); its outer product is MATLAB's fspecial window."""
    k = np.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=np.float64)
    g = np.exp(-(k * k) / (2.0 * _SSIM_SIGMA**2))
    return g / g.sum()


_GAUSS = _gaussian_1d()


# ----------------------------------------------------------------------------------------------
# numpy reference
# ----------------------------------------------------------------------------------------------


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of an 8-bit image, as MATLAB ``rgb2ycbcr`` on uint8 (rounded to integers).

    MATLAB returns uint8 Y for uint8 input; the published tables (e.g. bicubic Set5 ×4
    28.42 dB / 0.8104) were measured on that rounded Y. Float Y (EDSR's ``calc_psnr``) reads
    about 0.01 dB higher.

    Args:
        image: ``(..., H, W, 3)`` RGB, or ``(H, W)`` / ``(H, W, 1)`` grayscale treated as R = G = B;
            uint8 or float on 0..255 (values are used as given, not quantized).

    Returns:
        float64 array ``(..., H, W)`` on 16..235 for inputs on 0..255.
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 2:
        r = g = b = x
    elif x.shape[-1] == 1:
        r = g = b = x[..., 0]
    elif x.shape[-1] == 3:
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
    else:
        raise ValueError(f"expected (H, W), (H, W, 1) or (..., H, W, 3), got shape {x.shape}")
    y = _Y_OFFSET + (_Y_COEFFS[0] * r + _Y_COEFFS[1] * g + _Y_COEFFS[2] * b) / _PEAK
    return np.floor(y + 0.5)  # MATLAB rounds halves away from zero


def _quantize(image: np.ndarray) -> np.ndarray:
    """uint8 as is; floats rounded (half to even, as torch/TF) and clipped to 0..255; float64."""
    x = np.asarray(image)
    if x.dtype == np.uint8:
        return x.astype(np.float64)
    return np.clip(np.round(x.astype(np.float64)), 0.0, _PEAK)


def _y_shaved(sr: np.ndarray, hr: np.ndarray, shave: int) -> tuple[np.ndarray, np.ndarray]:
    sr = np.asarray(sr)
    hr = np.asarray(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr shapes differ: {sr.shape} vs {hr.shape}")
    if shave < 0:
        raise ValueError(f"shave must be >= 0, got {shave}")
    y_sr = rgb_to_y(_quantize(sr))
    y_hr = rgb_to_y(_quantize(hr))
    h, w = y_sr.shape
    if h <= 2 * shave or w <= 2 * shave:
        raise ValueError(f"image {h}x{w} is too small to shave {shave} pixels per border")
    crop = (slice(shave, h - shave), slice(shave, w - shave))
    return y_sr[crop], y_hr[crop]


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """PSNR (dB, peak 255) on the Y channel after shaving ``shave`` pixels per border.

    Args:
        sr: ``(H, W, 3)`` RGB or ``(H, W)`` grayscale; uint8, or float on 0..255 (rounded and
            clipped to 8-bit first, as the protocol quantizes network outputs).
        hr: same shape as ``sr``, same conventions.
        shave: border width removed from each side (usually the scale factor).

    Returns:
        PSNR in dB as a Python float; ``inf`` for identical images.
    """
    a, b = _y_shaved(sr, hr, shave)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(_PEAK**2 / mse)


def _filter_valid(x: np.ndarray) -> np.ndarray:
    """Separable 11x11 Gaussian correlation of ``(H, W)`` float64, 'valid' -> ``(H-10, W-10)``."""
    n = 2 * _SSIM_RADIUS
    h, w = x.shape
    rows = sum(_GAUSS[k] * x[k : h - n + k, :] for k in range(n + 1))
    return sum(_GAUSS[k] * rows[:, k : w - n + k] for k in range(n + 1))


def _ssim_map_mean(a: np.ndarray, b: np.ndarray) -> float:
    if min(a.shape) <= 2 * _SSIM_RADIUS:
        raise ValueError(f"SSIM needs at least 11x11 pixels after shaving, got {a.shape}")
    mu_a = _filter_valid(a)
    mu_b = _filter_valid(b)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = _filter_valid(a * a) - mu_aa
    var_b = _filter_valid(b * b) - mu_bb
    cov = _filter_valid(a * b) - mu_ab
    num = (2.0 * mu_ab + _SSIM_C1) * (2.0 * cov + _SSIM_C2)
    den = (mu_aa + mu_bb + _SSIM_C1) * (var_a + var_b + _SSIM_C2)
    return float(np.mean(num / den))


def ssim_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """SSIM on the Y channel after shaving, as MATLAB ``ssim_index`` / BasicSR ``calculate_ssim``.

    Args:
        sr: ``(H, W, 3)`` RGB or ``(H, W)`` grayscale; uint8, or float on 0..255 (rounded and
            clipped to 8-bit first).
        hr: same shape as ``sr``, same conventions.
        shave: border width removed from each side before filtering.

    Returns:
        Mean SSIM over the 'valid' map (float64 computation), 1.0 for identical images.
    """
    a, b = _y_shaved(sr, hr, shave)
    return _ssim_map_mean(a, b)


# ----------------------------------------------------------------------------------------------
# TensorFlow / Keras metrics
# ----------------------------------------------------------------------------------------------


def _tf_y_shaved(images: tf.Tensor, shave: int) -> tf.Tensor:
    """``(N, H, W, 3|1)`` on 0..255 -> quantized, float64 Y ``(N, H - 2 shave, W - 2 shave)``."""
    x = tf.clip_by_value(tf.round(tf.cast(images, tf.float64)), 0.0, _PEAK)
    channels = x.shape[-1]
    if channels == 3:
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
    elif channels == 1:
        r = g = b = x[..., 0]
    else:
        raise ValueError(f"expected NHWC images with 3 or 1 (static) channels, got {x.shape}")
    y = tf.floor(
        _Y_OFFSET + (_Y_COEFFS[0] * r + _Y_COEFFS[1] * g + _Y_COEFFS[2] * b) / _PEAK + 0.5
    )  # uint8 Y, as MATLAB's rgb2ycbcr (see rgb_to_y)
    if shave:
        # Stops computed from the dynamic size, so one traced graph serves every image size.
        h, w = tf.shape(y)[1], tf.shape(y)[2]
        y = y[:, shave : h - shave, shave : w - shave]
    return y


def _tf_filter_valid(x: tf.Tensor) -> tf.Tensor:
    """Separable 11x11 Gaussian 'valid' correlation of ``(N, H, W)`` float64 -> ``(N, H-10, W-10)``.

    Two float64 conv2d passes (11x1 then 1x11): exact to ~1e-13 against the numpy reference, and
    far cheaper to trace than a sum of shifted slices.
    """
    taps = 2 * _SSIM_RADIUS + 1
    gauss = tf.constant(_GAUSS, dtype=tf.float64)
    y = tf.nn.conv2d(x[..., None], tf.reshape(gauss, [taps, 1, 1, 1]), 1, "VALID")
    y = tf.nn.conv2d(y, tf.reshape(gauss, [1, taps, 1, 1]), 1, "VALID")
    return y[..., 0]


def _tf_psnr_per_image(y_true: tf.Tensor, y_pred: tf.Tensor, shave: int) -> tf.Tensor:
    a = _tf_y_shaved(y_pred, shave)
    b = _tf_y_shaved(y_true, shave)
    mse = tf.reduce_mean(tf.square(a - b), axis=[1, 2])
    # mse == 0 gives +inf, matching the numpy reference.
    return 10.0 * tf.math.log(_PEAK**2 / mse) / math.log(10.0)


def _tf_ssim_per_image(y_true: tf.Tensor, y_pred: tf.Tensor, shave: int) -> tf.Tensor:
    a = _tf_y_shaved(y_pred, shave)
    b = _tf_y_shaved(y_true, shave)
    # One batched filter call for the five local moments.
    moments = _tf_filter_valid(tf.concat([a, b, a * a, b * b, a * b], axis=0))
    mu_a, mu_b, e_aa, e_bb, e_ab = tf.split(moments, 5, axis=0)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = e_aa - mu_aa
    var_b = e_bb - mu_bb
    cov = e_ab - mu_ab
    num = (2.0 * mu_ab + _SSIM_C1) * (2.0 * cov + _SSIM_C2)
    den = (mu_aa + mu_bb + _SSIM_C1) * (var_a + var_b + _SSIM_C2)
    return tf.reduce_mean(num / den, axis=[1, 2])


class _MeanOverImages(keras.metrics.Metric):
    """Running (optionally weighted) mean of a per-image Y-channel score; state kept in float64."""

    def __init__(self, shave: int, name: str, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        if shave < 0:
            raise ValueError(f"shave must be >= 0, got {shave}")
        self.shave = int(shave)
        # float64 state keeps the running mean as precise as the float64 numpy reference.
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count")

    def _per_image(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def update_state(
        self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> None:
        """Add the per-image scores of a batch.

        Args:
            y_true: ``(N, H, W, C)`` HR images on 0..255 (C = 3 RGB or 1 gray), any float dtype.
            y_pred: ``(N, H, W, C)`` SR images on 0..255; rounded and clipped to 8-bit first.
            sample_weight: optional per-image weights, shape ``(N,)`` or broadcastable to it.
        """
        values = self._per_image(y_true, y_pred)
        if sample_weight is None:
            weights = tf.ones_like(values)
        else:
            weights = tf.cast(sample_weight, tf.float64)
            weights = tf.broadcast_to(tf.reshape(weights, [-1]), tf.shape(values))
        self.total.assign_add(tf.reduce_sum(values * weights))
        self.count.assign_add(tf.reduce_sum(weights))

    def result(self) -> tf.Tensor:
        """Mean score over all images seen since the last reset, cast to the metric dtype."""
        return tf.cast(tf.math.divide_no_nan(self.total, self.count), self.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "shave": self.shave}


@keras.saving.register_keras_serializable(package="drn_tf")
class PSNR(_MeanOverImages):
    """Mean Y-channel PSNR (dB) over images, same protocol and formula as :func:`psnr_y`.

    Args:
        shave: border pixels removed on each side (usually the scale factor).
        name: metric name in logs.
    """

    def __init__(self, shave: int, name: str = "psnr", **kwargs) -> None:
        super().__init__(shave=shave, name=name, **kwargs)

    def _per_image(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return _tf_psnr_per_image(y_true, y_pred, self.shave)


@keras.saving.register_keras_serializable(package="drn_tf")
class SSIM(_MeanOverImages):
    """Mean Y-channel SSIM over images, same protocol and formula as :func:`ssim_y`.

    Args:
        shave: border pixels removed on each side before the 11x11 'valid' filtering.
        name: metric name in logs.
    """

    def __init__(self, shave: int, name: str = "ssim", **kwargs) -> None:
        super().__init__(shave=shave, name=name, **kwargs)

    def _per_image(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return _tf_ssim_per_image(y_true, y_pred, self.shave)
