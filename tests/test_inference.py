"""Tests for drn_tf.inference: upscale on arrays (pixel rules, gray/alpha/16-bit/float, bfloat16,
self-ensemble, batches, out of memory, bad arrays and settings) and the top-level API."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import drn_tf
import export.runtime
from drn_tf import inference, loading, serving
from drn_tf.degrade import imresize
from drn_tf.metrics import psnr_y

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark"
needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found")


def _image(height: int, width: int, channels: int = 3, dtype=np.uint8, seed: int = 0):
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top + 1, (height, width, channels), dtype)


def _network(model, images: np.ndarray) -> np.ndarray:
    """The primal network's top output in float32, eagerly: the independent reference."""
    return serving.super_resolve(model, tf.constant(images, tf.float32)).numpy()


def _psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(peak**2 / error)


@pytest.fixture(scope="module")
def default_model():
    return loading.load_model("default")


# --- upscale ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (5, 3), (9, 16)])
def test_upscale_shape_and_values(tiny, size):
    model = tiny[0]
    image = _image(*size, seed=size[0] * 31 + size[1])
    sr = inference.upscale(model, image)
    assert sr.dtype == np.uint8 and sr.shape == (4 * size[0], 4 * size[1], 3)
    reference = np.asarray(model(image[None].astype(np.float32))[-1])[0]
    expected = np.round(np.clip(reference, 0, 255))
    # Graph and eager execution may differ by float rounding; only exact .5 ties could flip.
    assert np.abs(sr - expected).max() <= 1
    safe = np.abs(np.clip(reference, 0, 255) % 1 - 0.5) > 1e-3
    np.testing.assert_array_equal(sr[safe], expected[safe])


def test_upscale_traces_once_for_all_sizes(tiny):
    model = tiny[0]
    for size in [(2, 3), (4, 4), (7, 1), (3, 8)]:
        inference.upscale(_image(*size), model, precision="float32")
    assert inference._network_function(model, "float32").experimental_get_tracing_count() == 1


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((4, 4, 3), np.int64),
        np.zeros((0, 4, 3), np.uint8),
    ],
    ids=["5-channels", "int64", "empty"],
)
def test_upscale_rejects_bad_arrays(tiny, image):
    with pytest.raises(ValueError):
        inference.upscale(image, tiny[0])


# --- bfloat16 --------------------------------------------------------------------------------


def test_bfloat16_copy_computes_in_bfloat16_with_float32_tails(tiny):
    model = tiny[0]
    copy = inference.bfloat16_primal(model)
    policies = {layer.name: layer.dtype_policy.name for layer in copy.layers}
    assert policies["up_0_rcab_0"] == "mixed_bfloat16"
    assert {policies[n] for n in ("upsample", "tail_0", "tail_2", "add_mean")} == {"float32"}
    for a, b in zip(copy.get_weights(), model.primal.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_upscale_uses_the_weights_the_model_has_now(precision):
    """A notebook upscales, trains further, upscales again: the second call sees the training."""
    keras.utils.set_random_seed(3)
    model = drn_tf.build_drn_bundle("drn-s", 4, n_blocks=1, n_feats=4)
    image = _image(6, 5, seed=3)
    before = drn_tf.upscale(image, model, precision=precision)
    head = model.primal.get_layer("head")
    head.set_weights([w * 1.5 for w in head.get_weights()])
    after = drn_tf.upscale(image, model, precision=precision)
    fresh = drn_tf.build_drn_bundle("drn-s", 4, n_blocks=1, n_feats=4)
    fresh.set_weights(model.get_weights())
    np.testing.assert_array_equal(after, drn_tf.upscale(image, fresh, precision=precision))
    assert not np.array_equal(before, after)


@pytest.mark.slow
@needs_data
def test_bfloat16_agrees_with_float32_on_set5(default_model):
    hr = np.asarray(Image.open(SHARED / "Set5" / "HR" / "baby.png").convert("RGB"))
    lr = np.asarray(Image.open(SHARED / "Set5" / "LR_bicubic" / "X4" / "babyx4.png"))
    fp32 = drn_tf.upscale(lr, default_model, precision="float32")
    bf16 = drn_tf.upscale(lr, default_model, precision="bfloat16")
    assert _psnr(bf16, fp32) >= 45
    assert abs(psnr_y(bf16, hr, 4) - psnr_y(fp32, hr, 4)) <= 0.05


# --- pixel rules -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (1, 2), (3, 1), (5, 7)])
def test_plain_path_is_the_serving_function_byte_for_byte(tiny, size):
    model = tiny[0]
    image = _image(*size, seed=size[0] * 7 + size[1])
    expected = serving.super_resolve_uint8(model, tf.constant(image[None])).numpy()[0]
    np.testing.assert_array_equal(drn_tf.upscale(image, model, precision="float32"), expected)
    np.testing.assert_array_equal(inference.upscale(model, image), expected)  # 0.1 order


def test_sixteen_bit_keeps_full_precision(tiny):
    model = tiny[0]
    image = _image(6, 5, dtype=np.uint16, seed=3)
    sr = drn_tf.upscale(image, model, precision="float32")
    assert sr.dtype == np.uint16 and sr.shape == (24, 20, 3)
    values = _network(model, image[None].astype(np.float64) * 255 / 65535)[0]
    expected = np.clip(values, 0, 255) * 65535 / 255
    assert np.abs(sr - expected).max() <= 0.5 + 1e-2
    # Not an 8-bit result in disguise: the low byte carries information.
    assert len(np.unique(sr % 257)) > 100
    # Inputs differing only below 8 bits give different outputs.
    assert not np.array_equal(drn_tf.upscale(image ^ 1, model, precision="float32"), sr)


def test_float_input_gives_unrounded_float_output(tiny):
    model = tiny[0]
    image = _image(4, 6, seed=5).astype(np.float32) / 255
    sr = drn_tf.upscale(image, model, precision="float32")
    assert sr.dtype == np.float32
    expected = np.clip(_network(model, image[None] * 255)[0], 0, 255) / 255
    np.testing.assert_allclose(sr, expected, atol=1e-5)


def test_gray_goes_through_as_rgb_and_comes_back_gray(tiny):
    model = tiny[0]
    gray = _image(5, 6, 1, seed=7)[..., 0]
    sr = drn_tf.upscale(gray, model, precision="float32")
    assert sr.shape == (20, 24) and sr.dtype == np.uint8
    rgb = _network(model, np.repeat(gray[None, ..., None], 3, -1))[0]
    expected = np.clip(rgb @ np.array([0.299, 0.587, 0.114]), 0, 255)
    assert np.abs(sr - expected).max() <= 0.5 + 1e-3
    np.testing.assert_array_equal(
        drn_tf.upscale(gray[..., None], model)[..., 0], drn_tf.upscale(gray, model)
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_alpha_is_upscaled_with_bicubic(tiny, dtype):
    model = tiny[0]
    rgba = _image(6, 5, 4, dtype, seed=9)
    sr = drn_tf.upscale(rgba, model)
    assert sr.shape == (24, 20, 4) and sr.dtype == dtype
    np.testing.assert_array_equal(sr[..., :3], drn_tf.upscale(rgba[..., :3], model))
    if dtype == np.uint8:  # MATLAB's uint8 imresize, bit for bit
        np.testing.assert_array_equal(sr[..., 3], imresize(rgba[..., 3], 4))
    else:
        alpha = imresize(rgba[..., 3].astype(np.float64) * 255 / 65535, 4)
        expected = np.clip(alpha, 0, 255) * 65535 / 255
        assert np.abs(sr[..., 3] - expected).max() <= 0.5 + 1e-2
    la = rgba[..., [0, 3]]
    out = drn_tf.upscale(la, model)
    assert out.shape == (24, 20, 2)
    np.testing.assert_array_equal(out[..., 0], drn_tf.upscale(la[..., 0], model))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (1, 3), (2, 1), (3, 5)])
def test_tiny_images_of_every_layout(tiny, channels, size):
    for dtype in (np.uint8, np.uint16):
        image = _image(*size, channels, dtype)
        sr = drn_tf.upscale(image, tiny[0], tile=2, tile_overlap=0)
        assert sr.shape == (4 * size[0], 4 * size[1], channels) and sr.dtype == dtype


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((4, 4, 5), np.uint8), "1-4"),
        (np.zeros((4, 4, 3), np.int32), "int32"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros(4, np.uint8), "shape"),
    ],
)
def test_bad_arrays_are_refused(tiny, image, message):
    with pytest.raises(ValueError, match=message):
        drn_tf.upscale(image, tiny[0])


def test_bad_settings_are_refused(tiny):
    image = _image(4, 4)
    with pytest.raises(ValueError, match="quarter of the tile"):
        drn_tf.upscale(image, tiny[0], tile=16, tile_overlap=5)
    with pytest.raises(ValueError, match="tile must be"):
        drn_tf.upscale(image, tiny[0], tile=-1)
    with pytest.raises(ValueError, match="precision must be one of"):
        drn_tf.upscale(image, tiny[0], precision="float16")
    with pytest.raises(ValueError, match="model must be"):
        drn_tf.upscale(image, 42)


def test_out_of_memory_suggests_a_smaller_tile(tiny, monkeypatch):
    def exhausted(model, policy):
        def run(tiles):
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

        return run

    monkeypatch.setattr(inference, "_runner", exhausted)
    with pytest.raises(inference.OutOfMemoryError, match=r"37x50 image in tiles of 16 .*--tile 32"):
        drn_tf.upscale(_image(50, 37), tiny[0], tile=16, tile_overlap=4)
    with pytest.raises(inference.OutOfMemoryError, match=r"in one pass; .*--tile 128"):
        drn_tf.upscale(_image(50, 37), tiny[0], tile=None)


# --- self-ensemble and batches ---------------------------------------------------------------


def test_self_ensemble_is_the_mean_of_the_eight_transforms(tiny):
    model = tiny[0]
    image = _image(5, 7, seed=13).astype(np.float32) / 255
    outputs = []
    for turns in range(4):
        for flip in (False, True):
            view = np.rot90(image, turns)
            view = view[:, ::-1] if flip else view
            out = _network(model, view[None] * 255)[0]
            out = out[:, ::-1] if flip else out
            outputs.append(np.rot90(out, -turns))
    expected = np.clip(np.mean(outputs, axis=0), 0, 255) / 255
    sr = drn_tf.upscale(image, model, self_ensemble=True, precision="float32")
    np.testing.assert_allclose(sr, expected, atol=1e-5)


@pytest.mark.parametrize(
    "transform", [np.fliplr, np.flipud, np.rot90, lambda a: a.transpose(1, 0, 2)]
)
def test_self_ensemble_is_flip_invariant(tiny, transform):
    model = tiny[0]
    image = _image(6, 9, seed=14).astype(np.float32) / 255
    sr = drn_tf.upscale(image, model, self_ensemble=True, precision="float32")
    transformed = drn_tf.upscale(
        np.ascontiguousarray(transform(image)), model, self_ensemble=True, precision="float32"
    )
    np.testing.assert_allclose(transformed, transform(sr), atol=1e-5)
    plain = drn_tf.upscale(np.ascontiguousarray(transform(image)), model, precision="float32")
    assert np.abs(plain - transform(drn_tf.upscale(image, model, precision="float32"))).max() > 1e-3


def test_a_list_batches_images_of_one_size(tiny, monkeypatch):
    calls = []
    real = inference._runner
    monkeypatch.setattr(
        inference, "_runner", lambda m, p: lambda t, run=real(m, p): calls.append(len(t)) or run(t)
    )
    images = [
        _image(5, 6, seed=1),
        _image(5, 6, seed=2),
        _image(3, 4, seed=3),
        _image(5, 6, seed=4),
    ]
    results = drn_tf.upscale(images, tiny[0], precision="float32")
    assert sorted(calls) == [1, 3]
    for image, result in zip(images, results, strict=True):
        np.testing.assert_array_equal(result, drn_tf.upscale(image, tiny[0], precision="float32"))


def test_a_4d_array_is_a_batch_and_a_pil_image_an_image(tiny):
    images = np.stack([_image(3, 4, seed=1), _image(3, 4, seed=2)])
    results = drn_tf.upscale(images, tiny[0])
    assert isinstance(results, list) and len(results) == 2
    np.testing.assert_array_equal(results[1], drn_tf.upscale(images[1], tiny[0]))
    pil = Image.fromarray(images[0])
    np.testing.assert_array_equal(drn_tf.upscale(pil, tiny[0]), results[0])


def test_top_level_api(tiny):
    # drn_tf.upscale is inference.upscale with a runtime choice (Keras by default).
    assert drn_tf.upscale is export.runtime.upscale and drn_tf.load_model is loading.load_model
    image = _image(4, 5)
    via_path = drn_tf.upscale(image, str(tiny[1]), precision="float32")
    np.testing.assert_array_equal(via_path, drn_tf.upscale(image, tiny[0], precision="float32"))
