"""Tests for ``python -m benchmarks.video_speed``: its flags, the clip it makes, the labels of
what ran, and a tiny run whose report is checked against the videos it wrote (read back with
PyAV). No timed assertions: speed targets live in the benchmark's numbers."""

from __future__ import annotations

import json
import re
import shlex

import av
import numpy as np
import pytest

from benchmarks import video_speed
from drn_tf.bundled import SAMPLE_IMAGE
from drn_tf.flags import parse_config
from drn_tf.precision import UPSCALE_PRECISIONS
from export.runtime import RUNTIMES


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_usage_examples_in_the_docstring_parse():
    examples = re.findall(rf"{video_speed.PROG}( [^\n]*)", video_speed.__doc__)
    assert examples
    for example in examples:
        parse_config(video_speed.VideoSpeedConfig, shlex.split(example), video_speed.PROG)


def test_the_runs_cover_every_runtime_and_precision_of_the_upscaler():
    runtimes = {run.partition(":")[0] for run in video_speed.RUNS}
    assert runtimes == set(RUNTIMES)
    keras = {run.partition(":")[2] for run in video_speed.RUNS if run.startswith("keras:")}
    # Keras's --precision values but auto (float32 or bfloat16, by the CPU)
    assert len(keras) == len(UPSCALE_PRECISIONS) - 1
    assert {"openvino:fp32", "openvino:bf16", "openvino:int8"} <= set(video_speed.RUNS)


def test_bf16_runs_are_labelled_by_what_the_cpu_computes():
    native = {"avx512_bf16": True}
    assert video_speed.ran_as("keras:bf16", native) == ("keras bf16", "bf16")
    assert video_speed.ran_as("openvino:bf16", {"amx_bf16": True}) == ("openvino bf16", "bf16")
    assert video_speed.ran_as("openvino:bf16", {})[1] == "fp32"
    assert "ran fp32" in video_speed.ran_as("openvino:bf16", {"avx512f": True})[0]
    assert video_speed.ran_as("keras:bf16", {"avx2": True}) == (
        "keras bf16 (no native bf16: emulated)",
        "bf16 emulated",
    )
    assert video_speed.ran_as("openvino:int8", {}) == ("openvino int8", "int8")


def test_the_clip_pans_so_that_every_frame_differs(tmp_path):
    clip = tmp_path / "clip.mp4"
    video_speed.make_clip(SAMPLE_IMAGE, clip, 3, (480, 270))  # the photo is 451x300
    frames = _frames(clip)
    assert len(frames) == 3 and frames[0].shape == (270, 480, 3)
    for a, b in zip(frames, frames[1:], strict=False):
        assert np.abs(a.astype(int) - b).mean() > 2  # a moved window, not codec noise


@pytest.mark.parametrize(
    "argv, status, message",
    [
        (["--runs", "keras:int8"], 2, "--runs: unknown keras:int8"),
        (["--size", "33x24"], 2, "even sides"),
        (["--frames", "0"], 2, "--frames must be at least 1"),
        (["--photo", "missing.png"], 1, "--photo missing.png: file does not exist"),
    ],
)
def test_bad_flags_are_one_line_before_any_work(argv, status, message, tmp_path, capsys):
    assert video_speed.main([*argv, "--output", str(tmp_path)]) == status
    error = capsys.readouterr().err
    assert message in error.splitlines()[0] and "Traceback" not in error
    assert not any(tmp_path.iterdir())


@pytest.mark.slow  # two fresh TensorFlow processes and a TFLite conversion
def test_a_tiny_run_reports_every_frame_of_each_run(tiny, tmp_path):
    _, model_path = tiny
    argv = ["--frames", "2", "--size", "32x24", "--model", str(model_path)]
    argv += ["--runs", "keras:fp32", "tflite:fp32", "--output", str(tmp_path)]
    assert video_speed.main(argv) == 0
    report = json.loads((tmp_path / "video_speed.json").read_text())
    assert report["clip"] == {"frames": 2, "size": [32, 24], "scale": 4}
    rows = report["rows"]
    assert [(r["run"], r["ran"], r["compute"]) for r in rows] == [
        ("keras:fp32", "keras fp32", "fp32"),
        ("tflite:fp32", "tflite fp32", "fp32"),
    ]
    keras_frames = _frames(rows[0]["output"])
    for row in rows:
        frames = _frames(row["output"])
        assert row["frames"] == len(frames) == 2
        assert frames[0].shape == (96, 128, 3)
        assert row["frames_per_s"] == pytest.approx(2 / row["seconds"])
        assert row["s_per_frame"] == pytest.approx(row["seconds"] / 2)
        assert 100 < row["peak_rss_mb"] < 8192
    assert rows[0]["psnr_vs_keras_fp32_db"] is None  # the reference itself
    tflite_frames = _frames(rows[1]["output"])
    mse = np.mean(
        [(a.astype(float) - b) ** 2 for a, b in zip(keras_frames, tflite_frames, strict=True)]
    )
    expected = np.inf if mse == 0 else 10 * np.log10(255**2 / mse)
    assert rows[1]["psnr_vs_keras_fp32_db"] == pytest.approx(expected)
    assert expected > 40  # the same network in another runtime, through the same encoder
    markdown = (tmp_path / "video_speed.md").read_text()
    assert report["cpu"]["described"] in markdown
    assert "| keras:fp32 | keras fp32 | 2 |" in markdown
    assert "| tflite:fp32 | tflite fp32 | 2 |" in markdown
