"""Frames per second of upscaling a video ×4, through each runtime and precision of the upscaler.

    python -m benchmarks.video_speed
    python -m benchmarks.video_speed --frames 2 --runs keras:fp32

Makes an H.264 clip of ``--frames`` frames of ``--size`` (480×270: the output is 1920×1080 with
the packaged ×4 model), a window panning across the bundled photo, then upscales it the way
``drn-tf upscale clip.mp4 --runtime R --precision P`` does (:func:`drn_tf.upscale_video`,
its defaults: libx264 at crf 18, tile 128, overlap 16) once per ``--runs`` entry, each in a
fresh process of its own. Frames/s count decoding, upscaling and encoding; before it the process
upscales a one-frame clip of the same size once (graph tracing, the runtime's compilation:
"start-up", shown apart). Converted models come from the cache of :mod:`export.runtime`,
filled first in this process (the one-time conversion is timed apart). Peak RSS is the
process's ``VmHWM``. Every output video is compared with the Keras fp32 run's (PSNR over all
frames, RGB, peak 255: both went through x264, so this is the agreement a viewer gets, not the
network's alone). The CPU is named with the flags that decide the fast paths; a bf16 run on a
CPU without bf16 instructions is labelled by what it ran (OpenVINO: fp32; Keras: emulated).
Writes ``video_speed.md`` and ``.json`` to ``--output``; the Markdown is printed too.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks import paths as P
from benchmarks import report as R
from drn_tf.bundled import SAMPLE_IMAGE, is_packaged
from drn_tf.cpu import describe_cpu
from drn_tf.flags import UsageError, setting

PROG = "python -m benchmarks.video_speed"
#: ``--runs`` names, ``RUNTIME:PRECISION``: every runtime and precision ``drn-tf upscale``
#: offers (``--runtime``; Keras's ``--precision``; OpenVINO's precisions), and ``auto``.
RUNS = (
    "keras:fp32",
    "keras:bf16",
    "auto",
    "openvino:fp32",
    "openvino:bf16",
    "openvino:int8",
    "onnxruntime:fp32",
    "tflite:fp32",
)
#: The Keras ``--precision`` of each ``keras:`` run.
_KERAS_PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}
FPS = 24
#: How the report names ``--model``'s packaged models.
_PACKAGED_LABELS = {"default": "the packaged ×4 model", "fast": "the packaged fast ×4 model"}


@dataclasses.dataclass
class VideoSpeedConfig:
    """Frames/s of upscaling a 480x270 H.264 clip to 1920x1080 through each runtime and
    precision, side by side."""

    frames: int = setting(12, "Frames in the clip.")
    size: str = setting("480x270", "The clip's frame size WIDTHxHEIGHT (even sides).")
    runs: list[str] = setting(list(RUNS), f"Runs RUNTIME:PRECISION: {', '.join(RUNS)}.")
    model: str = setting(
        "default", "'default' or 'fast' (the packaged x4 models) or a .keras path."
    )
    photo: str = setting(str(SAMPLE_IMAGE), "The photo the clip pans across.")
    output: str = setting("runs/benchmarks", "Folder for video_speed.md and .json.")


def ran_as(run: str, flags: dict[str, bool]) -> tuple[str, str]:
    """``(label, compute)`` of ``run`` (``RUNTIME:PRECISION``) on a CPU with ``flags``
    (:func:`benchmarks.paths.ran_as`: bf16 without native bf16 is not labelled bf16)."""
    runtime, _, precision = run.partition(":")
    return P.ran_as(runtime, f"{runtime} {precision}", precision, flags)


def make_clip(photo: str | os.PathLike, path: Path, frames: int, size: tuple[int, int]) -> None:
    """Writes an H.264 clip (crf 12, yuv420p, :data:`FPS` frames/s) of ``frames`` frames of
    ``size`` (W, H): a window panning diagonally across ``photo``, which is first enlarged
    (Lanczos) to 1.25× the window where smaller, so that every frame differs."""
    import av
    from PIL import Image

    width, height = size
    with Image.open(photo) as image:
        image = image.convert("RGB")
        grow = max(1.25 * width / image.width, 1.25 * height / image.height, 1.0)
        if grow > 1:
            shape = (math.ceil(image.width * grow), math.ceil(image.height * grow))
            image = image.resize(shape, Image.LANCZOS)
        pixels = np.asarray(image)
    lefts = np.linspace(0, pixels.shape[1] - width, frames).round().astype(int)
    tops = np.linspace(0, pixels.shape[0] - height, frames).round().astype(int)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index, (left, top) in enumerate(zip(lefts, tops, strict=True)):
            window = np.ascontiguousarray(pixels[top : top + height, left : left + width])
            frame = av.VideoFrame.from_ndarray(window, "rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def _choice(run: str):
    from export import runtime

    if run == "auto":
        return runtime.choose("auto")
    name, _, precision = run.partition(":")
    return runtime.Runtime(name, _KERAS_PRECISIONS[precision] if name == "keras" else precision)


def _worker(run: str, model_name: str, clip: str, warmup: str, out: str, results) -> None:
    """Upscales ``warmup`` (start-up) and then ``clip`` in this fresh process, as the CLI
    does; puts the timings on ``results``."""
    from drn_tf.console import quiet_tensorflow

    quiet_tensorflow()  # before TensorFlow loads
    import drn_tf
    from drn_tf.precision import resolve_precision
    from export import runtime

    model = drn_tf.load_model(model_name)
    choice = _choice(run)
    precision = choice.precision  # as the runtimes name it
    if choice.name == "keras":
        precision = "bf16" if resolve_precision(precision) == "mixed_bfloat16" else "fp32"
    settings = {
        "network": runtime.network(model, choice),  # from the cache; None for Keras
        "precision": choice.precision if choice.name == "keras" else "auto",
        "overwrite": True,
    }
    start = time.perf_counter()
    drn_tf.upscale_video(
        warmup, Path(out).with_suffix(".warmup.mp4"), model, progress=False, **settings
    )
    startup = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    video = drn_tf.upscale_video(clip, out, model, **settings)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    results.put(
        {
            "frames": video.frames,
            "seconds": seconds,
            "cpu_seconds": cpu,  # all threads: less sensitive to other processes' load
            "load_average": os.getloadavg()[0],
            "startup_s": startup,
            "peak_rss_mb": R.peak_rss_mb(),
            "resolved": f"{choice.name}:{precision}",
            "reason": choice.reason,
        }
    )


def video_psnr(path: Path, reference: Path) -> float:
    """PSNR (peak 255) of all RGB frames of the video ``path`` against ``reference``'s."""
    import av

    squared, values = 0.0, 0
    with av.open(str(path)) as a, av.open(str(reference)) as b:
        for x, y in zip(a.decode(video=0), b.decode(video=0), strict=True):
            difference = x.to_ndarray(format="rgb24").astype(np.float64) - y.to_ndarray(
                format="rgb24"
            )
            squared += float(np.sum(difference**2))
            values += difference.size
    mse = squared / values
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _check(config: VideoSpeedConfig, positionals: list[str]) -> tuple[int, int]:
    """``(width, height)`` of the clip, once every flag is checked."""
    if positionals:
        raise UsageError(f"unexpected arguments: {' '.join(positionals)}")
    bad = [r for r in config.runs if r not in RUNS]
    if bad:
        raise UsageError(f"--runs: unknown {', '.join(bad)} (choose from {', '.join(RUNS)})")
    if config.frames < 1:
        raise UsageError(f"--frames must be at least 1, got {config.frames}")
    width, _, height = config.size.partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) % 2 == int(height) % 2 == 0):
        raise UsageError(f"--size: {config.size!r} is not WIDTHxHEIGHT with even sides (4:2:0)")
    if not Path(config.photo).is_file():
        raise FileNotFoundError(f"--photo {config.photo}: file does not exist")
    if not is_packaged(config.model) and not Path(config.model).is_file():
        raise FileNotFoundError(f"--model {config.model}: file does not exist")
    return int(width), int(height)


def run(config: VideoSpeedConfig, positionals: list[str], verbose: bool) -> None:
    from drn_tf.console import quiet_tensorflow

    width, height = _check(config, positionals)
    if not verbose:
        quiet_tensorflow()
    import drn_tf
    from export import runtime

    cpu = P.cpu_info()
    work = Path(config.output) / "video_speed"
    work.mkdir(parents=True, exist_ok=True)
    clip, warmup = work / "clip.mp4", work / "warmup.mp4"
    make_clip(config.photo, clip, config.frames, (width, height))
    make_clip(config.photo, warmup, 1, (width, height))
    model = drn_tf.load_model(config.model)
    conversions = {}
    for name in config.runs:  # fill the cache; the first conversion is timed
        start = time.perf_counter()
        runtime.network(model, _choice(name), progress=lambda line: print(line, file=sys.stderr))
        conversions[name] = time.perf_counter() - start
    scale = model.scale
    del model  # and the runners held for it: the workers run alone
    rows = []
    for name in config.runs:
        out = work / f"clip_{name.replace(':', '_')}_x{scale}.mp4"
        result = R.in_fresh_process(_worker, name, config.model, str(clip), str(warmup), str(out))
        label, compute = ran_as(result.pop("resolved"), cpu["flags"])
        reason = result.pop("reason")
        rows.append(
            {
                "run": name,
                "ran": f"{label} ({reason})" if reason else label,
                "compute": compute,
                **result,
                "frames_per_s": result["frames"] / result["seconds"],
                "s_per_frame": result["seconds"] / result["frames"],
                "conversion_s": conversions[name],
                "output": str(out),
            }
        )
        print(rows[-1], file=sys.stderr, flush=True)
    keras = next((r for r in rows if r["run"] == "keras:fp32"), None)
    for r in rows:
        compared = keras is not None and r is not keras
        r["psnr_vs_keras_fp32_db"] = (
            video_psnr(Path(r["output"]), Path(keras["output"])) if compared else None
        )
    out_size = f"{width * scale}×{height * scale}"
    command = f"{PROG} --frames {config.frames} --size {config.size} --runs {' '.join(config.runs)}"
    for flag, default in (("model", "default"), ("photo", str(SAMPLE_IMAGE))):
        if getattr(config, flag) != default:
            command += f" --{flag} {getattr(config, flag)}"
    lines = [
        f"# Video ×{scale} frames/s by runtime and precision: {describe_cpu()}, {cpu['cpus']} CPUs",
        "",
        f"`{command}`; {_PACKAGED_LABELS.get(config.model, 'that model')}"
        f"; a {config.frames}-frame {width}×{height} H.264 clip → {out_size} (libx264 crf 18, tile "
        "128, overlap 16: `drn-tf upscale`'s defaults); one fresh process per run. Frames/s "
        "count decoding, upscaling and encoding, after a one-frame start-up run (shown apart); "
        "conversion s: converting the model, or loading it from the cache (export.runtime); "
        "PSNR is of the encoded outputs, all frames.",
        "",
        "| run | ran as | frames | frames/s | s/frame | × Keras fp32 | CPU s | load avg "
        "| start-up s | peak RSS MB | PSNR vs Keras fp32 dB | conversion s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speed = f"{keras['seconds'] / r['seconds']:.2f}" if keras else "-"
        psnr = r["psnr_vs_keras_fp32_db"]
        psnr = "reference" if r is keras else "-" if psnr is None else f"{psnr:.1f}"
        psnr = psnr.replace("inf", "∞")  # identical frames
        lines.append(
            f"| {r['run']} | {r['ran']} | {r['frames']} | {r['frames_per_s']:.3f} "
            f"| {r['s_per_frame']:.2f} | {speed} | {r['cpu_seconds']:.1f} "
            f"| {r['load_average']:.1f} | {r['startup_s']:.1f} | {r['peak_rss_mb']:.0f} "
            f"| {psnr} | {r['conversion_s']:.1f} |"
        )
    report = {
        "cpu": {**cpu, "described": describe_cpu()},
        "config": dataclasses.asdict(config),
        "clip": {"frames": config.frames, "size": [width, height], "scale": scale},
        "rows": rows,
    }
    R.write(config.output, "video_speed", report, "\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    return R.command(PROG, VideoSpeedConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
