"""Tests for drn_tf.metrics: numpy PSNR/SSIM on Y and their Keras counterparts.

Expectations are either analytic or the published bicubic baseline (DRN paper, Table 1).
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from drn_tf.degrade import imresize, modcrop
from drn_tf.metrics import PSNR, SSIM, psnr_y, rgb_to_y, ssim_y

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BENCHMARK = DATA / "benchmark"

needs_data = pytest.mark.skipif(
    not BENCHMARK.is_dir(), reason=f"benchmark images not found at {BENCHMARK}"
)

C1 = (0.01 * 255) ** 2


def _bicubic_pairs(set_name: str, scale: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, bicubic SR, modcropped HR) uint8 pairs from the official LR files."""
    pairs = []
    for hr_path in sorted((BENCHMARK / set_name / "HR").glob("*.png")):
        hr = modcrop(np.asarray(Image.open(hr_path)), scale)
        lr_path = BENCHMARK / set_name / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png"
        sr = imresize(np.asarray(Image.open(lr_path)), scale)
        pairs.append((hr_path.stem, sr, hr))
    return pairs


@pytest.fixture(scope="module")
def set5_x4() -> list[tuple[str, np.ndarray, np.ndarray]]:
    if not BENCHMARK.is_dir():
        pytest.skip(f"benchmark images not found at {BENCHMARK}")
    return _bicubic_pairs("Set5", 4)


# --------------------------------------------------------------------------------------------
# numpy reference: analytic cases
# --------------------------------------------------------------------------------------------


def test_rgb_to_y_studio_range() -> None:
    pixels = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]])
    y = rgb_to_y(pixels.astype(np.uint8))
    assert y.dtype == np.float64
    np.testing.assert_allclose(
        # MATLAB's uint8 result: 16 + 65.481 → 81, 16 + 128.553 → 145, 16 + 24.966 → 41.
        y[0],
        [16.0, 235.0, 81.0, 145.0, 41.0],
        atol=1e-12,
    )
    gray = np.array([[0, 128, 255]], dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(gray), rgb_to_y(np.repeat(gray[..., None], 3, -1)))


def test_psnr_identical_is_inf_and_ssim_is_one() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    assert psnr_y(image, image, shave=4) == math.inf
    assert ssim_y(image, image, shave=4) == pytest.approx(1.0, abs=1e-12)


def test_psnr_of_known_offsets() -> None:
    black = np.zeros((32, 24, 3), dtype=np.uint8)
    # RGB 1,1,1 has Y 16.86, stored as 17 by MATLAB: one gray level → 10 log10(255²) = 48.13 dB.
    assert psnr_y(black + np.uint8(1), black, shave=2) == pytest.approx(48.1308, abs=1e-4)
    # Black against white: Y 16 against 235.
    white = np.full_like(black, 255)
    assert psnr_y(white, black, shave=2) == pytest.approx(20 * math.log10(255 / 219), abs=1e-9)


def test_ssim_of_constant_images() -> None:
    # Flat images: (co)variances vanish, SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    a = np.full((30, 30), 100, dtype=np.uint8)
    b = np.full((30, 30), 120, dtype=np.uint8)
    mu_a, mu_b = rgb_to_y(a)[0, 0], rgb_to_y(b)[0, 0]
    expected = (2 * mu_a * mu_b + C1) / (mu_a**2 + mu_b**2 + C1)
    assert ssim_y(a, b, shave=2) == pytest.approx(expected, abs=1e-12)


def test_float_inputs_are_quantized_first() -> None:
    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    sr = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    # +-0.4 rounds back to the same integers; values beyond 0..255 clip like the protocol's clamp.
    jitter = rng.uniform(-0.4, 0.4, sr.shape)
    noisy = sr.astype(np.float64) + jitter
    noisy[0, 0] = [-20.0, 300.0, 255.4]
    clean = sr.copy()
    clean[0, 0] = [0, 255, 255]
    assert psnr_y(noisy, hr, shave=0) == psnr_y(clean, hr, shave=0)
    assert ssim_y(noisy, hr, shave=0) == ssim_y(clean, hr, shave=0)


def test_shave_removes_the_border() -> None:
    hr = np.full((30, 30, 3), 90, dtype=np.uint8)
    sr = hr.copy()
    sr[:3] = 0  # damage confined to the top 3 rows
    assert psnr_y(sr, hr, shave=3) == math.inf
    assert ssim_y(sr, hr, shave=3) == pytest.approx(1.0, abs=1e-12)
    assert psnr_y(sr, hr, shave=2) < 40.0
    with pytest.raises(ValueError):
        psnr_y(sr, hr[:-1], shave=0)
    with pytest.raises(ValueError):
        ssim_y(sr, hr, shave=10)  # 10x10 left: smaller than the 11x11 window


# --------------------------------------------------------------------------------------------
# Published bicubic baseline, Set5 x4: 28.42 dB / 0.810 in DRN Table 1 (0.8104 in VDSR-era tables)
# --------------------------------------------------------------------------------------------


@needs_data
def test_set5_x4_bicubic_matches_published_baseline(set5_x4) -> None:
    psnrs = [psnr_y(sr, hr, shave=4) for _, sr, hr in set5_x4]
    ssims = [ssim_y(sr, hr, shave=4) for _, sr, hr in set5_x4]
    assert len(psnrs) == 5
    # Measured on MATLAB's uint8-rounded Y, as the published row was; float Y reads 28.430.
    assert np.mean(psnrs) == pytest.approx(28.42, abs=0.01)
    assert np.mean(ssims) == pytest.approx(0.8104, abs=0.001)


# --------------------------------------------------------------------------------------------
# Keras metrics agree with the numpy reference
# --------------------------------------------------------------------------------------------


def _nhwc(image: np.ndarray) -> tf.Tensor:
    image = image if image.ndim == 3 else image[..., None]
    return tf.constant(image[None].astype(np.float32))


@needs_data
def test_keras_metrics_match_numpy_on_set5(set5_x4) -> None:
    psnr_metric, ssim_metric = PSNR(shave=4), SSIM(shave=4)
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)

    # One traced graph serves every image size: H and W are dynamic.
    @tf.function(input_signature=[spec, spec])
    def update(y_true: tf.Tensor, y_pred: tf.Tensor) -> None:
        psnr_metric.update_state(y_true, y_pred)
        ssim_metric.update_state(y_true, y_pred)

    rng = np.random.default_rng(3)
    psnr_sum = ssim_sum = 0.0
    for count, (name, sr, hr) in enumerate(set5_x4, start=1):
        # Sub-integer noise on the prediction must be removed by the metric's own quantization.
        noisy = sr.astype(np.float32) + rng.uniform(-0.45, 0.45, sr.shape).astype(np.float32)
        update(_nhwc(hr), _nhwc(noisy))
        # Recover this image's score from the running mean.
        new_psnr_sum = float(psnr_metric.result()) * count
        new_ssim_sum = float(ssim_metric.result()) * count
        assert new_psnr_sum - psnr_sum == pytest.approx(psnr_y(sr, hr, 4), abs=1e-4), name
        assert new_ssim_sum - ssim_sum == pytest.approx(ssim_y(sr, hr, 4), abs=1e-5), name
        psnr_sum, ssim_sum = new_psnr_sum, new_ssim_sum

    assert float(psnr_metric.result()) == pytest.approx(
        np.mean([psnr_y(sr, hr, 4) for _, sr, hr in set5_x4]), abs=1e-4
    )
    assert float(ssim_metric.result()) == pytest.approx(
        np.mean([ssim_y(sr, hr, 4) for _, sr, hr in set5_x4]), abs=1e-5
    )
    psnr_metric.reset_state()
    assert float(psnr_metric.result()) == 0.0


def test_keras_metrics_batch_weights_and_grayscale() -> None:
    rng = np.random.default_rng(4)
    hr = rng.integers(0, 256, (3, 36, 28, 3)).astype(np.float32)
    sr = np.clip(hr + rng.normal(0, 8, hr.shape), 0, 255).astype(np.float32)
    weights = np.array([1.0, 0.0, 3.0], dtype=np.float32)
    for metric, reference in ((PSNR(shave=2), psnr_y), (SSIM(shave=2), ssim_y)):
        metric.update_state(tf.constant(hr), tf.constant(sr), sample_weight=tf.constant(weights))
        per_image = [reference(sr[i], hr[i], 2) for i in range(3)]
        expected = np.average(per_image, weights=weights)
        assert float(metric.result()) == pytest.approx(expected, rel=1e-6)

    gray_metric = PSNR(shave=0)
    gray_metric.update_state(tf.constant(hr[..., :1]), tf.constant(sr[..., :1]))
    expected = np.mean([psnr_y(sr[i, ..., 0], hr[i, ..., 0], 0) for i in range(3)])
    assert float(gray_metric.result()) == pytest.approx(expected, rel=1e-6)


def test_keras_metrics_serialize_and_work_in_evaluate() -> None:
    for cls in (PSNR, SSIM):
        metric = cls(shave=3, name=f"val_{cls.__name__.lower()}")
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(metric)
        )
        assert type(restored) is cls
        assert restored.shave == 3 and restored.name == metric.name

    rng = np.random.default_rng(5)
    hr = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    sr = np.clip(hr + rng.normal(0, 5, hr.shape), 0, 255).astype(np.float32)
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Identity()])
    model.compile(loss="mae", metrics=[PSNR(shave=3), SSIM(shave=3)])
    logs = model.evaluate(sr, hr, batch_size=2, verbose=0, return_dict=True)
    assert logs["psnr"] == pytest.approx(
        np.mean([psnr_y(s, h, 3) for s, h in zip(sr, hr, strict=True)]), 1e-6
    )
    assert logs["ssim"] == pytest.approx(
        np.mean([ssim_y(s, h, 3) for s, h in zip(sr, hr, strict=True)]), 1e-6
    )
