"""Tests for drn_tf.training_images: LR pyramids (direct imresize, official LR files, the cache,
skipped images) and LR-only images."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sample_images import SET5, noise, save, smooth

from drn_tf import degrade
from drn_tf.images import read_image
from drn_tf.training_images import load_lr_images, load_pyramids, pyramid_factors

_IMRESIZE = degrade.imresize


def count_imresize(monkeypatch) -> list:
    """Counts ``degrade.imresize`` calls from here on: one entry per call."""
    calls = []

    def counting_imresize(*args, **kwargs):
        calls.append(1)
        return _IMRESIZE(*args, **kwargs)

    monkeypatch.setattr(degrade, "imresize", counting_imresize)
    return calls


def assert_same_pyramids(ours, theirs) -> None:
    for a, b in zip(ours, theirs, strict=True):
        for level_a, level_b in zip(a.levels, b.levels, strict=True):
            np.testing.assert_array_equal(level_a, level_b)


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
    # Returned, not logged: `drn-tf train` names each skipped file once, and a logged summary
    # ("skipped 3 of 5 images (first: …)") printed beside those lines said it twice.
    assert caplog.records == []


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

    calls = count_imresize(monkeypatch)
    first, _ = load_pyramids(images, 4, 16, cache_dir=cache, progress=False)
    assert len(calls) == 3 * 2  # X4 and X2 per image
    cached = sorted(cache.iterdir())
    assert len(cached) == 3 and all(p.suffix == ".npz" for p in cached)

    def forbidden(*args, **kwargs):
        raise AssertionError("imresize must not run on a cache hit")

    monkeypatch.setattr(degrade, "imresize", forbidden)
    second, _ = load_pyramids(images, 4, 16, cache_dir=cache, progress=False)
    assert_same_pyramids(first, second)

    # A changed file (mtime) and a corrupt cache entry are both recomputed, not trusted.
    calls = count_imresize(monkeypatch)
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


def test_scale_augment_is_the_resized_copies_saved_as_folders(tmp_path, monkeypatch):
    """``scale_augment`` gives exactly what saving ``imresize(hr, f)`` as PNGs into folders
    listed after the originals gave (how the packaged ×4 model's data was first made), with
    copies under min_size skipped by name, and a cache that tells a copy from its original."""
    originals = tmp_path / "train"
    originals.mkdir()
    save(noise(64, 80), originals / "a.png")
    save(smooth(100, 120), originals / "b.png")
    folders = []
    for factor in (0.8, 0.5):
        folder = tmp_path / f"s{factor}"
        folder.mkdir()
        for path in sorted(originals.iterdir()):
            save(degrade.imresize(read_image(path), factor), folder / path.name)
        folders.append(folder)
    as_folders, skipped_folders = load_pyramids([originals, *folders], 4, 40, progress=False)
    cache = tmp_path / "cache"
    augmented, skipped = load_pyramids(
        originals, 4, 40, cache_dir=cache, progress=False, scale_augment=(0.8, 0.5)
    )
    assert len(augmented) == len(as_folders) == 5  # a at 0.5 is 32x40: under 40
    assert [p.path.name for p in augmented] == [p.path.name for p in as_folders]
    assert_same_pyramids(augmented, as_folders)
    assert [p.name for p, _ in skipped_folders] == [p.name for p, _ in skipped] == ["a.png"]
    assert skipped[0][1].startswith("copy ×0.5: too small: 40x32")

    # Each copy's levels are cached under its own key: only the copies' HR is resized again.
    calls = count_imresize(monkeypatch)
    again, _ = load_pyramids(
        originals, 4, 40, cache_dir=cache, progress=False, scale_augment=(0.8, 0.5)
    )
    assert len(calls) == 2 * 2  # the four copies, and no pyramid level
    assert len(list(cache.iterdir())) == 5
    assert_same_pyramids(again, augmented)


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
