"""Tests for drn_tf/bundled.py: the bundled files are where it says, the packaged models'
names resolve to their files, and the exporters and benchmarks reach the sample photo without
importing the demo (or TensorFlow)."""

from pathlib import Path

import pytest
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


def test_fast_names_the_packaged_fast_x4_model_and_no_other_scale(tmp_path, monkeypatch):
    weights = Path(bundled.__file__).parent / "weights"
    assert {4: weights / "drn_fast_x4.keras"} == bundled.FAST_MODEL_PATHS
    fast = tmp_path / "weights" / "drn_fast_x4.keras"
    monkeypatch.setattr(bundled, "FAST_MODEL_PATHS", {4: fast})
    with pytest.raises(FileNotFoundError, match=r"drn_fast_x4.keras: the packaged fast ×4 model"):
        bundled.model_path("fast")
    fast.parent.mkdir()
    fast.write_bytes(b"")
    assert bundled.model_path("fast") == fast == bundled.model_path("fast", 4)
    for scale in (2, 8):  # packaged by default, but not as fast models
        with pytest.raises(ValueError) as error:
            bundled.model_path("fast", scale)
        assert str(error.value) == (
            f"no packaged fast ×{scale} model (packaged: ×4); pass the path of a .keras model"
        )
    # "default" still names the default models, and anything else is a path.
    monkeypatch.setattr(bundled, "DEFAULT_MODEL_PATHS", {2: fast.parent / "x2.keras", 4: fast})
    with pytest.raises(FileNotFoundError, match=r"x2.keras: the packaged ×2 model is not"):
        bundled.model_path("default", 2)
    with pytest.raises(ValueError, match=r"^no packaged ×8 model \(packaged: ×2, ×4\);"):
        bundled.model_path("default", 8)
    assert [bundled.is_packaged(n) for n in ("default", "fast", "fast.keras", Path("x"))] == [
        True,
        True,
        False,
        False,
    ]
    assert bundled.model_path("fast.keras", 2) == Path("fast.keras")


def test_the_packaged_fast_model_takes_at_most_an_eighth_of_the_default_macs():
    # The fast tier's reason to exist (issue 23): ×4 with ≤ 1/8 of the default ×4 model's
    # multiply-accumulates, counted from the traced graphs' convolutions.
    import drn_tf
    from benchmarks.paths import conv_macs

    fast, default = drn_tf.load_model("fast"), drn_tf.load_model("default")
    assert fast.scale == default.scale == 4
    assert 8 * conv_macs(fast, 128, 128) <= conv_macs(default, 128, 128)
