"""The main job through each runtime: a photo file upscaled ×4 to a file, side by side in one run.

    python -m benchmarks.upscale_runtimes --sizes 1000x750
    python -m benchmarks.upscale_runtimes --sizes 4000x3000 --runtimes keras auto

Each run is what ``drn-tf upscale --runtime R`` does to one photo (read it, upscale in tiles
with :func:`drn_tf.inference.upscale`, write the PNG), in a fresh process of its own: seconds
from reading to written, and the process's peak RSS (``VmHWM``: TensorFlow, the runtime, the
model, the image and its output). Converted models come from the cache of
:mod:`export.runtime`, filled first in this process (the one-time conversion is timed apart).
Every output is compared with Keras's (PSNR, peak 255) against the export floors. The photo
is a bundled BSD200 photo resized to each size (Lanczos). Writes ``upscale_runtimes.md`` and
``.json`` to ``--output``; the Markdown is printed too.
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

from benchmarks import report as R
from drn_tf import cpu
from drn_tf.flags import UsageError, setting

PROG = "python -m benchmarks.upscale_runtimes"
#: ``--runtimes`` names: ``--runtime`` values, and ``openvino:PRECISION`` for each precision.
RUNTIMES = (
    "keras",
    "auto",
    "openvino:fp32",
    "openvino:bf16",
    "openvino:int8",
    "onnxruntime",
    "tflite",
)
_REPO = Path(__file__).resolve().parents[1]
PHOTO = _REPO.parent / "shared" / "data" / "train" / "BSD200" / "100080.png"


@dataclasses.dataclass
class UpscaleRuntimesConfig:
    """Seconds and peak memory of upscaling a photo ×4 through each runtime, side by side."""

    sizes: list[str] = setting(["1000x750"], "Photo sizes WIDTHxHEIGHT.")
    runtimes: list[str] = setting(list(RUNTIMES), f"Runtimes: {', '.join(RUNTIMES)}.")
    tile_batch: list[int] = setting([], "Tiles per network call to compare (default: the set one).")
    photo: str = setting(str(PHOTO), "The photo to resize to each size.")
    output: str = setting("runs/benchmarks", "Folder for upscale_runtimes.md and .json.")


def cpu_name() -> str:
    """The CPU's model name and its flags that :data:`export.runtime.AUTO_TABLE` reads."""
    from export.runtime import AUTO_TABLE

    flags = cpu.cpu_flags()
    found = [label for flag, label, _ in AUTO_TABLE if flag in flags]
    return f"{cpu.cpu_model()} ({', '.join(found) or 'none of the table'})"


def _choice(spec: str):
    from export import runtime

    name, _, precision = spec.partition(":")
    if precision:
        return runtime.Runtime(name, precision)
    return runtime.choose(name)


def _worker(spec: str, photo: str, out: str, tile_batch: int | None, results) -> None:
    """One upscale in this fresh process: the CLI's steps, timed from reading the photo."""
    from drn_tf.console import quiet_tensorflow

    quiet_tensorflow()  # before TensorFlow loads
    from drn_tf import inference, tiles
    from drn_tf.loading import load_model
    from drn_tf.pictures import Picture, load_picture, save_picture
    from export import runtime

    model = load_model("default")
    choice = _choice(spec)
    network = runtime.network(model, choice)  # from the cache
    if tile_batch:
        tiles.TILE_BATCH = tile_batch
    start, cpu = time.perf_counter(), time.process_time()
    picture = load_picture(photo)
    pixels = inference.upscale(picture.pixels, model, network=network)
    save_picture(out, Picture(pixels, picture.icc_profile), "png")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    results.put(
        {
            "seconds": seconds,
            "cpu_seconds": cpu,  # all threads: less sensitive to other processes' load
            "load_average": os.getloadavg()[0],
            "peak_rss_mb": R.peak_rss_mb(),
            "ran": choice.describe(),
            "precision": choice.precision,
        }
    )


def _psnr_chunked(path: Path, reference: Path) -> float:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    a = np.asarray(Image.open(path).convert("RGB"))
    b = np.asarray(Image.open(reference).convert("RGB"))
    total = sum(
        float(np.sum((a[i : i + 512].astype(np.float64) - b[i : i + 512]) ** 2))
        for i in range(0, len(a), 512)
    )
    mse = total / a.size
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def run(config: UpscaleRuntimesConfig, positionals: list[str], verbose: bool) -> None:
    from PIL import Image

    from drn_tf.console import quiet_tensorflow
    from drn_tf.loading import load_model
    from drn_tf.tiles import TILE_BATCH
    from export import runtime
    from export.base import FLOORS_DB

    if positionals:
        raise UsageError(f"unexpected arguments: {' '.join(positionals)}")
    bad = [s for s in config.runtimes if s not in RUNTIMES]
    if bad:
        raise UsageError(
            f"--runtimes: unknown {', '.join(bad)} (choose from {', '.join(RUNTIMES)})"
        )
    sizes = []
    for size in config.sizes:
        width, _, height = size.partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise UsageError(f"--sizes: {size!r} is not WIDTHxHEIGHT")
        sizes.append((int(width), int(height)))
    if not verbose:
        quiet_tensorflow()
    work = Path(config.output) / "upscale_runtimes"
    work.mkdir(parents=True, exist_ok=True)
    model = load_model("default")
    conversions = {}
    for spec in config.runtimes:  # fill the cache; the first conversion is timed
        start = time.perf_counter()
        runtime.network(model, _choice(spec))
        conversions[spec] = time.perf_counter() - start
    rows = []
    batches = config.tile_batch or [TILE_BATCH]
    for width, height in sizes:
        photo = work / f"photo_{width}x{height}.png"
        with Image.open(config.photo) as image:
            image.convert("RGB").resize((width, height), Image.LANCZOS).save(photo)
        reference = None
        for batch in batches:
            for spec in config.runtimes:
                out = work / f"{width}x{height}_{spec.replace(':', '_')}_b{batch}_x4.png"
                result = R.in_fresh_process(_worker, spec, str(photo), str(out), batch)
                precision = result["precision"]  # what the worker ran
                if spec == "keras" and reference is None:
                    reference = out
                psnr = _psnr_chunked(out, reference) if reference else math.nan
                floor = FLOORS_DB.get(precision, FLOORS_DB["fp32"])
                rows.append(
                    {
                        "size": f"{width}x{height}",
                        "runtime": spec,
                        "ran": result["ran"],
                        "tile_batch": batch,
                        "seconds": result["seconds"],
                        "cpu_seconds": result["cpu_seconds"],
                        "load_average": result["load_average"],
                        "peak_rss_mb": result["peak_rss_mb"],
                        "psnr_vs_keras_db": psnr,
                        "floor_db": floor,
                        "conversion_s": conversions[spec],
                    }
                )
                print(rows[-1], file=sys.stderr, flush=True)
    keras = {(r["size"], r["tile_batch"]): r for r in rows if r["runtime"] == "keras"}
    lines = [
        f"# Upscaling a photo ×4 by runtime: {cpu_name()}",
        "",
        f"`{PROG} --sizes {' '.join(config.sizes)} --runtimes {' '.join(config.runtimes)}`"
        + (f" `--tile-batch {' '.join(map(str, batches))}`" if config.tile_batch else ""),
        "; packaged ×4 model (DRN-S), tile 128, overlap 16; one fresh process per run.",
        "",
        "| photo | runtime | ran as | tiles/call | seconds | × Keras | CPU s | × Keras "
        "| load avg | peak RSS MB | PSNR vs Keras dB (floor) | conversion s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        k = keras.get((r["size"], r["tile_batch"]))
        speed = f"{k['seconds'] / r['seconds']:.2f}" if k else "-"
        cpu_speed = f"{k['cpu_seconds'] / r['cpu_seconds']:.2f}" if k else "-"
        lines.append(
            f"| {r['size']} | {r['runtime']} | {r['ran']} | {r['tile_batch']} "
            f"| {r['seconds']:.1f} | {speed} | {r['cpu_seconds']:.1f} | {cpu_speed} "
            f"| {r['load_average']:.1f} | {r['peak_rss_mb']:.0f} "
            f"| {r['psnr_vs_keras_db']:.1f} ({r['floor_db']:.0f}) | {r['conversion_s']:.1f} |"
        )
    report = {"cpu": cpu_name(), "config": dataclasses.asdict(config), "rows": rows}
    R.write(config.output, "upscale_runtimes", report, "\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    return R.command(PROG, UpscaleRuntimesConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
