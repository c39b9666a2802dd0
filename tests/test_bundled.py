"""Tests for drn_tf/bundled.py: the bundled files are where it says, and the exporters and
benchmarks reach the sample photo without importing the demo (or TensorFlow)."""

from helpers import run_python
from PIL import Image

from drn_tf import bundled, demo


def test_the_bundled_files_are_there():
    with Image.open(bundled.SAMPLE_IMAGE) as photo:
        assert photo.mode == "RGB" and min(photo.size) >= 128
    assert demo.SAMPLE_IMAGE == bundled.SAMPLE_IMAGE  # the demo's default photo
    for folder in (bundled.CALIBRATION_SET, bundled.HELD_OUT_SET):
        assert folder.parent == bundled.ASSETS and list(folder.glob("*.png"))


def test_exporters_and_benchmarks_reach_the_sample_photo_without_the_demo():
    code = """
        import sys
        from benchmarks import latency
        from export import photo_sets
        photo_sets.probe_images(2)
        latency.benchmark_image(64)
        print(sorted(m for m in ("drn_tf.demo", "tensorflow") if m in sys.modules))
    """
    result = run_python(code, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr
