"""Tests for drn_tf.pictures: images kept as the user's file holds them (gray, alpha, 16 bits,
ICC profile), read and written back in every output format, and the TIFF LZW decoder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageCms

from drn_tf.pictures import FORMAT_SUFFIXES, Picture, _lzw_decode, load_picture, save_picture

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _image(height: int, width: int, channels: int = 3, dtype=np.uint8, seed: int = 0):
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top + 1, (height, width, channels), dtype)


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


def test_a_very_large_picture_is_named_in_the_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "scan.tif"
    save_picture(path, Picture(_image(10, 12, dtype=np.uint16)))
    with pytest.warns(Image.DecompressionBombWarning) as record:
        picture = load_picture(path)
    assert picture.pixels.shape == (10, 12, 3)
    assert [str(w.message) for w in record] == [
        f"{path}: very large image (12x10, 0.0 megapixels; PIL warns above 0.0): "
        "decoding it takes much memory"
    ]
