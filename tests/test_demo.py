"""The main job: the demo, and the packaged default model against the published baseline."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drn_tf import demo
from drn_tf.bundled import DEFAULT_MODEL_PATHS
from drn_tf.degrade import imresize, modcrop
from drn_tf.evaluation import evaluate
from drn_tf.images import read_image
from drn_tf.loading import load_model
from drn_tf.metrics import psnr_y, ssim_y

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark"


def test_demo_writes_images_and_scores_both_methods(tiny, tmp_path):
    results = demo.run_demo(tmp_path, model=str(tiny[1]))
    assert results["scale"] == 4

    hr = modcrop(read_image(demo.SAMPLE_IMAGE), 4)
    lr = imresize(hr, 1 / 4)
    assert results["bicubic"]["psnr"] == pytest.approx(psnr_y(imresize(lr, 4), hr, 4))
    assert results["bicubic"]["ssim"] == pytest.approx(ssim_y(imresize(lr, 4), hr, 4))
    sr = read_image(tmp_path / "chelsea_x4.png")
    assert sr.shape == hr.shape
    assert results["drn"]["psnr"] == pytest.approx(psnr_y(sr, hr, 4))
    picture = Image.open(tmp_path / "comparison_x4.png")
    # Three panels side by side, each with its zoomed crop underneath.
    assert picture.width > 3 * hr.shape[1] and picture.height > hr.shape[0]


def test_sample_image_is_bundled_with_its_licence():
    assert demo.SAMPLE_IMAGE.is_file()
    attribution = (demo.SAMPLE_IMAGE.parent / "ATTRIBUTION.md").read_text()
    assert "CC0" in attribution and demo.SAMPLE_IMAGE.name in attribution


def test_comparison_picture_layout():
    panels = [(str(i), np.full((20, 30, 3), 50 * i, np.uint8)) for i in range(3)]
    picture = demo.comparison_picture(panels, crop_box=(5, 5, 8, 10), zoom=2)
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
    # The zoomed crop of panel 1 sits below it and holds that panel's colour.
    assert (picture[-16:, 36 + 2 : 36 + 18] == 50).all()


def test_demo_command_shows_each_packaged_scale(tiny, tiny_x2, tmp_path, monkeypatch, capsys):
    from drn_tf import bundled, cli

    monkeypatch.setattr(bundled, "DEFAULT_MODEL_PATHS", {2: tiny_x2, 4: tiny[1]})
    assert cli.main(["demo", "--output", str(tmp_path / "out"), "--scales", "2", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[1:5]] == [
        ["×2", "bicubic"],
        ["×2", "drn"],
        ["×4", "bicubic"],
        ["×4", "drn"],
    ]
    for name in ("chelsea_x2.png", "comparison_x2.png", "chelsea_x4.png", "comparison_x4.png"):
        assert (tmp_path / "out" / name).is_file()


# Issue 23's bars (Y-PSNR, `drn-tf evaluate`), the published models trained on the same 291
# images: ×2 VDSR's, ×4 DRRN's, ×8 Set5 LapSRN's (LapSRN's Set14 24.35 is not a bar of the issue:
# ×8 Set14 keeps its margin over bicubic). Set5 and Set14 are test sets only.
BARS = {
    2: {"Set5": 37.53, "Set14": 33.03},
    4: {"Set5": 31.68, "Set14": 28.21},
    8: {"Set5": 26.15, "gain": 1.0},
}


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"benchmark data not found at {SHARED}")
@pytest.mark.parametrize("scale", sorted(DEFAULT_MODEL_PATHS))
def test_packaged_models_meet_their_bars_on_set5_and_set14(scale):
    path = DEFAULT_MODEL_PATHS[scale]
    assert path.stat().st_size < 20e6  # each packaged file under 20 MB
    model = load_model("default", scale=scale)
    folders = [SHARED / "Set5", SHARED / "Set14"]
    ours = evaluate(model, folders, scale, progress=False)
    bicubic = evaluate("bicubic", folders, scale, progress=False)
    for name in ("Set5", "Set14"):
        bar = BARS[scale].get(name, bicubic[name]["psnr"] + BARS[scale].get("gain", 0.0))
        assert ours[name]["psnr"] >= bar, (name, ours[name]["psnr"], bar)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"benchmark data not found at {SHARED}")
def test_the_fast_tier_is_above_fsrcnn_on_set5_and_set14():
    # Issue 23's bar for the fast tier: FSRCNN ×4 (Set5 30.71, Set14 27.59, its paper).
    ours = evaluate(load_model("fast"), [SHARED / "Set5", SHARED / "Set14"], 4, progress=False)
    assert ours["Set5"]["psnr"] > 30.71 and ours["Set14"]["psnr"] > 27.59, ours


def test_demo_names_the_scales_flag(tmp_path, capsys):
    from drn_tf import cli

    assert cli.main(["demo", "--output", str(tmp_path / "out"), "--scales", "3"]) == 2
    assert "--scales must be a power of two (2, 4, 8, …), got 3" in capsys.readouterr().err
