"""Tests for the data layer: images (decoding), image_sets (pyramids, cache, eval pairs) and data
(aligned/augmented patches, tf.data pipelines)."""

from __future__ import annotations

import ast
import os
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

import drn_tf
from drn_tf import data, degrade
from drn_tf.image_sets import (
    Pyramid,
    compute_pyramid_levels,
    load_eval_pairs,
    load_lr_images,
    load_pyramids,
    pyramid_factors,
    write_degraded_set,
)
from drn_tf.images import ImageReadError, find_images, read_image, write_image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SET5 = SHARED_DATA / "benchmark" / "Set5"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth(height: int, width: int) -> np.ndarray:
    """A gradient image: lossy codecs keep it within a few levels."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), 128 + 0 * x], -1)
    return image.astype(np.uint8)


def save(image: np.ndarray | Image.Image, path: Path, **options) -> Path:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8))
    image.save(path, **options)
    return path


def expected_16_to_8(values: np.ndarray) -> np.ndarray:
    return np.floor(values.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)


def block_mean_pyramid(hr: np.ndarray, scale: int) -> Pyramid:
    """Levels = rounded k x k block means of HR: a pyramid whose alignment is checkable by hand."""
    levels = []
    for factor in pyramid_factors(scale):
        h, w = hr.shape[0] // factor, hr.shape[1] // factor
        blocks = hr.reshape(h, factor, w, factor, 3).astype(np.float64).mean(axis=(1, 3))
        levels.append(np.floor(blocks + 0.5).astype(np.uint8))
    return Pyramid(path=Path("synthetic"), scale=scale, levels=tuple(levels))


# The 8 dihedral transforms as (hflip, vflip, transpose), applied in the pipeline's order.
DIHEDRAL = [(h, v, t) for h in (False, True) for v in (False, True) for t in (False, True)]


def dihedral(a: np.ndarray, flags: tuple[bool, bool, bool]) -> np.ndarray:
    hflip, vflip, transpose = flags
    if hflip:
        a = a[:, ::-1]
    if vflip:
        a = a[::-1]
    if transpose:
        a = a.transpose(1, 0, 2)
    return a


def dihedral_inverse(a: np.ndarray, flags: tuple[bool, bool, bool]) -> np.ndarray:
    hflip, vflip, transpose = flags
    if transpose:
        a = a.transpose(1, 0, 2)
    if vflip:
        a = a[::-1]
    if hflip:
        a = a[:, ::-1]
    return a


# --------------------------------------------------------------------------------------------
# read_image / write_image / find_images
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# pyramids
# --------------------------------------------------------------------------------------------


def test_pyramid_factors():
    assert pyramid_factors(2) == (2, 1)
    assert pyramid_factors(4) == (4, 2, 1)
    assert pyramid_factors(8) == (8, 4, 2, 1)
    for bad in (1, 3, 6, 0):
        with pytest.raises(ValueError, match="power of two"):
            pyramid_factors(bad)


@pytest.mark.parametrize("scale", [4, 8])
def test_pyramid_levels_are_direct_imresize_of_modcropped_hr(tmp_path, scale):
    hr = noise(70, 53)  # not a multiple of the scale: exercises modcrop
    save(hr, tmp_path / "img.png")
    pyramids, skipped = load_pyramids(tmp_path, scale, min_size=32, progress=False)
    assert skipped == [] and len(pyramids) == 1
    pyramid = pyramids[0]
    cropped = degrade.modcrop(hr, scale)
    np.testing.assert_array_equal(pyramid.hr, cropped)
    for factor in pyramid_factors(scale)[:-1]:
        np.testing.assert_array_equal(pyramid.level(factor), degrade.imresize(cropped, 1 / factor))
    assert pyramid.lr.shape == (70 // scale, 53 // scale, 3)


def test_load_pyramids_skips_bad_images_with_reasons(tmp_path, caplog):
    save(noise(40, 48), tmp_path / "a_good.png")
    save(noise(48, 40, seed=1), tmp_path / "b_good.bmp")
    save(noise(30, 64), tmp_path / "c_small.png")
    good_bytes = (tmp_path / "a_good.png").read_bytes()
    (tmp_path / "d_truncated.png").write_bytes(good_bytes[: len(good_bytes) // 2])
    (tmp_path / "e_text.png").write_text("hello")

    pyramids, skipped = load_pyramids(tmp_path, 4, min_size=32, progress=False)
    assert [p.path.name for p in pyramids] == ["a_good.png", "b_good.bmp"]
    reasons = {path.name: reason for path, reason in skipped}
    assert list(reasons) == ["c_small.png", "d_truncated.png", "e_text.png"]
    assert "too small" in reasons["c_small.png"] and "min_size 32" in reasons["c_small.png"]
    assert "truncated or corrupt" in reasons["d_truncated.png"]
    assert "not an image" in reasons["e_text.png"]
    assert "skipped 3 of 5" in caplog.text


def test_load_pyramids_folder_without_usable_image_raises(tmp_path):
    bad = tmp_path / "all_bad"
    bad.mkdir()
    (bad / "x.png").write_text("nope")
    save(noise(8, 8), bad / "tiny.png")
    good = tmp_path / "good"
    good.mkdir()
    save(noise(32, 32), good / "ok.png")
    with pytest.raises(ValueError, match=r"no usable training image in .*all_bad.*not an image"):
        load_pyramids([good, bad], 2, min_size=16, progress=False)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"no image files .* found in .*empty"):
        load_pyramids(empty, 2, min_size=16, progress=False)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_pyramids(tmp_path / "missing", 2, min_size=16, progress=False)


def test_cache_roundtrip(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        save(noise(40, 36, seed=i), images / f"{i}.png")
    cache = tmp_path / "cache"

    calls = []
    real_imresize = degrade.imresize

    def counting_imresize(*args, **kwargs):
        calls.append(1)
        return real_imresize(*args, **kwargs)

    monkeypatch.setattr(degrade, "imresize", counting_imresize)
    first, _ = load_pyramids(images, 4, 16, cache_dir=cache, progress=False)
    assert len(calls) == 3 * 2  # X4 and X2 per image
    cached = sorted(cache.iterdir())
    assert len(cached) == 3 and all(p.suffix == ".npz" for p in cached)

    def forbidden(*args, **kwargs):
        raise AssertionError("imresize must not run on a cache hit")

    monkeypatch.setattr(degrade, "imresize", forbidden)
    second, _ = load_pyramids(images, 4, 16, cache_dir=cache, progress=False)
    for a, b in zip(first, second, strict=True):
        for level_a, level_b in zip(a.levels, b.levels, strict=True):
            np.testing.assert_array_equal(level_a, level_b)

    # A changed file (mtime) and a corrupt cache entry are both recomputed, not trusted.
    calls.clear()
    monkeypatch.setattr(degrade, "imresize", counting_imresize)
    stat = (images / "0.png").stat()
    os.utime(images / "0.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    load_pyramids(images, 4, 16, cache_dir=cache, progress=False)
    assert len(calls) == 2
    calls.clear()
    for path in cache.iterdir():
        path.write_bytes(b"garbage")
    load_pyramids(images, 4, 16, cache_dir=cache, progress=False)
    assert len(calls) == 3 * 2
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(not SET5.is_dir(), reason="shared Set5 not available")
@pytest.mark.parametrize("scale", [4, 8])
def test_benchmark_layout_reads_official_lr_files(monkeypatch, scale):
    def forbidden(*args, **kwargs):
        raise AssertionError("official LR files must be read, not recomputed")

    monkeypatch.setattr(degrade, "imresize", forbidden)
    pyramids, skipped = load_pyramids(SET5, scale, min_size=64, progress=False)
    names = [p.path.stem for p in pyramids]
    assert names == ["baby", "bird", "butterfly", "head", "woman"] and skipped == []
    for pyramid in pyramids:
        hr = read_image(pyramid.path)
        np.testing.assert_array_equal(pyramid.hr, degrade.modcrop(hr, scale))
        for factor in pyramid_factors(scale)[:-1]:
            official = read_image(
                SET5 / "LR_bicubic" / f"X{factor}" / f"{pyramid.path.stem}x{factor}.png"
            )
            level = pyramid.level(factor)
            # Official X{k} is floor(HR / k); the pyramid keeps its top-left HR_s / k part.
            assert level.shape[:2] == (pyramid.hr.shape[0] // factor, pyramid.hr.shape[1] // factor)
            np.testing.assert_array_equal(level, official[: level.shape[0], : level.shape[1]])
    woman = pyramids[-1]  # 228 wide: not a multiple of 8, so X2/X4 are cropped at x8
    if scale == 8:
        assert woman.hr.shape[1] == 224 and woman.level(4).shape[1] == 56


def test_benchmark_layout_incomplete_falls_back_to_hr(tmp_path):
    (tmp_path / "HR").mkdir()
    (tmp_path / "LR_bicubic" / "X2").mkdir(parents=True)
    hr = noise(32, 40)
    save(hr, tmp_path / "HR" / "a.png")
    save(noise(16, 20, seed=9), tmp_path / "LR_bicubic" / "X2" / "ax2.png")
    pyramids, skipped = load_pyramids(tmp_path, 4, 16, progress=False)
    assert len(pyramids) == 1 and skipped == []  # LR files are not mistaken for HR images
    np.testing.assert_array_equal(pyramids[0].level(2), degrade.imresize(hr, 1 / 2))


# --------------------------------------------------------------------------------------------
# training dataset
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "patch"), [(2, 16), (4, 32), (8, 32)])
def test_train_batches_structure(scale, patch):
    pyramids = [block_mean_pyramid(noise(64, 72, seed=i), scale) for i in range(3)]
    dataset = data.make_train_dataset(pyramids, scale, patch, batch_size=5, seed=0)
    inputs, targets = next(iter(dataset))
    assert inputs.dtype == tf.float32 and inputs.shape == (5, patch // scale, patch // scale, 3)
    factors = pyramid_factors(scale)[1:]
    assert isinstance(targets, tuple) and len(targets) == len(factors)
    for target, factor in zip(targets, factors, strict=True):
        assert target.dtype == tf.float32 and target.shape == (
            5,
            patch // factor,
            patch // factor,
            3,
        )
    for tensor in (inputs, *targets):
        values = tensor.numpy()
        assert values.min() >= 0 and values.max() <= 255
        np.testing.assert_array_equal(values, np.round(values))
    spec_inputs, spec_targets = dataset.element_spec
    assert spec_inputs.shape == (5, patch // scale, patch // scale, 3)
    assert dataset.cardinality() == tf.data.INFINITE_CARDINALITY


@pytest.mark.parametrize(("scale", "augment"), [(4, True), (8, True), (4, False)])
def test_crops_are_aligned_and_identically_augmented(scale, augment):
    patch = 32
    hrs = [noise(64, 80, seed=10 + i) for i in range(2)]
    pyramids = [block_mean_pyramid(hr, scale) for hr in hrs]
    # Index every HR pixel by its colour to locate a crop in O(1); noise makes them ~unique.
    where = []
    for hr in hrs:
        codes = (hr.astype(np.int64) << [16, 8, 0]).sum(-1)
        index: dict[int, list[tuple[int, int]]] = {}
        for (y, x), code in np.ndenumerate(codes):
            index.setdefault(int(code), []).append((y, x))
        where.append(index)

    dataset = data.make_train_dataset(
        pyramids, scale, patch, batch_size=16, seed=3, augment=augment
    )
    factors = pyramid_factors(scale)
    seen_transforms = set()
    for inputs, targets in dataset.take(4):
        batch = [inputs.numpy(), *(t.numpy() for t in targets)]
        for i in range(batch[0].shape[0]):
            levels = [b[i].astype(np.uint8) for b in batch]
            matches = []
            for number, hr in enumerate(hrs):
                for flags in DIHEDRAL:
                    crop = dihedral_inverse(levels[-1], flags)
                    code = int((crop[0, 0].astype(np.int64) << [16, 8, 0]).sum())
                    for y, x in where[number].get(code, []):
                        if np.array_equal(hr[y : y + patch, x : x + patch], crop):
                            matches.append((number, flags, y, x))
            assert len(matches) >= 1, "HR patch is not a (transformed) crop of any HR image"
            number, flags, y, x = matches[0]
            assert y % scale == 0 and x % scale == 0, "crop origin must be a multiple of the scale"
            seen_transforms.add(flags)
            for level, factor, source in zip(levels, factors, pyramids[number].levels, strict=True):
                size = patch // factor
                expected = source[
                    y // factor : y // factor + size, x // factor : x // factor + size
                ]
                np.testing.assert_array_equal(level, dihedral(expected, flags))
                # Independent check: the LR patch is the block mean of the (transformed) HR patch.
                hr_patch = dihedral(hrs[number][y : y + patch, x : x + patch], flags)
                mean = hr_patch.reshape(size, factor, size, factor, 3).mean(axis=(1, 3))
                assert np.abs(level - mean).max() <= 0.5
    if augment:
        assert len(seen_transforms) >= 6, seen_transforms
    else:
        assert seen_transforms == {(False, False, False)}


def test_crop_origins_cover_every_aligned_position():
    # HR pixel (y, x) holds (y, x, 0), so a patch's first pixel is its origin.
    scale, patch, height, width = 4, 16, 48, 40
    y, x = np.mgrid[0:height, 0:width]
    hr = np.stack([y, x, 0 * y], -1).astype(np.uint8)
    pyramid = Pyramid(path=Path("grid"), scale=scale, levels=compute_pyramid_levels(hr, scale))
    dataset = data.make_train_dataset(
        [pyramid], scale, patch, batch_size=500, seed=5, augment=False
    )
    corners = np.concatenate([t[-1].numpy()[:, 0, 0, :2] for _, t in dataset.take(4)]).astype(int)
    assert (corners % scale == 0).all()
    ys, ycounts = np.unique(corners[:, 0], return_counts=True)
    xs, xcounts = np.unique(corners[:, 1], return_counts=True)
    np.testing.assert_array_equal(ys, np.arange(0, height - patch + 1, scale))
    np.testing.assert_array_equal(xs, np.arange(0, width - patch + 1, scale))
    # 2000 draws over 9 (7) positions: every count is far from 0 if the draw is uniform.
    assert ycounts.min() > 2000 / len(ys) / 2 and xcounts.min() > 2000 / len(xs) / 2


def test_train_dataset_seed_is_reproducible():
    pyramids = [block_mean_pyramid(noise(64, 64, seed=i), 4) for i in range(4)]

    def first_batch(seed):
        inputs, _ = next(iter(data.make_train_dataset(pyramids, 4, 32, batch_size=8, seed=seed)))
        return inputs.numpy()

    np.testing.assert_array_equal(first_batch(7), first_batch(7))
    assert not np.array_equal(first_batch(7), first_batch(8))


def test_train_dataset_rejects_bad_arguments():
    pyramid = block_mean_pyramid(noise(32, 48), 4)
    with pytest.raises(ValueError, match="multiple of scale"):
        data.make_train_dataset([pyramid], 4, 30, batch_size=2)
    with pytest.raises(ValueError, match="smaller than patch_size"):
        data.make_train_dataset([pyramid], 4, 40, batch_size=2)
    with pytest.raises(ValueError, match="needs 4 levels"):
        data.make_train_dataset([pyramid], 8, 16, batch_size=2)
    with pytest.raises(ValueError, match="at least one"):
        data.make_train_dataset([], 4, 16, batch_size=2)


def test_train_dataset_with_distribution_strategy_and_fit():
    import keras

    scale, patch = 4, 16
    pyramids = [block_mean_pyramid(noise(32, 32, seed=i), scale) for i in range(3)]
    dataset = data.make_train_dataset(pyramids, scale, patch, batch_size=4, seed=1)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    inputs, targets = next(iter(strategy.experimental_distribute_dataset(dataset)))
    assert inputs.shape == (4, 4, 4, 3) and targets[-1].shape == (4, 16, 16, 3)

    with strategy.scope():
        lr = keras.Input((None, None, 3))
        x2 = keras.layers.Conv2D(3, 1)(keras.layers.UpSampling2D(2)(lr))
        x4 = keras.layers.Conv2D(3, 1)(keras.layers.UpSampling2D(4)(lr))
        model = keras.Model(lr, [x2, x4])
        model.compile(optimizer="sgd", loss="mae")
    history = model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SET5.is_dir(), reason="shared Set5 not available")
def test_eval_pairs_and_dataset_on_set5():
    pairs = load_eval_pairs(SET5, 4)
    assert [name for name, _, _ in pairs] == ["baby", "bird", "butterfly", "head", "woman"]
    for name, lr, hr in pairs:
        np.testing.assert_array_equal(lr, read_image(SET5 / "LR_bicubic/X4" / f"{name}x4.png"))
        np.testing.assert_array_equal(
            hr, degrade.modcrop(read_image(SET5 / "HR" / f"{name}.png"), 4)
        )
    # The official X2-X4 files are MATLAB-exact: the computed path must agree with them.
    np.testing.assert_array_equal(degrade.imresize(pairs[1][2], 1 / 4), pairs[1][1])

    batches = list(data.make_eval_dataset(SET5, 4))
    assert len(batches) == 5
    lr, hr = batches[-1]
    assert lr.dtype == tf.float32 and hr.dtype == tf.float32
    assert lr.shape == (1, 344 // 4, 228 // 4, 3) and hr.shape == (1, 344, 228, 3)


def test_eval_pairs_plain_folder_computes_lr(tmp_path):
    (tmp_path / "nested").mkdir()
    hr = noise(31, 25)
    save(hr, tmp_path / "nested" / "img.png")
    [(name, lr, hr_out)] = load_eval_pairs(tmp_path, 3)
    assert name == "nested/img"
    np.testing.assert_array_equal(hr_out, hr[:30, :24])
    np.testing.assert_array_equal(lr, degrade.imresize(hr[:30, :24], 1 / 3))
    (tmp_path / "nested" / "bad.png").write_text("x")
    with pytest.raises(ImageReadError, match="bad.png"):
        load_eval_pairs(tmp_path, 3)


def test_eval_pairs_skip_bad_images_only_when_asked(tmp_path):
    save(noise(40, 44), tmp_path / "a_ok.png")
    save(noise(5, 6), tmp_path / "b_tiny.png")  # 6x5: modcrop at x4 leaves 4x4
    save(noise(18, 30), tmp_path / "c_small.png")  # 30x18: modcrop leaves 16 rows < 19
    (tmp_path / "d_empty.png").write_bytes(b"")

    skipped: list[tuple[Path, str]] = []
    pairs = load_eval_pairs(tmp_path, 4, min_size=19, skipped=skipped)
    assert [name for name, _, _ in pairs] == ["a_ok"]
    reasons = {path.name: reason for path, reason in skipped}
    assert list(reasons) == ["b_tiny.png", "c_small.png", "d_empty.png"]
    assert reasons["b_tiny.png"] == "too small: 6x5 (WxH), x4 needs 20x20"
    assert reasons["c_small.png"] == "too small: 30x18 (WxH), x4 needs 20x20"
    assert reasons["d_empty.png"] == "empty file"

    # Without a list to report to, the first bad image is an error that names it.
    with pytest.raises(ValueError, match=r"b_tiny\.png: too small: 6x5 \(WxH\), x4 needs 20x20"):
        load_eval_pairs(tmp_path, 4, min_size=19)
    with pytest.raises(ImageReadError, match=r"d_empty\.png: empty file"):
        load_eval_pairs(tmp_path, 4)  # the default min_size: 6x5 gives a 1x1 LR, usable
    (tmp_path / "a_ok.png").unlink()
    with pytest.raises(ValueError, match=r"no usable image in .*all 3 skipped: b_tiny\.png"):
        load_eval_pairs(tmp_path, 4, min_size=19, skipped=[])


def test_eval_pairs_benchmark_layout_fallbacks(tmp_path, caplog):
    hr = {name: noise(24, 28, seed=i) for i, name in enumerate("abc")}
    (tmp_path / "HR").mkdir()
    for name, image in hr.items():
        save(image, tmp_path / "HR" / f"{name}.png")
    (tmp_path / "LR_bicubic" / "X4").mkdir(parents=True)
    official = noise(6, 7, seed=9)  # not imresize(hr): shows which one was used
    save(official, tmp_path / "LR_bicubic" / "X4" / "ax4.png")
    save(noise(5, 7), tmp_path / "LR_bicubic" / "X4" / "bx4.png")  # wrong size
    # c has no official file although X4 exists: computed, with a warning naming the file.

    skipped: list[tuple[Path, str]] = []
    pairs = {name: lr for name, lr, _ in load_eval_pairs(tmp_path, 4, skipped=skipped)}
    np.testing.assert_array_equal(pairs["a"], official)
    np.testing.assert_array_equal(pairs["c"], degrade.imresize(hr["c"], 1 / 4))
    assert [(p.name, r.split(" has ")[1]) for p, r in skipped] == [
        ("b.png", "shape (5, 7, 3), expected (6, 7, 3) (HR / 4)")
    ]
    assert "cx4.png missing" in caplog.text
    # No X2 folder at all: nothing official at x2, every LR computed, no warning.
    caplog.clear()
    pairs = load_eval_pairs(tmp_path, 2)
    assert all(np.array_equal(lr, degrade.imresize(hr[n], 1 / 2)) for n, lr, _ in pairs)
    assert "missing" not in caplog.text


def test_load_lr_images_reads_any_format_and_skips_bad_files(tmp_path):
    good = {"a.png": noise(12, 20, seed=1), "sub/b.jpg": smooth(30, 16)}
    for name, image in good.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        save(image, tmp_path / name, **({"quality": 95} if name.endswith(".jpg") else {}))
    save(noise(9, 40), tmp_path / "c_small.png")
    (tmp_path / "d_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    images, skipped = load_lr_images(tmp_path, min_size=10)
    assert [p.relative_to(tmp_path).as_posix() for p, _ in images] == ["a.png", "sub/b.jpg"]
    np.testing.assert_array_equal(images[0][1], good["a.png"])
    assert np.abs(images[1][1].astype(int) - good["sub/b.jpg"]).max() <= 8  # JPEG
    reasons = {p.name: r for p, r in skipped}
    assert reasons["c_small.png"] == "too small: 40x9 (WxH) < min_size 10"
    assert "d_broken.png" in reasons
    with pytest.raises(ValueError, match=r"no usable LR image in .*all 4 skipped \(min_size 50\)"):
        load_lr_images(tmp_path, min_size=50)
    with pytest.raises(FileNotFoundError):
        load_lr_images(tmp_path / "nope", min_size=1)


@pytest.mark.parametrize("kind", degrade.KINDS)
def test_write_degraded_set_is_the_benchmark_layout_and_reproducible(tmp_path, kind):
    hr = {"a": noise(26, 34, seed=1), "b": smooth(40, 24)}
    (tmp_path / "set" / "HR").mkdir(parents=True)
    for name, image in hr.items():
        save(image, tmp_path / "set" / "HR" / f"{name}.png")
    save(noise(3, 3), tmp_path / "set" / "HR" / "c_tiny.png")
    folder, written, skipped = write_degraded_set(tmp_path / "set", kind, 4, tmp_path / "set", 5)
    assert folder == tmp_path / "set" / f"LR_{kind}" / "X4"
    assert [p.name for p in written] == ["ax4.png", "bx4.png"]
    assert [(p.name, r) for p, r in skipped] == [("c_tiny.png", "too small: 3x3 (WxH) for x4")]
    for name, image in hr.items():
        # The image's own noise stream: seed and its path relative to HR/.
        rng = np.random.default_rng([5, zlib.crc32(f"{name}.png".encode())])
        np.testing.assert_array_equal(
            read_image(folder / f"{name}x4.png"), degrade.degrade(image, kind, 4, rng)
        )
    # Evaluation reads them back as that set's LR.
    pairs = load_eval_pairs(tmp_path / "set", 4, lr_kind=kind, skipped=[])
    assert [n for n, _, _ in pairs] == ["a", "b"]
    np.testing.assert_array_equal(pairs[0][1], read_image(folder / "ax4.png"))


def test_write_degraded_set_does_not_depend_on_the_other_files(tmp_path):
    for folder, names in (("one", ["a"]), ("two", ["a", "b"])):
        (tmp_path / folder).mkdir()
        for name in names:
            save(noise(32, 32, seed=ord(name)), tmp_path / folder / f"{name}.png")
        write_degraded_set(tmp_path / folder, "DN", 2, tmp_path / f"{folder}_lr", seed=3)
    one = (tmp_path / "one_lr" / "LR_DN" / "X2" / "ax2.png").read_bytes()
    assert one == (tmp_path / "two_lr" / "LR_DN" / "X2" / "ax2.png").read_bytes()
    write_degraded_set(tmp_path / "one", "DN", 2, tmp_path / "again", seed=4)
    assert one != (tmp_path / "again" / "LR_DN" / "X2" / "ax2.png").read_bytes()


def test_write_degraded_set_refuses_to_write_into_a_plain_hr_folder(tmp_path):
    save(noise(16, 16), tmp_path / "a.png")
    with pytest.raises(ValueError, match="would be inside the HR folder"):
        write_degraded_set(tmp_path, "nearest", 2, tmp_path)
    with pytest.raises(ValueError, match="kind must be one of"):
        write_degraded_set(tmp_path, "box", 2, tmp_path / "out")


def test_other_lr_kinds_are_never_computed(tmp_path):
    (tmp_path / "HR").mkdir()
    save(noise(24, 24), tmp_path / "HR" / "a.png")
    save(noise(24, 24, seed=1), tmp_path / "HR" / "b.png")
    with pytest.raises(ValueError, match=r": no LR_nearest/X4/ folder \("):  # HR/ is there
        load_eval_pairs(tmp_path, 4, lr_kind="nearest")
    (tmp_path / "LR_nearest" / "X4").mkdir(parents=True)
    save(noise(6, 6, seed=2), tmp_path / "LR_nearest" / "X4" / "ax4.png")
    skipped: list[tuple[Path, str]] = []
    pairs = load_eval_pairs(tmp_path, 4, lr_kind="nearest", skipped=skipped)
    assert [n for n, _, _ in pairs] == ["a"]
    assert [(p.name, r) for p, r in skipped] == [("b.png", "no LR_nearest/X4 file for it")]
    with pytest.raises(ValueError, match="no HR/ and LR_nearest"):  # a plain folder
        load_eval_pairs(tmp_path / "HR", 4, lr_kind="nearest")


def _top_level_imports(module: str) -> set[str]:
    """``a.b`` for ``import a.b``, and ``a`` and ``a.b`` for ``from a import b``."""
    tree = ast.parse((Path(drn_tf.__file__).parent / f"{module}.py").read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def test_reading_images_does_not_need_the_training_pipeline():
    heavy = {"tensorflow", "keras", "drn_tf.data", "drn_tf.training"}
    for module in ("images", "image_sets", "scales"):
        assert not _top_level_imports(module) & heavy, module
    for module in ("inference", "demo", "evaluation"):
        assert "drn_tf.data" not in _top_level_imports(module), module
