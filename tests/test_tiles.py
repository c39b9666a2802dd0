"""Tests for drn_tf.tiles: tiles cover the image, blend weights sum to one, memory is bounded by
the tile, and tiled results agree with one pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import drn_tf
from drn_tf import inference, loading, tiles
from drn_tf.degrade import imresize

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark"
needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found")


def _image(height: int, width: int, channels: int = 3, dtype=np.uint8, seed: int = 0):
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top + 1, (height, width, channels), dtype)


def _psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(peak**2 / error)


@pytest.fixture(scope="module")
def default_model():
    return loading.load_model("default")


@pytest.mark.parametrize("length", [17, 40, 63, 64, 65, 100, 257])
@pytest.mark.parametrize("tile, overlap", [(16, 4), (32, 8), (64, 0)])
def test_tiles_cover_the_image_and_blend_weights_sum_to_one(length, tile, overlap):
    size = min(tile, length)
    starts = tiles._tile_starts(length, size, overlap)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:], strict=False))
    weights = tiles._blend_weights(starts, size, 4, overlap)
    total = np.zeros(length * 4)
    for start, weight in zip(starts, weights, strict=True):
        assert weight.min() >= 0
        total[start * 4 : (start + size) * 4] += weight
    np.testing.assert_allclose(total, 1, rtol=1e-6)


def test_tiled_bicubic_equals_one_pass_bicubic():
    """Bicubic is local, so blended tiles must give exactly the whole-image result: this checks
    the tiling, blending and strip assembly independently of the network."""
    image = _image(70, 53, seed=11)
    tiled = drn_tf.upscale(image, "bicubic", tile=24, tile_overlap=6)
    np.testing.assert_array_equal(tiled, imresize(image, 4))
    wide = _image(9, 100, 4, np.uint16, seed=12)
    one = drn_tf.upscale(wide, "bicubic", tile=None)
    assert (
        np.abs(drn_tf.upscale(wide, "bicubic", tile=32, tile_overlap=8).astype(int) - one).max()
        <= 1
    )


def test_memory_is_bounded_by_the_tile(tiny, monkeypatch):
    seen = []
    real = inference._runner

    def spying(model, policy):
        run = real(model, policy)
        return lambda tiles: seen.append(tiles.shape) or run(tiles)

    monkeypatch.setattr(inference, "_runner", spying)
    sr = drn_tf.upscale(_image(50, 37), tiny[0], tile=16, tile_overlap=4)
    assert sr.shape == (200, 148, 3)
    assert max(s[1] for s in seen) <= 16 and max(s[2] for s in seen) <= 16 and len(seen) > 9


@needs_data
def test_tiled_agrees_with_one_pass_on_a_real_photo(default_model):
    photo = np.asarray(Image.open(SHARED / "Set14" / "HR" / "monarch.png").convert("RGB"))
    photo = photo[100:260, 200:400]  # 160x200: one pass and 4x4 tiles of 64 stay quick
    one = drn_tf.upscale(photo, default_model, tile=None, precision="float32")
    tiled = drn_tf.upscale(photo, default_model, tile=64, tile_overlap=16, precision="float32")
    assert _psnr(tiled, one) >= 45
