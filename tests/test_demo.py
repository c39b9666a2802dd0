"""The main job: the demo, and the packaged default model against the published baseline."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drn_tf import demo
from drn_tf.degrade import imresize, modcrop
from drn_tf.evaluation import evaluate
from drn_tf.images import read_image
from drn_tf.inference import DEFAULT_MODEL_PATH, load_model
from drn_tf.metrics import psnr_y, ssim_y

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark"


def test_demo_writes_images_and_scores_both_methods(tiny, tmp_path):
    results = demo.run_demo(tmp_path, model=str(tiny[1]))

    hr = modcrop(read_image(demo.SAMPLE_IMAGE), 4)
    lr = imresize(hr, 1 / 4)
    assert results["bicubic"]["psnr"] == pytest.approx(psnr_y(imresize(lr, 4), hr, 4))
    assert results["bicubic"]["ssim"] == pytest.approx(ssim_y(imresize(lr, 4), hr, 4))
    sr = read_image(tmp_path / "chelsea_x4.png")
    assert sr.shape == hr.shape
    assert results["drn"]["psnr"] == pytest.approx(psnr_y(sr, hr, 4))
    picture = Image.open(tmp_path / "comparison.png")
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


@pytest.mark.skipif(not DEFAULT_MODEL_PATH.is_file(), reason="no packaged model")
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"benchmark data not found at {SHARED}")
def test_default_model_beats_bicubic_on_set5_and_set14():
    # The bar: +1.0 dB on Set5 ×4 and +0.5 dB on Set14 ×4 over bicubic (Y-PSNR).
    model = load_model("default")
    assert model.scale == 4
    folders = [SHARED / "Set5", SHARED / "Set14"]
    ours = evaluate(model, folders, 4, progress=False)
    bicubic = evaluate("bicubic", folders, 4, progress=False)
    assert ours["Set5"]["psnr"] >= bicubic["Set5"]["psnr"] + 1.0
    assert ours["Set14"]["psnr"] >= bicubic["Set14"]["psnr"] + 0.5
