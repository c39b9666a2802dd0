"""Tests for drn_tf.degrade: MATLAB-bicubic imresize and the LR kinds (nearest, bilinear, blur,
DN, JPEG).

The key test regenerates every official MATLAB-bicubic LR image of Set5/Set14 (X2, X3, X4) from its
HR image and requires bit-exact equality; the others check analytic properties of the kernel.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drn_tf.degrade import (
    KINDS,
    cubic,
    degrade,
    imresize,
    lr_folder_name,
    modcrop,
    resize_weights,
    triangle,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BENCHMARK = DATA / "benchmark"
SETS = ("Set5", "Set14")
SCALES = (2, 3, 4)

needs_data = pytest.mark.skipif(
    not BENCHMARK.is_dir(), reason=f"benchmark images not found at {BENCHMARK}"
)


def _load(path: Path) -> np.ndarray:
    # Keep grayscale (bridge) 2-D: the official LR of a gray HR is gray too.
    return np.asarray(Image.open(path))


@needs_data
@pytest.mark.parametrize("set_name", SETS)
@pytest.mark.parametrize("scale", SCALES)
def test_reproduces_official_lr_bit_exactly(set_name: str, scale: int) -> None:
    hr_paths = sorted((BENCHMARK / set_name / "HR").glob("*.png"))
    assert hr_paths, f"no HR images in {BENCHMARK / set_name / 'HR'}"
    mismatches = []
    for hr_path in hr_paths:
        hr = _load(hr_path)
        lr = _load(
            BENCHMARK / set_name / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png"
        )
        out = imresize(modcrop(hr, scale), 1 / scale)
        if out.dtype != np.uint8 or out.shape != lr.shape:
            mismatches.append(f"{hr_path.stem}: {out.dtype} {out.shape} vs {lr.shape}")
        elif not np.array_equal(out, lr):
            mismatches.append(f"{hr_path.stem}: {int(np.count_nonzero(out != lr))} pixels differ")
    assert not mismatches, mismatches


@needs_data
def test_all_57_official_files_are_covered() -> None:
    files = [
        p for s in SETS for x in SCALES for p in (BENCHMARK / s / "LR_bicubic" / f"X{x}").glob("*")
    ]
    assert len(files) == 57


def test_output_size_is_ceil_of_scaled_size() -> None:
    image = np.zeros((10, 7, 3), dtype=np.uint8)
    assert imresize(image, 0.5).shape == (5, 4, 3)
    assert imresize(image, 1 / 3).shape == (4, 3, 3)
    assert imresize(image, 4).shape == (40, 28, 3)
    assert imresize(image[..., 0], output_shape=(3, 11)).shape == (3, 11)


def test_output_shape_equals_scale_for_exact_ratios() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 36, 3), dtype=np.uint8)
    np.testing.assert_array_equal(imresize(image, 1 / 4), imresize(image, output_shape=(12, 9)))
    np.testing.assert_array_equal(imresize(image, 2), imresize(image, output_shape=(96, 72)))


def test_kernel_is_keys_cubic_with_a_minus_half() -> None:
    # Keys (1981), a = -0.5: interpolating (1 at 0, 0 at other integers), C1, partition of unity.
    assert cubic(np.array([0.0]))[0] == 1.0
    np.testing.assert_array_equal(cubic(np.array([-2.0, -1.0, 1.0, 2.0, 2.5])), 0.0)
    assert cubic(np.array([0.5]))[0] == pytest.approx(0.5625)
    assert cubic(np.array([1.5]))[0] == pytest.approx(-0.0625)
    shifts = np.linspace(0.0, 1.0, 11)
    taps = np.arange(-2, 3)
    sums = cubic(shifts[:, None] - taps[None, :]).sum(axis=1)
    np.testing.assert_allclose(sums, 1.0, atol=1e-12)


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 1 / 2, 2.0, 3.0, 4.0])
def test_weights_are_normalized_and_indices_clamped(scale: float) -> None:
    n_in = 17
    n_out = math.ceil(n_in * scale)
    weights, indices = resize_weights(n_in, n_out, scale)
    assert weights.shape == indices.shape
    assert weights.shape[0] == n_out
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    assert indices.min() >= 0 and indices.max() <= n_in - 1


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downscaling_a_ramp_gives_block_centres(factor: int) -> None:
    # The antialiased kernel is symmetric about each output centre, so a linear ramp maps to the
    # ramp value at the centre of each factor x factor block (away from the replicated borders).
    n = 24 * factor
    ramp = np.tile(np.arange(n, dtype=np.float64), (n, 1))
    out = imresize(ramp, 1 / factor)
    centres = np.arange(n // factor) * factor + (factor - 1) / 2
    interior = slice(3, -3)
    np.testing.assert_allclose(
        out[interior, interior], np.tile(centres, (n // factor, 1))[interior, interior], atol=1e-9
    )


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_upscaling_reproduces_linear_ramps(factor: int) -> None:
    # Keys' cubic reproduces polynomials up to degree 2, so interior samples lie on the ramp at
    # MATLAB's input coordinate u = (x + 0.5) / factor - 0.5 (0-based).
    n = 20
    ramp = np.tile(np.arange(n, dtype=np.float64), (n, 1)).T
    out = imresize(ramp, factor)
    u = (np.arange(n * factor) + 0.5) / factor - 0.5
    interior = slice(2 * factor, -2 * factor)
    np.testing.assert_allclose(
        out[interior, interior], np.tile(u[:, None], (1, n * factor))[interior, interior], atol=1e-9
    )


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 2.0, 4.0])
def test_constant_images_stay_constant(scale: float) -> None:
    constant = np.full((30, 21, 3), 137, dtype=np.uint8)
    out = imresize(constant, scale)
    assert out.dtype == np.uint8
    assert np.all(out == 137)


def test_float_input_keeps_dtype_and_is_not_rounded() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((40, 32, 3)).astype(np.float32)
    out = imresize(image, 1 / 4)
    assert out.dtype == np.float32
    assert not np.allclose(out * 255, np.round(out * 255))
    # Upscaling overshoots near edges; floats must keep that (no clipping).
    step = np.zeros((16, 16), dtype=np.float64)
    step[:, 8:] = 1.0
    up = imresize(step, 4)
    assert up.min() < 0.0 and up.max() > 1.0


def test_uint8_matches_float_pipeline_within_rounding() -> None:
    rng = np.random.default_rng(2)
    # Values kept in 20..235 so that no pass overshoots 0..255 and clipping never enters.
    image = rng.integers(20, 236, (64, 48, 3), dtype=np.uint8)
    as_uint8 = imresize(image, 1 / 3).astype(np.float64)
    as_float = np.clip(imresize(image.astype(np.float64), 1 / 3), 0, 255)
    # The first pass's rounding error (<= 0.5) is carried through the second pass's weights (their
    # absolute sum exceeds 1 because of the negative lobes), then the final rounding adds <= 0.5.
    weights, _ = resize_weights(48, 16, 1 / 3)
    bound = 0.5 * np.abs(weights).sum(axis=1).max() + 0.5
    assert np.max(np.abs(as_uint8 - as_float)) <= bound + 1e-9


def test_modcrop_drops_trailing_rows_and_columns() -> None:
    image = np.arange(11 * 14).reshape(11, 14)
    cropped = modcrop(image, 4)
    assert cropped.shape == (8, 12)
    np.testing.assert_array_equal(cropped, image[:8, :12])
    assert modcrop(np.zeros((12, 9, 3)), 3).shape == (12, 9, 3)


def test_rejects_bad_arguments() -> None:
    image = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(ValueError):
        imresize(image)
    with pytest.raises(ValueError):
        imresize(image, 0.5, output_shape=(4, 4))
    with pytest.raises(TypeError):
        imresize(image.astype(np.int32), 0.5)


# --- the LR kinds of the benchmark tree (degrade) ----------------------------------------------


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x * 3.0, y * 2.0, (x + y) * 1.5], -1) % 256
    return np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_every_kind_gives_floor_sized_uint8(kind: str, scale: int) -> None:
    lr = degrade(_photo(37, 50), kind, scale, np.random.default_rng(0))
    assert lr.dtype == np.uint8 and lr.shape == (37 // scale, 50 // scale, 3)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_nearest_is_matlab_nearest(scale: int) -> None:
    # MATLAB imresize(x, 1/s, 'nearest'): output i (1-based) samples the input at
    # u = i·s + 0.5·(1 − s), rounded half away from zero, then 1-based → 0-based.
    hr = _photo(8 * scale + 3, 7 * scale + 1)
    cropped = modcrop(hr, scale)

    def source(n: int) -> np.ndarray:
        u = np.arange(1, n // scale + 1) * scale + 0.5 * (1 - scale)
        return np.floor(u + 0.5).astype(int) - 1

    rows, cols = source(cropped.shape[0]), source(cropped.shape[1])
    np.testing.assert_array_equal(degrade(hr, "nearest", scale), cropped[rows][:, cols])


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bilinear_is_an_antialiased_triangle_filter(scale: int) -> None:
    # PIL's BILINEAR downscaling is the same stretched triangle with the same pixel centres;
    # it renormalises at the borders where MATLAB replicates, so only the interior is compared.
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (12 * scale, 10 * scale))
    ours = imresize(image, 1 / scale, method="bilinear")
    pil = Image.fromarray(image.astype(np.float32), mode="F").resize(
        (10, 12), Image.Resampling.BILINEAR
    )
    np.testing.assert_allclose(ours[2:-2, 2:-2], np.asarray(pil)[2:-2, 2:-2], atol=1e-3)
    assert triangle(np.array([0.0, 0.5, 1.0, 1.5])).tolist() == [1, 0.5, 0, 0]


def test_blur_is_fspecial_gaussian_then_bicubic() -> None:
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    hr = _photo(40, 44, seed=2)
    # fspecial('gaussian', 7, 1.6) in 2-D, applied with replicated borders (imfilter's
    # 'replicate'), rounded to uint8 as imfilter does for uint8 images.
    y, x = np.mgrid[-3:4, -3:4]
    kernel = np.exp(-(x**2 + y**2) / (2 * 1.6**2))
    kernel /= kernel.sum()
    blurred = np.stack(
        [scipy_ndimage.correlate(hr[..., c].astype(np.float64), kernel, mode="nearest")
         for c in range(3)], -1,
    )  # fmt: skip
    blurred = np.clip(np.floor(blurred + 0.5), 0, 255).astype(np.uint8)
    got = degrade(hr, "blur", 4).astype(int)
    # One level where float sums land on either side of .5 differently.
    assert np.abs(got - imresize(blurred, 1 / 4).astype(int)).max() <= 1


def test_dn_adds_seeded_gaussian_noise_to_blur() -> None:
    hr = np.full((64, 64, 3), 128, np.uint8)  # mid-grey: the noise is never clipped
    first = degrade(hr, "DN", 2, np.random.default_rng(7))
    np.testing.assert_array_equal(first, degrade(hr, "DN", 2, np.random.default_rng(7)))
    assert not np.array_equal(first, degrade(hr, "DN", 2, np.random.default_rng(8)))
    noise = first.astype(float) - degrade(hr, "blur", 2)
    assert abs(noise.mean()) < 1.0 and noise.std() == pytest.approx(10.0, rel=0.1)


def test_jpeg_option_is_pils_encode_decode() -> None:
    import io

    hr = _photo(48, 64, seed=3)
    plain = degrade(hr, "bicubic", 2)
    buffer = io.BytesIO()
    Image.fromarray(plain).save(buffer, format="JPEG", quality=40)
    expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    np.testing.assert_array_equal(degrade(hr, "bicubic", 2, jpeg_quality=40), expected)
    assert not np.array_equal(expected, plain)
    with pytest.raises(ValueError, match="JPEG quality must be 1..95, got 0"):
        degrade(hr, "bicubic", 2, jpeg_quality=0)


def test_degrade_rejects_bad_arguments() -> None:
    hr = _photo(16, 16)
    with pytest.raises(ValueError, match="kind must be one of bicubic, nearest"):
        degrade(hr, "box", 2)
    with pytest.raises(ValueError, match="scale must be an integer of at least 2, got 1"):
        degrade(hr, "nearest", 1)
    with pytest.raises(ValueError, match="expected a uint8"):
        degrade(hr[:1], "nearest", 2)
    assert lr_folder_name("nearest") == "LR_nearest"
    assert lr_folder_name("DN", 75) == "LR_DN_jpeg75"
