"""Tests for drn_tf.evaluation (evaluate, format_table, write_json) and ``drn-tf evaluate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from drn_tf import cli
from drn_tf.degrade import imresize, modcrop
from drn_tf.evaluation import evaluate, format_table, smallest_measurable, write_json
from drn_tf.images import read_image, write_image
from drn_tf.inference import upscale
from drn_tf.metrics import psnr_y, ssim_y

SET5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark" / "Set5"
needs_set5 = pytest.mark.skipif(not (SET5 / "HR").is_dir(), reason=f"{SET5} not found")

# Published bicubic ×4 row on Set5 (e.g. EDSR, RCAN, DRN tables).
BICUBIC_SET5_X4 = (28.42, 0.8104)


def _smooth(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random RGB image (bicubic-friendly, so PSNRs are finite and meaningful)."""
    coarse = np.random.default_rng(seed).uniform(0, 255, (height // 8 + 2, width // 8 + 2, 3))
    return imresize(coarse, output_shape=(height, width)).clip(0, 255).round().astype(np.uint8)


@pytest.fixture
def plain_set(tmp_path) -> Path:
    """A plain folder of HR images (sizes not multiples of 4), one nested."""
    root = tmp_path / "mine"
    write_image(root / "one.png", _smooth(50, 62, 1))
    write_image(root / "nested" / "two.png", _smooth(45, 41, 2))
    return root


@needs_set5
def test_bicubic_set5_x4_matches_published_numbers():
    results = evaluate("bicubic", [SET5], 4, progress=False)
    assert list(results) == ["Set5"]
    set5 = results["Set5"]
    assert sorted(set5["images"]) == ["baby", "bird", "butterfly", "head", "woman"]
    assert set5["psnr"] == pytest.approx(BICUBIC_SET5_X4[0], abs=0.01)
    assert set5["ssim"] == pytest.approx(BICUBIC_SET5_X4[1], abs=0.001)
    assert set5["psnr"] == pytest.approx(np.mean([v["psnr"] for v in set5["images"].values()]))


def test_model_evaluation_matches_independent_metrics(tiny, plain_set):
    model = tiny[0]
    results = evaluate(model, plain_set, 4, progress=False)
    assert list(results) == ["mine"]
    images = results["mine"]["images"]
    assert list(images) == ["nested/two", "one"]
    for name, file in (("one", "one.png"), ("nested/two", "nested/two.png")):
        hr = modcrop(read_image(plain_set / file), 4)
        sr = upscale(model, imresize(hr, 1 / 4))
        assert images[name]["psnr"] == pytest.approx(psnr_y(sr, hr, shave=4), abs=1e-9)
        assert images[name]["ssim"] == pytest.approx(ssim_y(sr, hr, shave=4), abs=1e-9)
    assert results["mine"]["psnr"] == pytest.approx(np.mean([v["psnr"] for v in images.values()]))
    assert results["mine"]["ssim"] == pytest.approx(np.mean([v["ssim"] for v in images.values()]))


def test_self_ensemble_scores_the_mean_of_the_eight_transformed_outputs(tiny, plain_set):
    model = tiny[0]
    results = evaluate(model, plain_set, 4, progress=False, self_ensemble=True)["mine"]
    hr = modcrop(read_image(plain_set / "one.png"), 4)
    lr = imresize(hr, 1 / 4).astype(np.float32)
    outputs = []
    for turns in range(4):  # the 8 rotations and mirrors, each output turned back
        for mirror in (False, True):
            view = np.rot90(lr, turns)[:, ::-1] if mirror else np.rot90(lr, turns)
            sr = model.primal(np.ascontiguousarray(view)[None])[-1][0].numpy()
            outputs.append(np.rot90(sr[:, ::-1] if mirror else sr, -turns))
    expected = np.clip(np.round(np.mean(outputs, axis=0)), 0, 255).astype(np.uint8)
    assert results["images"]["one"]["psnr"] == pytest.approx(psnr_y(expected, hr, 4), abs=1e-3)
    plain = evaluate(model, plain_set, 4, progress=False)["mine"]["images"]["one"]["psnr"]
    assert abs(results["images"]["one"]["psnr"] - plain) > 0.01  # the flag changes what is scored
    with pytest.raises(ValueError, match="self-ensemble needs a DRN"):
        evaluate("bicubic", plain_set, 4, self_ensemble=True)


def test_bicubic_uses_matlab_imresize(plain_set):
    results = evaluate("bicubic", [plain_set], 4, progress=False)
    hr = modcrop(read_image(plain_set / "one.png"), 4)
    sr = imresize(imresize(hr, 1 / 4), 4)
    assert results["mine"]["images"]["one"]["psnr"] == pytest.approx(psnr_y(sr, hr, 4))


def test_several_sets_and_same_names(tmp_path, plain_set):
    other = tmp_path / "b" / "mine"
    write_image(other / "x.png", _smooth(40, 40, 3))
    results = evaluate("bicubic", [plain_set, other], 4, progress=False)
    assert list(results) == [str(plain_set), str(other)]


def test_evaluate_errors(tiny, plain_set):
    with pytest.raises(ValueError, match="×4.*×8"):
        evaluate(tiny[0], [plain_set], 8)
    with pytest.raises(ValueError, match="bicubic"):
        evaluate("nearest", [plain_set], 4)
    with pytest.raises(ValueError, match="no evaluation folder"):
        evaluate("bicubic", [], 4)
    with pytest.raises(FileNotFoundError):
        evaluate("bicubic", [plain_set / "missing"], 4)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_images_too_small_to_measure_are_skipped_and_named(tmp_path, plain_set, scale):
    side = smallest_measurable(scale)
    need = -(-side // scale) * scale  # the file size whose modcrop is at least `side`
    write_image(plain_set / "edge_ok.png", _smooth(need, need + 1, 5))
    write_image(plain_set / "edge_small.png", _smooth(need - 1, need + 1, 6))
    write_image(plain_set / "tiny.png", _smooth(5, 6, 7))  # 6x5: once fatal at x4
    # Independently of `smallest_measurable`: the metrics measure the first and not the other two.
    for name, measurable in (("edge_ok", True), ("edge_small", False), ("tiny", False)):
        hr = modcrop(read_image(plain_set / f"{name}.png"), scale)
        if measurable:
            assert 0 <= ssim_y(hr, hr, shave=scale) <= 1
        elif min(hr.shape[:2]) > 0:
            with pytest.raises(ValueError):
                ssim_y(hr, hr, shave=scale)

    result = evaluate("bicubic", plain_set, scale, progress=False)["mine"]
    assert list(result["images"]) == ["edge_ok", "nested/two", "one"]
    assert list(result["skipped"]) == [
        str(plain_set / "edge_small.png"),
        str(plain_set / "tiny.png"),
    ]
    assert result["skipped"][str(plain_set / "tiny.png")].startswith("too small: 6x5 (WxH)")
    assert result["psnr"] == pytest.approx(np.mean([v["psnr"] for v in result["images"].values()]))


def test_unreadable_images_are_skipped_and_named(plain_set):
    (plain_set / "empty.png").write_bytes(b"")
    (plain_set / "nested" / "text.png").write_text("not an image")
    result = evaluate("bicubic", plain_set, 4, progress=False)["mine"]
    assert list(result["images"]) == ["nested/two", "one"]
    assert result["skipped"] == {
        str(plain_set / "empty.png"): "empty file",
        str(plain_set / "nested" / "text.png"): "not an image file (PIL cannot identify it)",
    }


def test_a_set_with_nothing_measurable_is_an_error(tmp_path):
    write_image(tmp_path / "tiny" / "a.png", _smooth(5, 6, 1))
    with pytest.raises(ValueError, match=r"no usable image in .*tiny: all 1 skipped: a\.png"):
        evaluate("bicubic", tmp_path / "tiny", 4, progress=False)


def test_format_table():
    results = {
        "Set5": {
            "psnr": 28.4234,
            "ssim": 0.81041,
            "images": {
                "baby": {"psnr": 31.7771, "ssim": 0.85631},
                "bird": {"psnr": math.inf, "ssim": 1.0},
            },
        },
        "Other": {"psnr": 20.0, "ssim": 0.5, "images": {"x": {"psnr": 20.0, "ssim": 0.5}}},
    }
    table = format_table(results)
    assert "Set5 (2 images)" in table and "Other (1 images)" in table
    lines = table.splitlines()
    assert any(line.split() == ["baby", "31.78", "0.8563"] for line in lines)
    assert any(line.split() == ["bird", "inf", "1.0000"] for line in lines)
    assert any(line.split() == ["mean", "28.42", "0.8104"] for line in lines)
    assert any(line.split() == ["Set5", "28.42", "0.8104"] for line in lines)  # summary
    single = format_table({"Set5": results["Set5"]})
    assert "set" not in single.splitlines()[-1] and single.splitlines()[-1].startswith("mean")

    results["Other"]["skipped"] = {"other/tiny.png": "too small: 6x5 (WxH), x4 needs 20x20"}
    for per_image in (True, False):
        lines = format_table(results, per_image=per_image).splitlines()
        assert lines[-1] == "skipped other/tiny.png: too small: 6x5 (WxH), x4 needs 20x20"
    assert "Other (1 images, 1 skipped)" in format_table(results)


def test_write_json_is_atomic(tmp_path):
    path = write_json(tmp_path / "sub" / "r.json", {"a": 1.5, "b": math.inf})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": math.inf}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


# --- drn-tf evaluate ---------------------------------------------------------------------------


@needs_set5
def test_cli_evaluate_bicubic_set5(tmp_path, capsys):
    output = tmp_path / "results.json"
    assert (
        cli.main(
            [
                "evaluate",
                "--model",
                "bicubic",
                "--data",
                str(SET5),
                "--scale",
                "4",
                "--json",
                str(output),
            ]
        )
        == 0
    )
    content = json.loads(output.read_text())
    assert content["model"] == "bicubic" and content["scale"] == 4
    assert content["sets"]["Set5"]["psnr"] == pytest.approx(BICUBIC_SET5_X4[0], abs=0.01)
    assert content["sets"]["Set5"]["ssim"] == pytest.approx(BICUBIC_SET5_X4[1], abs=0.001)
    assert set(content["sets"]["Set5"]["images"]) == {"baby", "bird", "butterfly", "head", "woman"}
    out = capsys.readouterr().out
    assert "Set5" in out and "28.42" in out and f"wrote {output}" in out


def test_cli_evaluate_model_and_several_folders(tiny, plain_set, tmp_path, capsys):
    other = tmp_path / "other"
    write_image(other / "x.png", _smooth(40, 36, 4))
    output = tmp_path / "r.json"
    # `--data A B`: absl leaves B as a positional; both are evaluated. --scale defaults to 4.
    assert (
        cli.main(
            [
                "evaluate",
                "--model",
                str(tiny[1]),
                "--data",
                str(plain_set),
                str(other),
                "--json",
                str(output),
            ]
        )
        == 0
    )
    content = json.loads(output.read_text())
    assert list(content["sets"]) == ["mine", "other"] and content["scale"] == 4
    direct = evaluate(tiny[0], [plain_set], 4, progress=False)["mine"]
    assert content["sets"]["mine"]["psnr"] == pytest.approx(direct["psnr"], abs=1e-9)
    assert content["self_ensemble"] is False
    argv = ["evaluate", "--model", str(tiny[1]), str(plain_set), "--self-ensemble"]
    assert cli.main([*argv, "--json", str(output)]) == 0
    content = json.loads(output.read_text())
    direct = evaluate(tiny[0], [plain_set], 4, progress=False, self_ensemble=True)["mine"]
    assert content["self_ensemble"] is True
    assert content["sets"]["mine"]["psnr"] == pytest.approx(direct["psnr"], abs=1e-9)


def test_cli_evaluate_reports_skipped_files(plain_set, tmp_path, capsys):
    write_image(plain_set / "tiny.png", _smooth(5, 6, 7))
    output = tmp_path / "r.json"
    argv = ["evaluate", "--model", "bicubic", "--data", str(plain_set), "--json", str(output)]
    assert cli.main(argv) == 1  # the rule of every command over many files (as upscale)
    captured = capsys.readouterr()
    out = captured.out
    assert captured.err.strip().endswith("1 file(s) skipped (listed above); the others are done")
    assert "mine (2 images, 1 skipped)" in out
    assert f"skipped {plain_set / 'tiny.png'}: too small: 6x5 (WxH)" in out
    skipped = json.loads(output.read_text())["sets"]["mine"]["skipped"]
    assert list(skipped) == [str(plain_set / "tiny.png")]


def test_cli_evaluate_scale_mismatch_is_exit_1(tiny, plain_set, tmp_path, capsys):
    output = tmp_path / "r.json"
    assert (
        cli.main(
            [
                "evaluate",
                "--model",
                str(tiny[1]),
                "--data",
                str(plain_set),
                "--scale",
                "8",
                "--json",
                str(output),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "×4" in err and "8" in err
    assert not output.exists()


def test_cli_evaluate_missing_folder_is_exit_1(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert cli.main(["evaluate", "--model", "bicubic", "--data", str(missing)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err


def test_cli_evaluate_usage(capsys):
    assert cli.main(["evaluate", "--model", "bicubic"]) == 2  # no --data
    assert "--data" in capsys.readouterr().err
    assert cli.main(["evaluate", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--data", "--scale", "--json"):
        assert flag in out


# --- other LR kinds (drn-tf degrade) and the closed-loop readout of LR-only sets ----------------


def test_cli_degrade_then_evaluate_on_nearest_lr(tmp_path, capsys):
    """``drn-tf degrade`` writes LR_nearest/X4 into a set; ``evaluate --lr-kind nearest`` scores
    bicubic upscaling of exactly those files."""
    root = tmp_path / "set"
    write_image(root / "HR" / "one.png", _smooth(50, 62, 1))
    write_image(root / "HR" / "two.png", _smooth(45, 41, 2))
    argv = ["degrade", "--hr-dir", str(root), "--kind", "nearest", "--scale", "4"]
    assert cli.main([*argv, "--output", str(root)]) == 0
    assert f"wrote 2 image(s) to {root / 'LR_nearest' / 'X4'}" in capsys.readouterr().out
    output = tmp_path / "r.json"
    evaluate_argv = ["evaluate", "--model", "bicubic", str(root), "--lr-kind", "nearest"]
    assert cli.main([*evaluate_argv, "--json", str(output)]) == 0
    content = json.loads(output.read_text())
    assert content["lr_kind"] == "nearest"
    for name, size in (("one", (50, 62)), ("two", (45, 41))):
        hr = modcrop(read_image(root / "HR" / f"{name}.png"), 4)
        nearest = hr[2::4, 2::4]  # MATLAB nearest: pixel s // 2 of every 4×4 block
        assert hr.shape[:2] == (size[0] // 4 * 4, size[1] // 4 * 4)
        expected = psnr_y(imresize(nearest, 4), hr, shave=4)
        assert content["sets"]["set"]["images"][name]["psnr"] == pytest.approx(expected, abs=1e-9)
    bicubic = evaluate("bicubic", [root], 4, progress=False)["set"]["psnr"]
    assert content["sets"]["set"]["psnr"] < bicubic  # nearest LR is the harder input


def test_cli_degrade_writes_the_good_files_and_exits_1_for_a_skipped_one(tmp_path, capsys):
    write_image(tmp_path / "HR" / "one.png", _smooth(24, 24, 1))
    (tmp_path / "HR" / "junk.png").write_bytes(b"not an image")
    argv = ["degrade", "--hr-dir", str(tmp_path), "--scale", "2", "--output", str(tmp_path)]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert f"skipped {tmp_path / 'HR' / 'junk.png'}: not an image" in captured.err
    assert captured.err.strip().endswith("1 file(s) skipped (listed above); the others are done")
    assert (tmp_path / "LR_nearest" / "X2" / "onex2.png").is_file()


def test_cli_degrade_usage_and_errors(tmp_path, capsys):
    assert cli.main(["degrade", "--kind", "box", "--hr-dir", "x", "--output", "y"]) == 2
    assert cli.main(["degrade", "--hr-dir", str(tmp_path)]) == 2
    assert "--output is required" in capsys.readouterr().err
    assert cli.main(["degrade", "--hr-dir", str(tmp_path / "no"), "--output", "o"]) == 1
    assert "folder does not exist" in capsys.readouterr().err
    assert cli.main(["degrade", "--hr-dir", str(tmp_path), "--output", "o",
                     "--jpeg-quality", "0"]) == 2  # fmt: skip
    assert cli.main(["evaluate", "--model", "bicubic", str(tmp_path), "--lr-kind", "DN"]) == 1
    assert "no HR/ and LR_DN/X4/ folders" in capsys.readouterr().err


def test_closed_loop_readout_of_lr_only_folders(tiny, tmp_path, capsys):
    """``evaluate --lr-only``: per image mean |D_0(D_1(SR_top)) − x|, computed here with the
    networks directly, for a plain folder of LR images and a set's LR_nearest/X4."""
    import keras

    model, path = tiny
    lr_folder = tmp_path / "photos"
    images = {"a": _smooth(20, 28, 3), "deep/b": _smooth(17, 13, 4)}
    for name, image in images.items():
        write_image(lr_folder / f"{name}.png", image)
    (lr_folder / "broken.png").write_bytes(b"no image")
    output = tmp_path / "loop.json"
    argv = ["evaluate", "--model", str(path), "--lr-only", str(lr_folder), "--json", str(output)]
    assert cli.main(argv) == 1  # broken.png skipped; the others are measured and written
    result = json.loads(output.read_text())["sets"]["photos"]
    assert list(result["skipped"]) == [str(lr_folder / "broken.png")]
    for name, image in images.items():
        x = image[None].astype(np.float32)
        top = model.primal(x)[-1]
        loop = model.duals[0](model.duals[1](top))
        expected = float(keras.ops.mean(keras.ops.abs(loop - x)))
        assert result["images"][name]["loop_error"] == pytest.approx(expected, rel=1e-5)
    assert result["loop_error"] == pytest.approx(
        np.mean([v["loop_error"] for v in result["images"].values()])
    )
    out = capsys.readouterr().out
    assert "photos (2 LR images, no HR)" in out and "loop error" in out
    assert f"{result['loop_error']:.3f}" in out
    # A benchmark set: its LR_<kind>/X4 images are the LR-only inputs.
    (tmp_path / "set" / "HR").mkdir(parents=True)
    write_image(tmp_path / "set" / "LR_nearest" / "X4" / "ax4.png", images["a"])
    argv = ["evaluate", "--model", str(path), "--lr-only", str(tmp_path / "set")]
    assert cli.main([*argv, "--lr-kind", "nearest", "--json", str(output)]) == 0
    in_set = json.loads(output.read_text())["sets"]["set"]["images"]
    assert list(in_set) == ["a"]  # named as the HR image, without "x4"
    assert in_set["a"]["loop_error"] == pytest.approx(result["images"]["a"]["loop_error"])
    assert cli.main(["evaluate", "--model", "bicubic", "--lr-only", str(lr_folder)]) == 2
