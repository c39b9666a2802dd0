"""Tests for drn_tf.image_sets: evaluation pairs (benchmark layout and plain folders, bad images)
and degraded LR sets."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from sample_images import SET5, noise, save, smooth

from drn_tf import data, degrade
from drn_tf.image_sets import load_eval_pairs, write_degraded_set
from drn_tf.images import ImageReadError, read_image


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


def test_a_folder_that_cannot_be_looked_into_is_one_line_naming_it(tmp_path, monkeypatch):
    # As a chmod 000 folder fails for a user who is not root (root reads any folder).
    locked = tmp_path / "locked"
    locked.mkdir()
    is_dir = Path.is_dir

    def denied(path):
        if path.parent == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return is_dir(path)

    monkeypatch.setattr(Path, "is_dir", denied)
    with pytest.raises(OSError) as error:
        load_eval_pairs(locked, 4)
    assert str(error.value) == f"{locked}: cannot read the folder (Permission denied)"
