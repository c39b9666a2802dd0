"""Tests for drn_tf.images: decoding every format and mode to RGB uint8, atomic writes, finding
images in folders."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps
from sample_images import noise, save, smooth

from drn_tf.images import ImageReadError, find_images, read_image, write_image
from drn_tf.training_images import load_pyramids


def expected_16_to_8(values: np.ndarray) -> np.ndarray:
    return np.floor(values.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)


@pytest.mark.parametrize(
    ("suffix", "options"),
    [
        (".png", {}),
        (".bmp", {}),
        (".tif", {}),
        (".tiff", {"compression": "tiff_lzw"}),
        (".webp", {"lossless": True}),
    ],
)
def test_read_lossless_formats_exact(tmp_path, suffix, options):
    image = noise(13, 17)
    out = read_image(save(image, tmp_path / f"a{suffix}", **options))
    assert out.dtype == np.uint8 and out.shape == (13, 17, 3)
    assert out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("suffix", [".jpg", ".JPEG", ".webp"])
def test_read_lossy_formats(tmp_path, suffix):
    image = smooth(32, 48)
    out = read_image(save(image, tmp_path / f"a{suffix}", quality=95))
    assert out.dtype == np.uint8 and out.shape == (32, 48, 3)
    assert np.abs(out.astype(int) - image).mean() < 3


def test_read_gray_bilevel_palette_cmyk(tmp_path):
    gray = noise(9, 11)[..., 0]
    out = read_image(save(gray, tmp_path / "l.png"))
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, -1))

    bilevel = Image.fromarray(gray).convert("1")
    out = read_image(save(bilevel, tmp_path / "bw.png"))
    assert set(np.unique(out)) <= {0, 255}
    np.testing.assert_array_equal(out[..., 0], np.asarray(bilevel.convert("L")))

    palette = Image.fromarray(noise(9, 11)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out = read_image(save(palette, tmp_path / "p.png"))
    np.testing.assert_array_equal(out, np.asarray(palette.convert("RGB")))

    cmyk = Image.fromarray(noise(9, 11)).convert("CMYK")
    out = read_image(save(cmyk, tmp_path / "cmyk.tif"))
    np.testing.assert_array_equal(out, np.asarray(cmyk.convert("RGB")))
    out = read_image(save(Image.fromarray(smooth(16, 16)).convert("CMYK"), tmp_path / "c.jpg"))
    assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - smooth(16, 16)).mean() < 4

    gif = read_image(save(palette, tmp_path / "p.gif"))
    np.testing.assert_array_equal(gif, np.asarray(palette.convert("RGB")))


def test_read_alpha_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = [[[10, 20, 30]]]
    rgba[0, :, 3] = [0, 128, 255]
    rgba[1, :, 3] = 255
    out = read_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"))
    alpha = rgba[..., 3:].astype(np.float64) / 255
    expected = np.floor(rgba[..., :3] * alpha + 255 * (1 - alpha) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert (out[0, 0] == 255).all()  # fully transparent -> white, not the hidden colour

    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    out = read_image(save(la, tmp_path / "la.png"))
    assert (out[0, 0] == 255).all() and (out[1, 0] == 10).all()

    indices = np.array([[0, 1], [1, 0]], np.uint8)
    palette = Image.frombytes("P", (2, 2), indices.tobytes())
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    out = read_image(save(palette, tmp_path / "pt.png", transparency=0))
    np.testing.assert_array_equal(out[indices == 0], 255)
    np.testing.assert_array_equal(out[indices == 1], [[200, 100, 50]] * 2)


def test_read_16bit_scales_instead_of_truncating_or_clipping(tmp_path):
    # 129 -> 1 (high byte would give 0), 300 -> 1 (clipping would give 255).
    values = np.array([[0, 128, 129, 300, 32896, 65407, 65535, 1000]], np.uint16)
    expected = expected_16_to_8(values)
    assert expected[0, 2] == 1 and expected[0, 3] == 1

    gray16 = Image.fromarray(values)
    for name in ("g16.png", "g16.tif"):
        path = save(gray16, tmp_path / name)
        assert Image.open(path).mode.startswith("I;16")
        np.testing.assert_array_equal(read_image(path), np.repeat(expected[..., None], 3, -1))

    # 32-bit "I" TIFF: treated as 16-bit data.
    path = save(Image.fromarray(values.astype(np.int32)), tmp_path / "i32.tif")
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(read_image(path)[..., 0], expected)

    # 48-bit RGB and 64-bit RGBA PNGs (PIL alone keeps only the high byte).
    rgb16 = np.stack([values, values[:, ::-1], np.full_like(values, 257 * 7 + 100)], -1)
    path = tmp_path / "rgb48.png"
    path.write_bytes(tf.io.encode_png(tf.constant(rgb16)).numpy())
    np.testing.assert_array_equal(read_image(path), expected_16_to_8(rgb16))

    rgba16 = np.concatenate([rgb16, np.full_like(rgb16[..., :1], 65535)], -1)
    rgba16[0, 0, 3] = 0
    path = tmp_path / "rgba64.png"
    path.write_bytes(tf.io.encode_png(tf.constant(rgba16)).numpy())
    out = read_image(path)
    np.testing.assert_array_equal(out[0, 0], 255)
    np.testing.assert_array_equal(out[0, 1:], expected_16_to_8(rgb16)[0, 1:])


def test_read_float_tiff(tmp_path):
    values = np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)
    out = read_image(save(Image.fromarray(values), tmp_path / "f.tif"))
    np.testing.assert_array_equal(out[0, :, 0], [0, 64, 128, 255])


def test_read_exif_rotated_jpeg(tmp_path):
    # Stored 40 wide x 20 high, left half red. Orientation 6 = display rotated 90 deg clockwise,
    # so the viewer sees 20 wide x 40 high with the red half on top.
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20] = [255, 0, 0]
    image[:, 20:] = [0, 0, 255]
    exif = Image.Exif()
    exif[0x0112] = 6
    out = read_image(save(image, tmp_path / "rot.jpg", exif=exif, quality=95))
    assert out.shape == (40, 20, 3)
    assert out[:18, :, 0].mean() > 240 and out[:18, :, 2].mean() < 15
    assert out[22:, :, 2].mean() > 240 and out[22:, :, 0].mean() < 15


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil_exif_transpose(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(noise(5, 7), tmp_path / "o.png", exif=exif)
    with Image.open(path) as img:
        expected = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    np.testing.assert_array_equal(read_image(path), expected)


def test_read_errors_are_clear(tmp_path):
    good = save(noise(64, 64), tmp_path / "good.png")
    truncated_png = tmp_path / "truncated.png"
    truncated_png.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    jpeg = save(noise(64, 64), tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "text.png").write_text("this is not an image\n")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()

    cases = {
        "missing.png": "does not exist",
        "folder.png": "not a regular file",
        "text.png": "not an image",
        "truncated.png": "truncated or corrupt",
        "truncated.jpg": "truncated or corrupt",
    }
    for name, words in cases.items():
        with pytest.raises(ImageReadError, match=words) as info:
            read_image(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
        assert isinstance(info.value, ValueError)


def test_empty_file_says_so(tmp_path):
    # A zero-byte file is a failed copy, whatever its suffix; PIL alone calls it "not an image".
    for name in ("empty.png", "empty.jpg"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(ImageReadError) as info:
            read_image(tmp_path / name)
        assert str(info.value) == f"{tmp_path / name}: empty file"
    # Training skips it with the same reason (beside its path, not after it again).
    save(noise(32, 32), tmp_path / "good.png")
    _, skipped = load_pyramids(tmp_path, 2, min_size=16, progress=False)
    assert {(p.name, r) for p, r in skipped} == {
        (name, "empty file") for name in ("empty.png", "empty.jpg")
    }


def test_a_very_large_image_is_named_in_the_warning(tmp_path, monkeypatch):
    # PIL warns above MAX_IMAGE_PIXELS (and refuses above twice that) without naming the file.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = save(noise(10, 12), tmp_path / "photo.png")
    with pytest.warns(Image.DecompressionBombWarning) as record:
        image = read_image(path)
    np.testing.assert_array_equal(image, noise(10, 12))
    assert [str(w.message) for w in record] == [
        f"{path}: very large image (12x10, 0.0 megapixels; PIL warns above 0.0): "
        "decoding it takes much memory"
    ]
    big = save(noise(15, 15), tmp_path / "big.png")
    with pytest.raises(ImageReadError, match=f"^{re.escape(str(big))}: image too large"):
        read_image(big)


def test_write_image_roundtrip_and_atomic(tmp_path, monkeypatch):
    image = noise(10, 12)
    target = tmp_path / "sub" / "out.png"
    write_image(target, image)
    np.testing.assert_array_equal(read_image(target), image)
    write_image(tmp_path / "out.jpg", image)
    assert read_image(tmp_path / "out.jpg").shape == (10, 12, 3)

    # A failing encoder leaves the previous file intact and no temp file behind.
    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_image(target, noise(10, 12, seed=1))
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(target), image)
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]

    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "x.png", image.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        write_image(tmp_path / "x.png", image[..., 0])
    with pytest.raises(ValueError, match="extension"):
        write_image(tmp_path / "x.unknown", image)


def test_find_images(tmp_path):
    for rel in ["b.PNG", "a.jpg", "sub/c.JpEg", "sub/deep/d.webp", "e.tiff", "f.bmp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    for rel in ["notes.txt", "._a.png", ".hidden/x.png", "sub/cache.npz"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a.jpg", "b.PNG", "e.tiff", "f.bmp", "sub/c.JpEg", "sub/deep/d.webp"]
    top = [p.name for p in find_images(tmp_path, recursive=False)]
    assert top == ["a.jpg", "b.PNG", "e.tiff", "f.bmp"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_images(tmp_path / "nowhere")


def test_find_images_names_unreadable_folders(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    (tmp_path / "a.gif").write_bytes(b"")  # read_image reads GIFs: folders hold them too
    (tmp_path / "locked" / "b.png").write_bytes(b"")
    scandir = os.scandir

    def denied(path="."):  # tests run as root, who reads everything
        if Path(path) == tmp_path / "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    reason = "cannot read the folder (Permission denied)"
    with pytest.raises(OSError, match=f"^{tmp_path / 'locked'}: {re.escape(reason)}$"):
        find_images(tmp_path)  # train, evaluate, degrade: an error, not silently fewer images
    unreadable: list[tuple[Path, str]] = []
    assert find_images(tmp_path, unreadable=unreadable) == [tmp_path / "a.gif"]
    assert unreadable == [(tmp_path / "locked", reason)]
    (tmp_path / "locked" / "b.png").unlink()
    with pytest.raises(OSError, match=f"^{tmp_path / 'locked'}: "):
        find_images(tmp_path / "locked", unreadable=[])  # the folder given: always an error
