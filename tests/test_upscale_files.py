"""Tests for drn_tf.upscale_files (files and folders: names, layout, formats, earlier outputs,
failures one by one, nothing overwritten) and ``drn-tf upscale`` on images."""

from __future__ import annotations

import errno
import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageCms

import drn_tf
from drn_tf import cli, inference, loading, pictures, precision, settings, tiles
from drn_tf import upscale_files as upscale_files_module
from drn_tf.degrade import imresize
from drn_tf.images import read_image, write_image
from drn_tf.pictures import FORMAT_SUFFIXES, Picture, load_picture, save_picture
from drn_tf.upscale_files import upscale_files

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark"
needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found")
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _image(height: int, width: int, channels: int = 3, dtype=np.uint8, seed: int = 0):
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top + 1, (height, width, channels), dtype)


# --- upscale_files ---------------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder with an RGB image, a nested one, a grayscale and an RGBA PNG, and a bad file."""
    root = tmp_path / "photos"
    write_image(root / "a.png", _image(5, 7, seed=1))
    write_image(root / "sub" / "deeper" / "b.jpg", _image(6, 4, seed=2))
    Image.fromarray(_image(4, 3, seed=3)[..., 0]).save(root / "gray.png")
    Image.fromarray(np.dstack([_image(3, 5, seed=4), _image(3, 5, seed=5)[..., :1]]), "RGBA").save(
        root / "rgba.png"
    )
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def test_upscale_files_folder(tiny, photos, tmp_path, capsys):
    model = tiny[0]
    out = tmp_path / "out"
    summary = upscale_files([photos], out, model, progress=False)
    expected = {
        out / "a_x4.png",
        out / "sub" / "deeper" / "b_x4.png",
        out / "gray_x4.png",
        out / "rgba_x4.png",
    }
    assert set(summary.written) == expected
    assert {p for p in out.rglob("*") if p.is_file()} == expected  # no temp files, no bad_x4
    for source in ("a.png", "sub/deeper/b.jpg", "gray.png", "rgba.png"):
        lr = load_picture(photos / source).pixels
        name = Path(source).with_name(Path(source).stem + "_x4.png")
        np.testing.assert_array_equal(load_picture(out / name).pixels, inference.upscale(lr, model))
    assert summary.failed[0][0] == photos / "bad.png"
    err = capsys.readouterr().err
    assert f"failed {photos / 'bad.png'}: " in err


def test_upscale_files_mixed_inputs(tiny, photos, tmp_path):
    other = tmp_path / "other.png"
    write_image(other, _image(3, 3, seed=9))
    summary = upscale_files([other, photos / "a.png"], tmp_path / "o", tiny[0], progress=False)
    assert summary.written == [tmp_path / "o" / "other_x4.png", tmp_path / "o" / "a_x4.png"]
    assert read_image(summary.written[0]).shape == (12, 12, 3)


def test_upscale_files_ignores_its_own_outputs(tiny, photos):
    first = upscale_files([photos], photos / "out", tiny[0], progress=False)
    second = upscale_files([photos], photos / "out", tiny[0], progress=False)
    assert len(first.written) == 4 and second.written == []
    assert sorted(second.kept) == sorted(first.written)
    assert sorted(second.earlier_outputs) == sorted(first.written)


def test_upscale_files_errors(tiny, photos, tmp_path):
    model = tiny[0]
    with pytest.raises(FileNotFoundError, match="nope.png"):
        upscale_files([photos / "a.png", tmp_path / "nope.png"], tmp_path / "o", model)
    assert not (tmp_path / "o").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        upscale_files([tmp_path / "empty"], tmp_path / "o", model)
    summary = upscale_files([photos / "bad.png"], tmp_path / "o", model, progress=False)
    assert summary.written == [] and summary.failed[0][0] == photos / "bad.png"
    write_image(photos / "a.jpg", _image(3, 3))
    summary = upscale_files([photos], tmp_path / "o", model, progress=False)
    (clash,) = [reason for path, reason in summary.failed if path.name == "a.png"]
    assert "a.jpg has the same output" in clash


def _files(tiny, inputs, output, **kwargs):
    return upscale_files(inputs, output, tiny[0], progress=False, **kwargs)


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
    x2 = loading.load_model(tiny_x2)
    second = upscale_files([photos], photos / "out", x2, progress=False)
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
    third = upscale_files([beside], tmp_path / "elsewhere", x2, progress=False)
    assert [p.name for p in third.written] == ["b_x2.png"]
    assert third.earlier_outputs == [beside / "b_x4.png"]


def test_a_folder_of_earlier_outputs_alone_says_so(tiny, tmp_path, capsys):
    """``drn-tf upscale out/ --output out/`` where out/ holds only earlier outputs: the error
    says they are earlier outputs, skipped, not that there are no images."""
    out = tmp_path / "out"
    write_image(out / "a_x4.png", _image(8, 8, seed=1))
    write_image(out / "sub" / "b_x2.jpg", _image(8, 8, seed=2))
    argv = ["upscale", str(out), "--output", str(out), "--model", str(tiny[1])]
    assert cli.main([*argv, "--runtime", "keras"]) == 1
    assert capsys.readouterr().err.strip() == (
        "drn-tf upscale: error: nothing to upscale: the 2 image(s) in the inputs are earlier "
        f"outputs of drn-tf, skipped (named <name>_x<n>, inside {out} or beside their source; "
        f"first: {out / 'a_x4.png'})"
    )
    assert sorted(p.name for p in out.rglob("*")) == ["a_x4.png", "b_x2.jpg", "sub"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="^no image files found in the inputs$"):
        upscale_files([empty], out, tiny[0], progress=False)


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
    summary = upscale_files([tmp_path], tmp_path / "out", "bicubic", progress=False)
    assert len(summary.written) == 3
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note")]
    assert notes == [
        f"note {tmp_path / 'out' / 'anim_x4.png'}: only the first of its 3 frames was upscaled",
        f"note {tmp_path / 'out' / 'pages_x4.png'}: only the first of its 2 frames was upscaled",
    ]


def test_the_last_files_note_comes_before_the_bar_ends(tmp_path, capsys):
    # The last output is written in the background after the loop over the files: its note
    # still comes within the bar (stderr is no terminal here: the bar is plain lines).
    Image.fromarray(_image(4, 4)).save(tmp_path / "a.png")
    frames = [Image.fromarray(_image(4, 4, seed=s)) for s in range(2)]
    frames[0].save(tmp_path / "b.gif", save_all=True, append_images=frames[1:])
    upscale_files([tmp_path], tmp_path / "out", "bicubic")
    lines = capsys.readouterr().err.splitlines()
    assert (
        lines[-2]
        == f"note {tmp_path / 'out' / 'b_x4.png'}: only the first of its 2 frames was upscaled"
    )
    assert lines[-1].startswith("upscale: 100%") and "2/2" in lines[-1]


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
        monkeypatch.setattr(pictures, "_write_png", broken)
    else:  # PIL's
        monkeypatch.setattr(Image.Image, "save", broken)
    summary = _files(tiny, [tmp_path / "a.png"], tmp_path / "out", image_format=image_format)
    assert "disk full" in summary.failed[0][1]
    assert list((tmp_path / "out").iterdir()) == []


def test_a_full_disk_names_the_file_that_could_not_be_written(tiny, tmp_path, monkeypatch, capsys):
    Image.fromarray(_image(4, 4)).save(tmp_path / "a.png")

    def disk_full(*args, **kwargs):  # as a full disk fails a write: the error names no file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("drn_tf.upscale_files.save_picture", disk_full)
    summary = _files(tiny, [tmp_path / "a.png"], tmp_path / "out")
    reason = f"cannot write {tmp_path / 'out' / 'a_x4.png'}: no space left on device"
    assert summary.failed == [(tmp_path / "a.png", reason)] and summary.written == []
    assert f"failed {tmp_path / 'a.png'}: {reason}" in capsys.readouterr().err


# --- outputs written while the next file computes ------------------------------------------


def _nearest(tiles: np.ndarray) -> np.ndarray:
    """A network (``network=``): each pixel repeated 4x4, float32 on 0..255 in and out."""
    return np.repeat(np.repeat(tiles, 4, axis=1), 4, axis=2).astype(np.float32)


def _squares(folder: Path, names: str) -> None:
    """``a.png`` 4x4, ``b.png`` 5x5, …: the network tells the files apart by their size."""
    for i, name in enumerate(names):
        write_image(folder / f"{name}.png", _image(4 + i, 4 + i, seed=i))


def test_each_output_is_written_while_the_next_file_computes(tiny, tmp_path, monkeypatch):
    src = tmp_path / "in"
    _squares(src, "abc")
    computing = {size: threading.Event() for size in (4, 5, 6)}  # by input size

    def network(tiles):
        computing[tiles.shape[1]].set()
        return _nearest(tiles)

    saves = []
    save_picture_ = upscale_files_module.save_picture

    def save(path, picture, image_format):
        # a's output is written once b computes, b's once c does: a loop that writes before it
        # computes the next file never gets there (and gives up after 20 s).
        size = len(picture.pixels) // 4
        seen = computing[size + 1].wait(timeout=20) if size + 1 in computing else True
        saves.append((path.name, seen, threading.current_thread() is threading.main_thread()))
        return save_picture_(path, picture, image_format)

    monkeypatch.setattr(upscale_files_module, "save_picture", save)
    summary = _files(tiny, [src], tmp_path / "out", network=network)
    assert summary.failed == []
    assert [p.name for p in summary.written] == ["a_x4.png", "b_x4.png", "c_x4.png"]
    assert saves == [(f"{name}_x4.png", True, False) for name in "abc"]
    for name in "abc":  # the bytes a sequential read, upscale, write gives
        lr = load_picture(src / f"{name}.png").pixels
        expected = tmp_path / "expected" / f"{name}.png"
        save_picture(expected, Picture(inference.upscale(lr, tiny[0], network=_nearest)), "png")
        assert (tmp_path / "out" / f"{name}_x4.png").read_bytes() == expected.read_bytes()


def test_failures_in_the_overlap_are_named_against_their_file(tiny, tmp_path, monkeypatch, capsys):
    src = tmp_path / "in"
    _squares(src, "ac")
    (src / "b.png").write_bytes(b"not an image at all")
    reading_b = threading.Event()
    load_picture_ = upscale_files_module.load_picture

    def load(path):
        if path.name == "b.png":
            reading_b.set()
        return load_picture_(path)

    seen = []

    def save(path, picture, image_format):
        if path.name == "a_x4.png":  # fails on a full disk while b is being read
            seen.append(reading_b.wait(timeout=20))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save_picture(path, picture, image_format)

    monkeypatch.setattr(upscale_files_module, "load_picture", load)
    monkeypatch.setattr(upscale_files_module, "save_picture", save)
    summary = _files(tiny, [src], tmp_path / "out", network=_nearest)
    assert seen == [True]  # a's write failed while b was read
    a_reason = f"cannot write {tmp_path / 'out' / 'a_x4.png'}: no space left on device"
    (a, a_failure), (b, b_failure) = summary.failed
    assert (a, a_failure) == (src / "a.png", a_reason)
    assert b == src / "b.png" and b_failure.startswith("not an image")
    assert summary.written == [tmp_path / "out" / "c_x4.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c_x4.png"]
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("failed")]
    assert failed == [
        f"failed {src / 'a.png'}: {a_reason}",
        f"failed {src / 'b.png'}: {b_failure}",
    ]


def test_large_outputs_are_written_in_the_foreground_with_nothing_held(tiny, tmp_path, monkeypatch):
    src = tmp_path / "in"
    _squares(src, "ab")  # outputs of 16x16 and 20x20 pixels
    monkeypatch.setattr(upscale_files_module, "WRITE_BEHIND_PIXELS", 16 * 16)
    computing_b, written_a = threading.Event(), threading.Event()
    b_after_a = []

    def network(tiles):
        if tiles.shape[1] == 5:
            computing_b.set()
            b_after_a.append(written_a.is_set())
        return _nearest(tiles)

    saves = []

    def save(path, picture, image_format):
        if path.name == "a_x4.png":  # b must not compute before a is written: give it time to
            computing_b.wait(timeout=0.5)
        saves.append((path.name, threading.current_thread() is threading.main_thread()))
        notes = save_picture(path, picture, image_format)
        written_a.set()
        return notes

    monkeypatch.setattr(upscale_files_module, "save_picture", save)
    summary = _files(tiny, [src], tmp_path / "out", network=network)
    assert [p.name for p in summary.written] == ["a_x4.png", "b_x4.png"]
    assert saves == [("a_x4.png", False), ("b_x4.png", True)]
    assert b_after_a == [True]


def test_progress_bars_over_images_and_tiles(tiny, tmp_path, capsys):
    Image.fromarray(_image(40, 40)).save(tmp_path / "a.png")
    upscale_files([tmp_path / "a.png"], tmp_path / "o", tiny[0], tile=16, tile_overlap=4)
    err = capsys.readouterr().err
    assert "upscale" in err and "tiles" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable files")
def test_unreadable_file_is_reported(tiny, tmp_path):
    Image.fromarray(_image(4, 4)).save(tmp_path / "a.png")
    (tmp_path / "a.png").chmod(0)
    summary = _files(tiny, [tmp_path / "a.png"], tmp_path / "o")
    assert "cannot open" in summary.failed[0][1]


# --- drn-tf upscale --------------------------------------------------------------------------


def test_cli_upscale(tiny, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        cli.main(["upscale", str(photos / "a.png"), "--output", str(out), "--model", str(tiny[1])])
        == 0
    )
    assert read_image(out / "a_x4.png").shape == (20, 28, 3)
    assert "wrote 1 image" in capsys.readouterr().out


def test_cli_upscale_missing_input_is_exit_1(tiny, tmp_path, capsys):
    missing = tmp_path / "missing.png"
    assert (
        cli.main(
            ["upscale", str(missing), "--output", str(tmp_path / "out"), "--model", str(tiny[1])]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err
    assert not (tmp_path / "out").exists()


def test_cli_upscale_bad_model_is_exit_1(photos, tmp_path, capsys):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"junk")
    assert (
        cli.main(["upscale", str(photos), "--output", str(tmp_path / "o"), "--model", str(bad)])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err


@pytest.mark.parametrize(
    "argv", [["upscale", "--output", "o"], ["upscale", "a.png"]], ids=["no-input", "no-output"]
)
def test_cli_upscale_usage_errors(argv, capsys):
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip()


def test_cli_upscale_help(capsys):
    assert cli.main(["upscale", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--output" in out and "--model" in out


def test_cli_defaults_mirror_the_library():
    config = cli.UpscaleConfig()
    assert (config.tile, config.tile_overlap) == (
        tiles.DEFAULT_TILE,
        tiles.DEFAULT_TILE_OVERLAP,
    )
    assert tuple(FORMAT_SUFFIXES) == settings.UPSCALE_FORMATS
    from drn_tf.images import IMAGE_EXTENSIONS

    assert set(settings.IMAGE_SUFFIXES) == set(IMAGE_EXTENSIONS)
    assert precision.UPSCALE_PRECISIONS == ("auto", "float32", "bfloat16")


@needs_data
def test_cli_and_api_give_the_same_pixels(tiny, tmp_path):
    source = tmp_path / "comic.jpg"  # a real photo as users have them: a JPEG, cropped
    Image.open(SHARED / "Set14" / "HR" / "comic.png").crop((40, 60, 160, 150)).save(source)
    argv = ["upscale", str(source), "--output", str(tmp_path / "o"), "--model", str(tiny[1])]
    # The API's default; the other runtimes: tests/test_export_runtime.py.
    argv += ["--runtime", "keras"]
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
        upscale_files([tmp_path / "a.png"], output, "bicubic", progress=False)
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
