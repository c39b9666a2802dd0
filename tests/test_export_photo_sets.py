"""Tests for export/photo_sets.py: calibration images from folders and the bundled set, never a
probe image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drn_tf import bundled
from export import base, photo_sets

# --- calibration images ----------------------------------------------------------------------


def _photos(folder: Path, sizes: list[tuple[int, int]]) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate(sizes):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"p{i}.{'png' if i % 2 else 'jpg'}")


def test_calibration_images_count_and_shapes(tmp_path):
    _photos(tmp_path / "a", [(200, 160), (128, 256)])
    _photos(tmp_path / "b" / "nested", [(300, 300)])
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    crops = photo_sets.calibration_images(
        [tmp_path / "a", tmp_path / "b"], scale=4, count=7, size=16
    )
    assert len(crops) == 7
    for crop in crops:
        assert crop.shape == (1, 16, 16, 3) and crop.dtype == np.float32
        assert crop.min() >= 0 and crop.max() <= 255


def test_default_calibration_is_the_bundled_set_never_a_probe_image():
    """No folders: the 32 bundled LR crops as they are, at any scale; none of them is (a crop
    of) a verification photo, so int8 is verified on photos it was not calibrated on."""
    files = sorted(bundled.CALIBRATION_SET.glob("*.png"))
    assert len(files) == 32
    for scale in (2, 4):
        crops = photo_sets.calibration_images([], scale=scale)
        assert len(crops) == 32 and {c.shape for c in crops} == {(1, 48, 48, 3)}
        assert all(c.dtype == np.float32 for c in crops)
    for crop, path in zip(crops, files, strict=True):
        np.testing.assert_array_equal(crop[0], np.asarray(Image.open(path).convert("RGB")))
    sources = {p.stem for p in files}
    assert len({name.split("_")[0] for name in sources}) == 2  # BSD200 and T91 photos
    assert sources.isdisjoint(p.stem for p in bundled.HELD_OUT_SET.glob("*.png"))
    # No calibration crop appears inside any probe image (the sample photo, the held-out crops).
    for _, probe in photo_sets.probe_images(4):
        if min(probe.shape[1:3]) < 48:
            continue  # the crop of the sample photo: the sample photo is checked whole
        windows = np.lib.stride_tricks.sliding_window_view(probe[0], (48, 48, 3))
        for crop in crops:
            assert not np.any(np.all(windows == crop[0], axis=(-3, -2, -1)))
    # Bundled files stay small, and their source file names every one.
    assert sum(p.stat().st_size for p in files) < 500_000
    listed = (bundled.CALIBRATION_SET / "SOURCE.md").read_text()
    assert all(f"/{p.name} |" in listed for p in [*files, *bundled.HELD_OUT_SET.glob("*.png")])


def test_calibration_images_bad_folders(tmp_path):
    with pytest.raises(base.ExportError, match="missing: calibration folder does not exist"):
        photo_sets.calibration_images([tmp_path / "missing"], scale=4)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(base.ExportError, match="empty: no images found for calibration"):
        photo_sets.calibration_images([tmp_path / "empty"], scale=4)
    _photos(tmp_path / "small", [(40, 40), (1, 1)])
    with pytest.raises(base.ExportError, match="no calibration image is large enough") as error:
        photo_sets.calibration_images([tmp_path / "small"], scale=4, size=48)
    assert "under 192 pixels on a side" in str(error.value)
    assert f"{tmp_path / 'small' / 'p0.jpg'} (40x40)" in str(error.value)
    assert f"{tmp_path / 'small' / 'p1.png'} (1x1)" in str(error.value)


def test_calibration_images_name_the_photos_too_small_for_a_crop(tmp_path, capsys):
    """A photo under ``size * scale`` pixels on a side gives no crop: it is named in one note
    line, not dropped silently (a 1×1 image, and one a pixel short of 4 × 16)."""
    _photos(tmp_path / "mixed", [(1, 1), (300, 200), (63, 80)])
    crops = photo_sets.calibration_images([tmp_path / "mixed"], scale=4, count=6, size=16)
    assert len(crops) == 6  # all from the one large enough
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "note: calibration skipped 2 image(s) under 64 pixels on a side (16-pixel LR crops at "
        f"×4): {tmp_path / 'mixed' / 'p0.jpg'} (1x1), {tmp_path / 'mixed' / 'p2.jpg'} (80x63)"
    ]
    photo_sets.calibration_images([tmp_path / "mixed"], scale=2, count=6, size=16)
    assert f"{tmp_path / 'mixed' / 'p2.jpg'}" not in capsys.readouterr().err  # 63 ≥ 2 × 16
