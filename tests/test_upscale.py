"""Tests for upscaling users' images: drn_tf.upscale (tiles, self-ensemble, precision, pixel
rules, gray/alpha/16-bit), drn_tf.precision, drn_tf.images pictures, and upscale_files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageCms

import drn_tf
import export.runtime
from drn_tf import cli, images, inference, precision, serving
from drn_tf.degrade import imresize
from drn_tf.images import FORMAT_SUFFIXES, Picture, _lzw_decode, load_picture, save_picture
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
    return inference.load_model("default")


# --- precision ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, expected", [("fpu sse2 amx_bf16 amx_tile", True), ("fpu", False)])
def test_cpu_has_amx_bf16_reads_the_flags_line(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: amx_bf16 in a name\nflags\t\t: {flags}\n")
    assert precision.cpu_has_amx_bf16(cpuinfo) is expected
    assert precision.cpu_has_amx_bf16(tmp_path / "missing") is False


@pytest.mark.parametrize("amx", [True, False])
@pytest.mark.parametrize("gpu", [True, False])
def test_auto_precision_with_the_capabilities_faked(monkeypatch, tmp_path, amx, gpu):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"flags\t: sse2 {'amx_bf16' if amx else 'avx512f'}\n")
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    monkeypatch.setattr(precision, "_has_gpu", lambda: gpu)
    cpu_choice = "mixed_bfloat16" if amx else "float32"
    assert precision.resolve_precision("auto") == ("float32" if gpu else cpu_choice)
    training = precision.resolve_precision("auto", training=True)
    assert training == ("mixed_float16" if gpu else cpu_choice)


def test_resolve_precision_names():
    assert precision.resolve_precision("bfloat16") == "mixed_bfloat16"
    assert precision.resolve_precision("float32") == "float32"
    assert precision.resolve_precision("mixed_float16", training=True) == "mixed_float16"
    for bad, training in (("mixed_float16", False), ("float16", False), ("bfloat16", True)):
        with pytest.raises(ValueError, match="precision must be one of"):
            precision.resolve_precision(bad, training)


def test_bfloat16_copy_computes_in_bfloat16_with_float32_tails(tiny):
    model = tiny[0]
    copy = inference.bfloat16_primal(model)
    policies = {layer.name: layer.dtype_policy.name for layer in copy.layers}
    assert policies["up_0_rcab_0"] == "mixed_bfloat16"
    assert {policies[n] for n in ("upsample", "tail_0", "tail_2", "add_mean")} == {"float32"}
    for a, b in zip(copy.get_weights(), model.primal.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@needs_data
def test_bfloat16_agrees_with_float32_on_set5(default_model):
    hr = np.asarray(Image.open(SHARED / "Set5" / "HR" / "baby.png").convert("RGB"))
    lr = np.asarray(Image.open(SHARED / "Set5" / "LR_bicubic" / "X4" / "babyx4.png"))
    fp32 = drn_tf.upscale(lr, default_model, precision="float32")
    bf16 = drn_tf.upscale(lr, default_model, precision="bfloat16")
    assert _psnr(bf16, fp32) >= 45
    assert abs(psnr_y(bf16, hr, 4) - psnr_y(fp32, hr, 4)) <= 0.05


# --- pixel rules --------------------------------------------------------------------------------


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


# --- tiles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [17, 40, 63, 64, 65, 100, 257])
@pytest.mark.parametrize("tile, overlap", [(16, 4), (32, 8), (64, 0)])
def test_tiles_cover_the_image_and_blend_weights_sum_to_one(length, tile, overlap):
    size = min(tile, length)
    starts = inference._tile_starts(length, size, overlap)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:], strict=False))
    weights = inference._blend_weights(starts, size, 4, overlap)
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


# --- self-ensemble and batches ------------------------------------------------------------------


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
    assert drn_tf.upscale is export.runtime.upscale and drn_tf.load_model is inference.load_model
    image = _image(4, 5)
    via_path = drn_tf.upscale(image, str(tiny[1]), precision="float32")
    np.testing.assert_array_equal(via_path, drn_tf.upscale(image, tiny[0], precision="float32"))


# --- pictures: formats and modes ---------------------------------------------------------------

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("image_format", list(FORMAT_SUFFIXES))
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_save_and_load_picture_round_trip(tmp_path, image_format, channels, dtype):
    pixels = _image(6, 5, channels, dtype, seed=channels)
    path = tmp_path / f"p{FORMAT_SUFFIXES[image_format]}"
    notes = save_picture(path, Picture(pixels, SRGB), image_format)
    back = load_picture(path)
    assert back.icc_profile == SRGB
    assert back.pixels.shape[:2] == (6, 5)
    lossless = image_format in ("png", "tiff")
    if lossless:
        assert back.pixels.dtype == dtype
        expected = pixels[..., [0, 0, 0, 1]] if (dtype, channels, image_format) == (
            np.uint16, 2, "tiff"
        ) else pixels  # fmt: skip
        np.testing.assert_array_equal(back.pixels, expected)
        assert notes == []
    else:
        assert back.pixels.dtype == np.uint8
        assert ("8 bits" in " ".join(notes)) == (dtype == np.uint16)
    assert ("alpha" in " ".join(notes)) == (image_format == "jpg" and channels in (2, 4))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_load_picture_modes(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(
        load_picture(tmp_path / "p.png").pixels, np.array(palette.convert("RGB"))
    )
    palette.save(tmp_path / "pt.png", transparency=0)
    assert load_picture(tmp_path / "pt.png").pixels.shape == (4, 6, 4)
    Image.fromarray(rgb[..., 0] > 128).save(tmp_path / "bw.png")
    assert load_picture(tmp_path / "bw.png").pixels.shape == (4, 6, 1)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(tmp_path / "c.jpg", quality=100)
    loaded = load_picture(tmp_path / "c.jpg")
    assert loaded.pixels.shape == (4, 6, 3) and loaded.icc_profile is None
    np.testing.assert_array_equal(
        loaded.pixels, np.array(Image.open(tmp_path / "c.jpg").convert("RGB"))
    )


def test_load_picture_applies_exif_orientation(tmp_path):
    pixels = _image(4, 6, seed=2)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: a viewer turns it 90° clockwise
    Image.fromarray(pixels).save(tmp_path / "o.png", exif=exif)
    np.testing.assert_array_equal(load_picture(tmp_path / "o.png").pixels, np.rot90(pixels, -1))


def test_lzw_decoder_matches_libtiff(tmp_path):
    pixels = _image(64, 90, seed=3)
    pixels[:, :40] = 7  # long runs: codes up to 12 bits and table resets
    Image.fromarray(pixels).save(tmp_path / "l.tif", compression="tiff_lzw")
    with Image.open(tmp_path / "l.tif") as img, open(tmp_path / "l.tif", "rb") as handle:
        data = b""
        for offset, count in zip(img.tag_v2[273], img.tag_v2[279], strict=True):
            handle.seek(offset)
            data += _lzw_decode(handle.read(count))
    np.testing.assert_array_equal(np.frombuffer(data, np.uint8).reshape(pixels.shape), pixels)


# --- files --------------------------------------------------------------------------------------


def _files(tiny, inputs, output, **kwargs):
    return inference.upscale_files(inputs, output, tiny[0], progress=False, **kwargs)


def test_files_keep_mode_depth_and_profile(tiny, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    gray = _image(5, 4, 1, seed=1)[..., 0]
    Image.fromarray(gray).save(src / "gray.png", icc_profile=SRGB)
    rgba16 = _image(3, 5, 4, np.uint16, seed=2)
    save_picture(src / "deep.png", Picture(rgba16))
    rgb16 = _image(4, 3, 3, np.uint16, seed=3)
    save_picture(src / "scan.tif", Picture(rgb16))
    Image.fromarray(_image(4, 4, 2, seed=4), "LA").save(src / "la.png")
    summary = _files(tiny, [src], tmp_path / "out")
    assert summary.failed == [] and len(summary.written) == 4
    out = tmp_path / "out"
    with Image.open(out / "gray_x4.png") as img:
        assert img.mode == "L" and img.size == (16, 20) and img.info["icc_profile"] == SRGB
    deep = load_picture(out / "deep_x4.png").pixels
    np.testing.assert_array_equal(deep, drn_tf.upscale(rgba16, tiny[0]))
    scan = load_picture(out / "scan_x4.png").pixels
    assert scan.dtype == np.uint16 and scan.shape == (16, 12, 3)
    with Image.open(out / "la_x4.png") as img:
        assert img.mode == "LA"


@pytest.mark.parametrize(
    "image_format, mode", [("jpg", "JPEG"), ("webp", "WEBP"), ("tiff", "TIFF")]
)
def test_files_format_flag(tiny, tmp_path, image_format, mode):
    Image.fromarray(_image(4, 4)).save(tmp_path / "a.png")
    summary = _files(tiny, [tmp_path / "a.png"], tmp_path / "o", image_format=image_format)
    (written,) = summary.written
    assert written.name == "a_x4" + FORMAT_SUFFIXES[image_format]
    with Image.open(written) as img:
        assert img.format == mode and img.size == (16, 16)


def test_per_file_failures_are_named_and_the_rest_is_done(tiny, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_image(4, 4)).save(src / "good.png")
    (src / "junk.png").write_bytes(b"not an image at all")
    buffer = io.BytesIO()
    Image.fromarray(_image(40, 40)).save(buffer, "JPEG")
    (src / "cut.jpg").write_bytes(buffer.getvalue()[:300])
    (src / "gone.png").symlink_to(src / "nowhere.png")
    summary = _files(tiny, [src], tmp_path / "out")
    assert [p.name for p in summary.written] == ["good_x4.png"]
    reasons = {p.name: r for p, r in summary.failed}
    assert set(reasons) == {"junk.png", "cut.jpg", "gone.png"}
    assert "not an image" in reasons["junk.png"]
    assert "truncated" in reasons["cut.jpg"]
    assert "does not exist" in reasons["gone.png"]
    err = capsys.readouterr().err
    assert all(f"failed {src / name}: " in err for name in reasons)
    assert "3 failed" in summary.line()


def test_a_symlink_loop_fails_alone_and_the_good_images_are_upscaled(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_image(4, 4)).save(src / "good.png")
    (src / "a.png").symlink_to("b.png")
    (src / "b.png").symlink_to("a.png")
    argv = ["upscale", str(src), "--output", str(tmp_path / "out"), "--model", "bicubic"]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert (tmp_path / "out" / "good_x4.png").is_file()
    assert f"failed {src / 'a.png'}: symbolic link loop" in captured.err
    assert f"failed {src / 'b.png'}: symbolic link loop" in captured.err
    assert "Traceback" not in captured.err and "RuntimeError" not in captured.err
    assert "2 failed" in captured.out


def test_output_folder_inside_and_above_the_inputs(tiny, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.fromarray(_image(4, 4, seed=1)).save(photos / "a.png")
    Image.fromarray(_image(3, 5, seed=2)).save(photos / "sub" / "b.jpg")
    first = _files(tiny, [photos], photos)  # the input folder itself
    assert sorted(p.relative_to(photos).as_posix() for p in first.written) == [
        "a_x4.png",
        "sub/b_x4.png",
    ]
    again = _files(tiny, [photos], photos)  # earlier outputs recognised by name
    assert again.written == [] and len(again.kept) == 2 and len(again.earlier_outputs) == 2
    monkeypatch.chdir(photos / "sub")
    inside = _files(tiny, [Path("..")], Path("out"))  # inside the input folder
    assert len(inside.written) == 2 and (photos / "sub" / "out" / "a_x4.png").is_file()
    above = _files(tiny, [photos / "sub"], tmp_path)  # above the inputs
    assert above.written == [tmp_path / "b_x4.png"]


def test_earlier_outputs_of_any_scale_are_skipped_and_look_alikes_are_not(tiny, tiny_x2, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_image(4, 4, seed=1)).save(photos / "a.png")
    Image.fromarray(_image(4, 4, seed=2)).save(photos / "scan_x4.jpg")  # a user's photo
    first = _files(tiny, [photos], photos / "out")
    assert sorted(p.name for p in first.written) == ["a_x4.png", "scan_x4_x4.png"]
    x2 = inference.load_model(tiny_x2)
    second = inference.upscale_files([photos], photos / "out", x2, progress=False)
    assert sorted(p.relative_to(photos).as_posix() for p in second.written) == [
        "out/a_x2.png",
        "out/scan_x4_x2.png",
    ]
    assert sorted(second.earlier_outputs) == sorted(first.written)  # not out/out/a_x4_x2.png
    assert f"2 earlier output(s) in the inputs skipped (first: {photos / 'out'}" in second.line()
    # Beside their source (an output folder = the input folder, earlier): outputs too.
    beside = tmp_path / "beside"
    beside.mkdir()
    Image.fromarray(_image(4, 4, seed=3)).save(beside / "b.jpg")
    Image.fromarray(_image(16, 16, seed=3)).save(beside / "b_x4.png")
    third = inference.upscale_files([beside], tmp_path / "elsewhere", x2, progress=False)
    assert [p.name for p in third.written] == ["b_x2.png"]
    assert third.earlier_outputs == [beside / "b_x4.png"]


def _unreadable(monkeypatch, folder: Path) -> None:
    """``folder`` cannot be listed, as for a user without read permission (tests run as root,
    who reads everything)."""
    scandir = os.scandir

    def denied(path="."):
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)


def test_unreadable_folders_are_named_and_exit_1(tmp_path, monkeypatch, capsys):
    src = tmp_path / "in"
    (src / "locked").mkdir(parents=True)
    Image.fromarray(_image(4, 4)).save(src / "good.png")
    Image.fromarray(_image(4, 4)).save(src / "locked" / "hidden.png")
    _unreadable(monkeypatch, src / "locked")
    argv = ["upscale", str(src), "--output", str(tmp_path / "out"), "--model", "bicubic"]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert f"failed {src / 'locked'}: cannot read the folder (Permission denied)" in captured.err
    assert (tmp_path / "out" / "good_x4.png").is_file() and "1 failed" in captured.out
    _unreadable(monkeypatch, src)  # the input folder itself
    assert cli.main([*argv, "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert (
        err.strip().splitlines()[-1].endswith(f"{src}: cannot read the folder (Permission denied)")
    )
    assert "no image files" not in err


def test_animations_and_multi_page_files_say_only_the_first_frame_is_upscaled(tmp_path, capsys):
    frames = [Image.fromarray(_image(4, 4, seed=s)) for s in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:2])
    frames[0].save(tmp_path / "still.png")
    # A folder holds GIFs as a file given alone is one (they were left out of folders).
    summary = inference.upscale_files([tmp_path], tmp_path / "out", "bicubic", progress=False)
    assert len(summary.written) == 3
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note")]
    assert notes == [
        f"note {tmp_path / 'out' / 'anim_x4.png'}: only the first of its 3 frames was upscaled",
        f"note {tmp_path / 'out' / 'pages_x4.png'}: only the first of its 2 frames was upscaled",
    ]


def test_existing_outputs_are_kept_unless_overwrite(tiny, tmp_path):
    Image.fromarray(_image(4, 4)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_x4.png").write_bytes(b"mine")
    summary = _files(tiny, [tmp_path / "a.png"], out)
    assert summary.kept == [out / "a_x4.png"] and (out / "a_x4.png").read_bytes() == b"mine"
    assert "1 kept" in summary.line()
    summary = _files(tiny, [tmp_path / "a.png"], out, overwrite=True)
    assert summary.written == [out / "a_x4.png"] and load_picture(
        out / "a_x4.png"
    ).pixels.shape == (16, 16, 3)


def test_inputs_are_never_overwritten(tiny, tmp_path):
    a = tmp_path / "a.png"
    Image.fromarray(_image(4, 4, seed=1)).save(a)
    b = tmp_path / "a_x4.png"  # a user's own file that happens to be named like an output
    Image.fromarray(_image(4, 4, seed=2)).save(b)
    before = b.read_bytes()
    summary = _files(tiny, [b, a], tmp_path, overwrite=True)
    assert [p.name for p in summary.written] == ["a_x4_x4.png"]
    assert summary.failed[0][0] == a and "would replace an input" in summary.failed[0][1]
    assert b.read_bytes() == before
    summary = _files(tiny, [a], a, overwrite=True)  # output file = input file
    assert summary.written == [] and a.read_bytes() != b"" and len(summary.failed) == 1


def test_single_input_to_an_output_file_name(tiny, tmp_path):
    Image.fromarray(_image(4, 4)).save(tmp_path / "a.png")
    summary = _files(tiny, [tmp_path / "a.png"], tmp_path / "out" / "result.jpg")
    assert summary.written == [tmp_path / "out" / "result.jpg"]
    with Image.open(tmp_path / "out" / "result.jpg") as img:
        assert img.format == "JPEG"
    with pytest.raises(ValueError, match="takes one input image"):
        _files(tiny, [tmp_path / "a.png", tmp_path / "a.png"], tmp_path / "r.png")
    with pytest.raises(ValueError, match="does not match"):
        _files(tiny, [tmp_path / "a.png"], tmp_path / "r.png", image_format="jpg")


@pytest.mark.parametrize("image_format", ["png", "jpg"])
def test_a_failed_write_leaves_no_partial_file(tiny, tmp_path, monkeypatch, image_format):
    Image.fromarray(_image(4, 4)).save(tmp_path / "a.png")

    def broken(first, *args, **kwargs):  # _write_png(handle, …) or Image.save(self, handle, …)
        handle = first if image_format == "png" else args[0]
        handle.write(b"half")
        raise OSError("disk full")

    if image_format == "png":  # our own writer
        monkeypatch.setattr(images, "_write_png", broken)
    else:  # PIL's
        monkeypatch.setattr(Image.Image, "save", broken)
    summary = _files(tiny, [tmp_path / "a.png"], tmp_path / "out", image_format=image_format)
    assert "disk full" in summary.failed[0][1]
    assert list((tmp_path / "out").iterdir()) == []


def test_progress_bars_over_images_and_tiles(tiny, tmp_path, capsys):
    Image.fromarray(_image(40, 40)).save(tmp_path / "a.png")
    inference.upscale_files([tmp_path / "a.png"], tmp_path / "o", tiny[0], tile=16, tile_overlap=4)
    err = capsys.readouterr().err
    assert "upscale" in err and "tiles" in err


# --- drn-tf upscale -----------------------------------------------------------------------------


def test_cli_defaults_mirror_the_library():
    config = cli.UpscaleConfig()
    assert (config.tile, config.tile_overlap) == (
        inference.DEFAULT_TILE,
        inference.DEFAULT_TILE_OVERLAP,
    )
    assert tuple(FORMAT_SUFFIXES) == cli._UPSCALE_FORMATS
    from drn_tf.images import IMAGE_EXTENSIONS

    assert set(cli._IMAGE_SUFFIXES) == set(IMAGE_EXTENSIONS)
    assert precision.UPSCALE_PRECISIONS == ("auto", "float32", "bfloat16")


@needs_data
def test_cli_and_api_give_the_same_pixels(tiny, tmp_path):
    source = tmp_path / "comic.jpg"  # a real photo as users have them: a JPEG, cropped
    Image.open(SHARED / "Set14" / "HR" / "comic.png").crop((40, 60, 160, 150)).save(source)
    argv = ["upscale", str(source), "--output", str(tmp_path / "o"), "--model", str(tiny[1])]
    argv += ["--runtime", "keras"]  # the API's default; other runtimes: tests/test_runtimes.py
    assert cli.main([*argv, "--tile", "48", "--tile-overlap", "12", "--self-ensemble"]) == 0
    api = drn_tf.upscale(
        load_picture(source).pixels, tiny[0], tile=48, tile_overlap=12, self_ensemble=True
    )
    np.testing.assert_array_equal(load_picture(tmp_path / "o" / "comic_x4.png").pixels, api)


def test_cli_bicubic_model(tmp_path):
    image = _image(7, 9)
    Image.fromarray(image).save(tmp_path / "a.png")
    assert (
        cli.main(
            [
                "upscale",
                str(tmp_path / "a.png"),
                "--output",
                str(tmp_path / "o"),
                "--model",
                "bicubic",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(
        load_picture(tmp_path / "o" / "a_x4.png").pixels, imresize(image, 4)
    )


def test_cli_failures_exit_1_with_a_summary(tiny, tmp_path, capsys):
    Image.fromarray(_image(4, 4)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"junk")
    argv = ["upscale", str(tmp_path), "--output", str(tmp_path / "o"), "--model", str(tiny[1])]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == f"wrote 1 image(s) to {tmp_path / 'o'}; 1 failed"
    lines = captured.err.strip().splitlines()
    assert any(line.startswith(f"failed {tmp_path / 'bad.png'}: not an image") for line in lines)
    assert lines[-1] == "drn-tf upscale: error: 1 of 2 image(s) failed (listed above)"
    assert cli.main(argv) == 1  # the good one is kept now, the bad one still fails
    assert "1 kept" in capsys.readouterr().out


def test_cli_out_of_memory_is_reported_per_file(tiny, tmp_path, monkeypatch, capsys):
    def exhausted(model, policy):
        def run(tiles):
            raise tf.errors.ResourceExhaustedError(None, None, "OOM")

        return run

    monkeypatch.setattr(inference, "_runner", exhausted)
    Image.fromarray(_image(40, 30)).save(tmp_path / "a.png")
    argv = [
        "upscale",
        str(tmp_path / "a.png"),
        "--output",
        str(tmp_path / "o"),
        "--runtime",
        "keras",
    ]
    assert cli.main([*argv, "--model", str(tiny[1]), "--tile", "16", "--tile-overlap", "4"]) == 1
    err = capsys.readouterr().err
    assert "out of memory upscaling a 30x40 image in tiles of 16 pixels" in err
    assert "--tile 32" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tile", "-1"], "--tile must be 0"),
        (["--tile", "64", "--tile-overlap", "17"], "--tile-overlap 17 is more than a quarter of"),
        (["--tile", "1"], "--tile-overlap 16 is more than a quarter of --tile 1: give a --tile"),
        (["--tile-overlap", "-1"], "--tile-overlap must be 0 or more, got -1"),
        (["--precision", "float16"], "--precision"),
        (["--format", "gif"], "--format"),
    ],
)
def test_cli_bad_flags_are_usage_errors(tmp_path, capsys, flags, message):
    Image.fromarray(_image(4, 4)).save(tmp_path / "a.png")
    assert (
        cli.main(["upscale", str(tmp_path / "a.png"), "--output", str(tmp_path / "o"), *flags]) == 2
    )
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".bmp", ".gif", ".BMP"])
def test_an_output_file_of_a_format_not_written_is_refused(tmp_path, capsys, suffix):
    Image.fromarray(_image(4, 4)).save(tmp_path / "a.png")
    output = tmp_path / "out" / f"x{suffix}"
    argv = ["upscale", str(tmp_path / "a.png"), "--output", str(output), "--model", "bicubic"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"--output {output}: upscale writes .png, .jpg, .webp or .tif files, not" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=f"not \\{suffix}"):
        inference.upscale_files([tmp_path / "a.png"], output, "bicubic", progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_output_file_name_takes_one_image(tmp_path, capsys):
    Image.fromarray(_image(4, 4)).save(tmp_path / "a.png")
    argv = ["upscale", str(tmp_path), "--output", str(tmp_path / "result.png")]
    assert cli.main(argv) == 2
    assert "names an image file" in capsys.readouterr().err
    assert not (tmp_path / "result.png").exists()


def test_cli_help_lists_the_upscale_flags(capsys):
    assert cli.main(["upscale", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--tile",
        "--tile-overlap",
        "--self-ensemble",
        "--precision",
        "--format",
        "--overwrite",
    ):
        assert flag in out
    assert "bicubic" in out and "{auto,float32,bfloat16}" in out


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable files")
def test_unreadable_file_is_reported(tiny, tmp_path):
    Image.fromarray(_image(4, 4)).save(tmp_path / "a.png")
    (tmp_path / "a.png").chmod(0)
    summary = _files(tiny, [tmp_path / "a.png"], tmp_path / "o")
    assert "cannot open" in summary.failed[0][1]
