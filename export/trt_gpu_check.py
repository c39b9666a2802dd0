"""Build and time TensorRT engines from route-2 ONNX files on a GPU host without TensorFlow.

Needs only this checkout, numpy, ``tensorrt`` (10 or 11), the CUDA runtime library and, for the
agreement check, optionally ``onnxruntime``. Make the ONNX files anywhere (no GPU needed)::

    python -m export.trt --model default --precision fp16 --onnx-only --output drn_fp16.onnx

then on the GPU host::

    python -m export.trt_gpu_check drn_fp32.onnx drn_fp16.onnx drn_int8.onnx [--runs 50]

For each file it prints one JSON line: TensorRT version, build seconds, engine size, the
engine's output at the ``--opt-shape`` (a smooth deterministic test image, or ``--input F.npy``,
float32 NHWC 0..255) against onnxruntime's CPU output of the same ONNX (PSNR dB, max abs
difference; the ONNX itself was verified against Keras when it was exported), the output at
``--min-shape`` and ``--max-shape`` (shape check) and the median latency at the opt shape,
host↔device copies included. ``--save-engines DIR`` keeps the engines.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import the package, not export/onnx.py as onnx
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np

from export import base, reporting, verification
from export.trt_engine import (
    DEFAULT_SHAPES,
    EngineRunner,
    build_engine,
    profile_shapes,
)
from export.trt_routes import tensorrt_version


def smooth_image(shape: tuple[int, ...]) -> np.ndarray:
    """A smooth deterministic float32 NHWC image batch on 0..255 (gradients and sinusoids:
    closer to a photo than uniform noise)."""
    n, h, w, _ = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    channels = [
        127.5 + 100 * np.sin(x / 7.0 + k) * np.cos(y / 11.0 - k) + 20 * np.sin((x + y) / 3.0)
        for k in range(3)
    ]
    image = np.clip(np.stack(channels, -1), 0, 255)
    return np.repeat(image[None], n, 0).astype(np.float32)


def check(onnx_path: Path, shapes, runs: int, images: np.ndarray | None, save: Path | None):
    """Builds, verifies and times one engine; returns its record."""
    start = time.perf_counter()
    engine = build_engine(onnx_path, shapes)
    record = {
        "onnx": str(onnx_path),
        "tensorrt": tensorrt_version(),
        "build_s": round(time.perf_counter() - start, 2),
        "engine_bytes": len(engine),
    }
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        (save / f"{onnx_path.stem}.engine").write_bytes(engine)
    runner = EngineRunner(engine)
    images = smooth_image(shapes[1]) if images is None else images
    output = runner(images)
    record["output_shape"] = list(output.shape)
    record["finite"] = bool(np.all(np.isfinite(output)))
    try:
        from export.onnx import onnxruntime_runner

        record["vs_onnxruntime"] = verification.agreement(
            output, onnxruntime_runner(onnx_path)(images)
        )
    except ImportError:
        record["vs_onnxruntime"] = "onnxruntime not installed"
    for name, shape in (("min", shapes[0]), ("max", shapes[2])):
        record[f"{name}_output_shape"] = list(runner(smooth_image(shape)).shape)
    record["latency_ms"] = round(verification.median_ms(runner, images, runs, warmup=5), 3)
    record["latency_input"] = list(images.shape)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.trt_gpu_check", description=__doc__)
    parser.add_argument("onnx", nargs="+", type=Path, help="route-2 ONNX files (export.trt)")
    for name, default in zip(("min", "opt", "max"), DEFAULT_SHAPES, strict=True):
        parser.add_argument(f"--{name}-shape", default=default, help=f"default {default}")
    parser.add_argument("--runs", type=int, default=20, help="timed runs (default 20)")
    parser.add_argument("--input", type=Path, help="a float32 NHWC .npy on 0..255")
    parser.add_argument("--save-engines", type=Path, help="folder to keep the engines in")
    args = parser.parse_args(argv)
    try:
        shapes = profile_shapes(args.min_shape, args.opt_shape, args.max_shape)
        images = None if args.input is None else np.load(args.input).astype(np.float32)
        for path in args.onnx:
            if not path.is_file():
                raise base.ExportError(f"{path}: no such ONNX file")
            record = check(path, shapes, args.runs, images, args.save_engines)
            print(reporting.strict_json(record))  # an identical engine: psnr_db null, not Infinity
    except (ValueError, OSError, ImportError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
