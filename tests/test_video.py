"""Tests for videos: ``drn_tf.upscale_video`` / ``drn-tf upscale clip.mp4`` and footage as
DRN-Adapt data (``adapt --unpaired-dir clip.mp4``, ``evaluate --lr-only clip.mp4``).

Clips are made with PyAV (``helpers.make_clip``: H.264 with an AAC sine track, tiny sizes);
expectations come from reading them back independently with PyAV: frame counts, timestamps,
durations, the audio packets' bytes, and ``drn_tf.upscale`` applied to the decoded input frames.
"""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import ROOT, SUBPROCESS_ENV, decode, make_clip, write_images
from PIL import Image

import drn_tf
from drn_tf import cli, settings, video
from drn_tf.evaluation import closed_loop_error
from drn_tf.frames import VIDEO_EXTENSIONS, VideoReadError
from drn_tf.inference import Bicubic

pytestmark = pytest.mark.usefixtures("float32_policy")


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


def duration(path: Path) -> int:
    with av.open(str(path)) as container:
        return container.duration


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "drn_tf", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=SUBPROCESS_ENV,
        cwd=ROOT,
    )


# --- upscale_video --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upscaled(clip, tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("upscaled") / "clip_x4.mp4"
    result = drn_tf.upscale_video(clip, out, tiny[0], precision="float32", progress=False)
    return result, out


def test_upscaled_video_has_every_frame_at_4x_with_the_same_timing(clip, upscaled):
    result, out = upscaled
    before, after = decode(clip), decode(out)
    assert result.frames == len(after) == len(before) == 24
    assert {(f.width, f.height) for f in after} == {(192, 128)}
    assert [f.time for f in after] == [f.time for f in before]
    assert duration(out) == duration(clip)
    assert (after[0].rotation, after[0].colorspace, after[0].color_primaries) == (90, 1, 1)


def test_audio_is_copied_packet_for_packet(clip, upscaled):
    result, out = upscaled
    assert result.copied == 1
    copied = audio_packets(out)
    assert len(copied) > 30
    assert copied == audio_packets(clip)


def test_upscaled_frames_match_upscale_of_the_decoded_frames(clip, upscaled, tiny):
    _, out = upscaled
    frames = [f.to_ndarray(format="rgb24") for f in decode(clip)]
    expected = drn_tf.upscale(frames, tiny[0], precision="float32")
    for frame, wanted in zip(decode(out), expected, strict=True):
        assert psnr(frame.to_ndarray(format="rgb24"), wanted) > 30


def test_subtitles_are_copied_with_their_times(tmp_path):
    source = tmp_path / "subtitled.mkv"
    with av.open(str(source), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        subtitles = out.add_mux_stream("subrip")
        for i in range(24):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 9, np.uint8), "rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
            if i % 8 == 0:
                line = av.Packet(f"line {i}".encode())
                line.stream, line.time_base = subtitles, Fraction(1, 1000)
                line.pts = line.dts = i * 1000 // 24
                line.duration = 300
                out.mux(line)
        out.mux(stream.encode())
    out = tmp_path / "subtitled_x2.mkv"
    assert video.upscale_video(source, out, Bicubic(2), progress=False).copied == 1

    def lines(path):
        with av.open(str(path)) as container:
            return [(bytes(p), p.pts, p.duration) for p in container.demux(subtitles=0) if p.size]

    assert lines(out) == lines(source) == [
        (b"line 0", 0, 300), (b"line 8", 333, 300), (b"line 16", 666, 300)
    ]  # fmt: skip


def test_variable_frame_rate_keeps_every_timestamp(tmp_path):
    rng = np.random.default_rng(0)
    pts = np.cumsum(rng.integers(20, 90, 30)).tolist()
    source = make_clip(tmp_path / "vfr.mkv", 30, pts=pts, time_base=Fraction(1, 1000))
    out = tmp_path / "vfr_x2.mkv"
    video.upscale_video(source, out, Bicubic(2), progress=False)
    assert [f.pts for f in decode(out)] == [f.pts for f in decode(source)] == pts
    assert duration(out) == duration(source)
    assert audio_packets(out) == audio_packets(source)


def test_ten_bit_video_stays_ten_bit(tmp_path):
    source = make_clip(tmp_path / "deep.mp4", 6, pix_fmt="yuv420p10le", audio=False)
    out = tmp_path / "deep_x2.mp4"
    result = video.upscale_video(source, out, Bicubic(2), progress=False)
    frames = decode(out)
    assert [f.format.name for f in frames] == ["yuv420p10le"] * 6
    assert result.notes == []
    expected = drn_tf.upscale(decode(source)[2].to_ndarray(format="rgb48le"), Bicubic(2))
    assert psnr(frames[2].to_ndarray(format="rgb48le") // 257, expected // 257) > 30


def test_odd_output_size_loses_one_row_and_column_with_a_note(tmp_path):
    # H.264 4:2:0 sides are even; an RGB (PNG) clip of 45x31 upscaled x3 is 135x93.
    odd = make_clip(tmp_path / "odd.mov", 4, size=(45, 31), codec="png", pix_fmt="rgb24")
    out = tmp_path / "odd_x3.mov"
    result = video.upscale_video(odd, out, Bicubic(3), progress=False)
    frames = decode(out)
    assert [(f.width, f.height) for f in frames] == [(134, 92)] * 4
    assert frames[0].format.name == "yuv420p"
    assert result.notes == [
        "odd size 135x93: written as 134x92 (yuv420p needs even sides; the last row/column "
        "is dropped)"
    ]
    expected = drn_tf.upscale(decode(odd)[1].to_ndarray(format="rgb24"), Bicubic(3))
    assert psnr(frames[1].to_ndarray(format="rgb24"), expected[:92, :134]) > 30


def test_corrupt_packets_are_skipped_counted_and_timing_kept(tmp_path):
    source = make_clip(tmp_path / "whole.mp4", 48, audio=False)
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(1)
    for start in (len(data) // 3, len(data) // 2):  # inside the video data, not the index
        data[start : start + 300] = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    garbled = tmp_path / "garbled.mp4"
    garbled.write_bytes(bytes(data))
    out = tmp_path / "garbled_x2.mp4"
    result = video.upscale_video(garbled, out, Bicubic(2), progress=False)
    frames = decode(out)
    assert result.skipped > 0
    assert result.frames == len(frames) == 48 - result.skipped
    assert f"{result.skipped} corrupt frame(s) skipped" in result.notes[-1]
    times = {f.time for f in decode(source)}
    assert {f.time for f in frames} <= times  # every frame kept its own time
    assert duration(out) == duration(source)


def test_existing_destination_is_refused_unless_overwrite(clip, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="out.mp4: exists"):
        video.upscale_video(clip, out, Bicubic(2), progress=False)
    assert out.read_bytes() == b"keep me"
    video.upscale_video(clip, out, Bicubic(2), overwrite=True, progress=False)
    assert len(decode(out)) == 24


# --- bad inputs -----------------------------------------------------------------------------


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        sound = out.add_stream("aac", rate=44100)
        sound.layout = "mono"
        for start in range(0, 8192, 1024):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
            chunk.sample_rate, chunk.pts = 44100, start
            out.mux(sound.encode(chunk))
        out.mux(sound.encode())
    return path


def no_decodable_frame(path: Path) -> Path:
    """A clip whose video packets are all zeros: the index is fine, no frame decodes."""
    make_clip(path, 6, audio=False)
    data = bytearray(path.read_bytes())
    start, end = data.index(b"mdat") + 4, data.index(b"moov") - 4
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: p.write_text("not a video\n") and p, "not a video FFmpeg can read"),
        (audio_only, "no video stream (audio streams only)"),
        (no_decodable_frame, "no video frame could be decoded"),
    ],
    ids=["not-a-video", "audio-only", "zero-frames"],
)
def test_bad_video_fails_in_one_line_with_exit_1(make, problem, tmp_path, capsys):
    source = tmp_path / "bad.mp4"
    make(source)
    with pytest.raises(VideoReadError, match=re.escape(f"{source}: {problem}")):
        video.upscale_video(source, tmp_path / "x.mp4", Bicubic(2), progress=False)
    good = make_clip(tmp_path / "good.mp4", 3, audio=False)
    out = tmp_path / "out"
    status = cli.main(["upscale", str(source), str(good), "--output", str(out)]
                      + ["--model", "bicubic", "--scale", "2"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert f"failed {source}: {problem}" in err[0]
    assert err[-1] == "drn-tf upscale: error: 1 of 2 video(s) failed (listed above)"
    assert sorted(p.name for p in out.iterdir()) == ["good_x2.mp4"]  # the other one done


# --- the command line -----------------------------------------------------------------------


def test_cli_mirrors_the_video_settings():
    assert set(settings.VIDEO_SUFFIXES) == VIDEO_EXTENSIONS
    assert settings.VIDEO_CRF == video.DEFAULT_CRF


def test_cli_upscales_videos_and_images_of_folders_keeping_layout(tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    make_clip(folder / "sub" / "a.mkv", 3)
    make_clip(folder / "b.mov", 3, audio=False)
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(folder / "c.png")
    out = folder / "out"  # inside the input: its outputs are skipped on a second run
    args = ["upscale", str(folder), "--output", str(out), "--model", "bicubic", "--scale", "2"]
    assert cli.main(args) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["b_x2.mov", "c_x2.png", "sub/a_x2.mkv"]
    assert audio_packets(out / "sub" / "a_x2.mkv") == audio_packets(folder / "sub" / "a.mkv")
    assert capsys.readouterr().out.splitlines() == [
        f"wrote 1 image(s) to {out}",
        f"wrote 2 video(s) to {out}",
    ]
    before = (out / "b_x2.mov").stat().st_mtime_ns
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(
        f"wrote 0 video(s) to {out}; 2 kept (already there; --overwrite replaces them); "
        "2 earlier output(s) in the inputs skipped"
    )
    assert (out / "b_x2.mov").stat().st_mtime_ns == before
    assert cli.main([*args, "--overwrite"]) == 0
    assert (out / "b_x2.mov").stat().st_mtime_ns != before


def test_cli_rejects_bad_video_flags(clip, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cli.main(["upscale", str(clip), "--output", out, "--crf", "99"]) == 2
    assert "--crf must be between 0 and 63" in capsys.readouterr().err
    assert cli.main(["upscale", str(clip), "--output", out, "--video-codec", "nope"]) == 1
    assert "no video encoder 'nope'" in capsys.readouterr().err
    assert cli.main(["upscale", str(clip), "--output", str(tmp_path / "x.png")]) == 2
    assert "names an image file" in capsys.readouterr().err


def test_cli_writes_the_video_file_named_by_output(clip, tmp_path, capsys):
    out = tmp_path / "named.mkv"  # another container than the input's
    args = ["upscale", str(clip), "--output", str(out), "--model", "bicubic", "--scale", "2"]
    assert cli.main(args) == 0
    assert len(decode(out)) == 24
    assert audio_packets(out) == audio_packets(clip)


WAIT_FOR_TEMP = """
    import os, pathlib, signal, subprocess, sys, time
    out = pathlib.Path(sys.argv[1])
    process = subprocess.Popen(
        [sys.executable, "-c", "import signal, runpy, sys; "
         "signal.signal(signal.SIGINT, signal.default_int_handler); "
         "sys.argv[0] = 'drn-tf'; runpy.run_module('drn_tf', run_name='__main__')",
         *sys.argv[3:]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        temps = [p for p in out.glob(".*") if p.stat().st_size > 0] if out.is_dir() else []
        if temps:
            break
        time.sleep(0.01)
    process.send_signal(int(sys.argv[2]))
    stdout, stderr = process.communicate(timeout=120)
    print(process.returncode)
    print(stderr.strip().splitlines()[-1] if stderr.strip() else "")
"""


def stop_midway(long_clip: Path, out: Path, signum: int) -> tuple[int, str]:
    """Runs ``drn-tf upscale`` on ``long_clip``, sends ``signum`` once the output's temporary
    file has data; returns the exit status and the last line on stderr."""
    args = ["upscale", str(long_clip), "--output", str(out), "--model", "bicubic"]
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WAIT_FOR_TEMP), str(out), str(int(signum)), *args],
        capture_output=True, text=True, timeout=400, env=SUBPROCESS_ENV, cwd=ROOT,
    )  # fmt: skip
    status, last = (done.stdout.splitlines() + ["", ""])[:2]
    return int(status), last


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("long") / "long.mp4", 300, size=(64, 48))


@pytest.mark.slow
def test_sigterm_ends_with_one_line_and_leaves_nothing(long_clip, tmp_path):
    out = tmp_path / "out"
    status, last = stop_midway(long_clip, out, signal.SIGTERM)
    assert (status, last) == (130, "drn-tf upscale: interrupted")
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_killed_run_leaves_a_temp_file_that_a_rerun_sweeps_and_starts_over(long_clip, tmp_path):
    out = tmp_path / "out"
    status, _ = stop_midway(long_clip, out, signal.SIGKILL)
    assert status == -signal.SIGKILL
    leftovers = list(out.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".long_x4.")
    assert not (out / "long_x4.mp4").exists()
    done = run_cli("upscale", str(long_clip), "--output", str(out), "--model", "bicubic")
    assert done.returncode == 0, done.stderr
    assert [p.name for p in out.iterdir()] == ["long_x4.mp4"]  # the leftover swept
    assert len(decode(out / "long_x4.mp4")) == 300


MEMORY_SCRIPT = """
    import sys
    from pathlib import Path

    from drn_tf import video
    from drn_tf.inference import Bicubic

    def rss_mb():
        status = Path("/proc/self/status").read_text()
        line = next(l for l in status.splitlines() if l.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    seen = []
    upscale = video.upscale

    def measured(frames, model, **settings):
        seen.append(rss_mb())
        return upscale(frames, model, **settings)

    video.upscale = measured
    result = video.upscale_video(sys.argv[1], sys.argv[2], Bicubic(2), progress=False)
    # After the first 20 batches (160 frames) every buffer has reached its size.
    print(result.frames, round(seen[20]), round(max(seen[20:])))
"""


@pytest.mark.slow
def test_memory_stays_flat_over_a_long_clip(tmp_path):
    source = make_clip(tmp_path / "long.mp4", 1000, size=(128, 96))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MEMORY_SCRIPT), str(source),
         str(tmp_path / "long_x2.mp4")],
        capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    frames, settled, peak = map(int, done.stdout.split())
    assert frames == 1000
    # Holding every decoded frame as RGB would add 1000 x 128x96 x 3 bytes, 37 MB, and every
    # output frame 147 MB more; measured: 4 MB.
    assert peak - settled < 25, (settled, peak)


# --- footage as adaptation data -------------------------------------------------------------


@pytest.mark.slow
def test_adapt_trains_on_the_frames_of_a_clip(clip, tiny, tmp_path, capsys):
    write_images(tmp_path / "paired", 2, seed=0, size=48)
    run = tmp_path / "run"
    status = cli.main([
        "adapt", "--model", str(tiny[1]), "--paired-dir", str(tmp_path / "paired"),
        "--unpaired-dir", str(clip), "--frames-per-video", "5", "--output", str(run),
        "--steps", "2", "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "32",
        "--precision", "float32", "--no-tensorboard", "--progress", "0",
    ])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 0, err[-3000:]
    assert "adapting on 2 paired + 5 LR-only images" in out
    assert (run / "model.keras").is_file()


def test_evaluate_lr_only_reports_the_loop_error_of_sampled_frames(clip, tiny, capsys):
    args = ["--lr-only", str(clip), "--model", str(tiny[1]), "--frames-per-video", "3"]
    status = cli.main(["evaluate", *args])
    out, err = capsys.readouterr()
    assert status == 0, err[-3000:]
    rows = dict(line.rsplit(None, 1) for line in out.splitlines() if line.startswith("frame_"))
    decoded = decode(clip)
    expected = {
        f"frame_{i:06d}": closed_loop_error(tiny[0], decoded[i].to_ndarray(format="rgb24"))
        for i in (4, 12, 20)
    }
    assert rows.keys() == expected.keys()
    for name, error in expected.items():
        assert float(rows[name]) == pytest.approx(error, abs=1e-3)
    mean = next(line for line in out.splitlines() if line.startswith("mean"))
    assert float(mean.split()[-1]) == pytest.approx(np.mean(list(expected.values())), abs=2e-3)


def test_evaluate_without_lr_only_refuses_a_video(clip, capsys):
    assert cli.main(["evaluate", str(clip)]) == 2
    assert "a video has no HR frames; --lr-only evaluates it" in capsys.readouterr().err
