"""Latency of a DRN model through every way of running it here, side by side in one run.

    python -m benchmarks.latency --models drn-s default --size 128
    python -m benchmarks.latency --quick --paths tf_function tflite_fp32 torch_fp32

``drn-s`` is the paper's DRN-S converted from the authors' ``.pt`` (``--checkpoint``) with
``drn_tf.convert``; the PyTorch paths load that same file into :mod:`benchmarks.torch_drn`.
``default`` is the packaged model (PyTorch gets its weights through the converter's mapping
run backwards). ``--quick``: a tiny random model at 32×32 with few runs (the test).

Every path runs in its own worker process (:mod:`benchmarks.paths`): artifacts are built once
in this process and cached under ``--work-dir``; each worker loads its runtime, warms up, then
the workers take turns, one repetition each per round (rotating who goes first), so a change
of machine load hits every path alike. GEMM micro-benchmarks (fp32, bf16, int8, PyTorch's
oneDNN, OpenVINO: :mod:`benchmarks.peaks`) take turns with them and give the machine's peak
per precision (their best round).
Per path: median and p90 latency, output megapixels/s, effective GFLOP/s (2 × the exact
multiply-accumulate count of the traced graph / median), its share of the GEMM peak of its
precision, the worker's peak RSS (``VmHWM``: the runtime and the model), and agreement with
the Keras fp32 output (PSNR, peak 255) against the export floors. Writes ``latency.md``,
``latency.json`` and ``latency.png`` to ``--output``; the Markdown is printed too.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import paths as P
from benchmarks import peaks
from benchmarks import report as R
from benchmarks.latency_report import auto_precision_check, chart, evaluate_targets, markdown
from drn_tf.console import quiet_tensorflow
from drn_tf.flags import UsageError, setting
from export import reporting, verification

PROG = "python -m benchmarks.latency"
_REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = _REPO.parent / "shared" / "reference" / "drn_s_x4.pt"
#: The peak micro-benchmarks: path → (precision, n of the n³ GEMM; the issue's sizes). Each
#: precision is measured twice, through PyTorch (fp32: MKL; bf16: oneDNN's matmul; int8:
#: ``_int_mm``, oneDNN's s8s8s32 GEMM API) and through OpenVINO's MatMul (the brgemm kernels its
#: convolutions use): a precision's peak is the faster one.


@dataclasses.dataclass
class LatencyConfig:
    """Latency of DRN models through every available runtime and precision, side by side."""

    models: list[str] = setting(
        ["drn-s", "default"],
        "Models: drn-s (the paper's, converted from --checkpoint), default or fast (packaged), "
        "tiny (random, 1 block, 4 features) or .keras paths.",
    )
    checkpoint: str = setting(str(DEFAULT_CHECKPOINT), "The authors' primal .pt for drn-s.")
    size: int = setting(128, "LR input side (pixels): the input is SIZE x SIZE.")
    paths: list[str] = setting(list(P.PATHS), "Paths to run (default: all).")
    runs: int = setting(10, "Timed repetitions per path.")
    warmup: int = setting(2, "Untimed runs per path first.")
    threads: int | None = setting(None, "Threads per runtime (default: all CPUs).")
    output: str = setting("runs/benchmarks", "Folder for latency.md, latency.json, latency.png.")
    work_dir: str | None = setting(None, "Artifact cache (default: OUTPUT/artifacts).")
    quick: bool = setting(
        False, "Tiny random model, 32x32, 3 runs, 1 warm-up, small GEMMs (a smoke test)."
    )


# --- workers ---------------------------------------------------------------------------------


def _worker(conn, spec: dict, image: np.ndarray, warmup: int, threads: int | None, verbose: bool):
    """A worker process: builds one runner (a path of :mod:`benchmarks.paths`, a GEMM, or
    ``spec["factory"]``), warms it up, then answers ``run`` (its time in ms), ``output`` (its
    output; ``("output", images)``: its output on other images) and ``stop`` (its peak RSS in
    MB) until stopped."""
    quiet_tensorflow(verbose)
    try:
        if "factory" in spec:  # another benchmark's runner: "module:function", called with spec
            module, function = spec["factory"].split(":")
            runner = getattr(importlib.import_module(module), function)(spec)
        elif spec["path"].startswith("gemm_"):
            if threads:
                import torch

                torch.set_num_threads(threads)
            runner = peaks.gemm_runner(spec["path"], spec["n"], spec["chain"])
        else:
            runner = P.make_runner(spec, threads)
        for _ in range(warmup):
            runner(image)
    except P.Skipped as reason:
        conn.send(("skipped", str(reason)))
        return
    except Exception as error:  # noqa: BLE001 - reported as the path's result, never a crash
        conn.send(("error", " ".join(f"{type(error).__name__}: {error}".split())[:300]))
        return
    conn.send(("ready", None))
    while True:
        try:
            command = conn.recv()
        except EOFError:  # the parent is gone (it failed, or was interrupted): nothing to answer
            return
        try:
            if command == "run":
                start = time.perf_counter()
                runner(image)
                conn.send((time.perf_counter() - start) * 1000)
            elif command == "output":
                conn.send(np.asarray(runner(image), np.float32))
            elif command == "kernels":
                conn.send(runner.kernels(image) if hasattr(runner, "kernels") else None)
            elif isinstance(command, tuple):  # ("output", other_input)
                conn.send(np.asarray(runner(command[1]), np.float32))
            else:
                conn.send(R.peak_rss_mb())
                return
        except Exception as error:  # noqa: BLE001 - any failure: the parent raises it as one line
            conn.send(("error", " ".join(f"{type(error).__name__}: {error}".split())[:300]))
            return


class Worker:
    """The parent's handle on a worker process."""

    def __init__(self, spec, image, warmup, threads, verbose):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: own runtime, own RSS
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_worker, args=(child, spec, image, warmup, threads, verbose), daemon=True
        )
        self.process.start()
        self.spec = spec
        self.status, self.error = self.conn.recv()
        self.times: list[float] = []

    def ask(self, command):
        """Sends ``command`` and returns the reply; a failure in the worker is a ValueError."""
        self.conn.send(command)
        reply = self.conn.recv()
        if isinstance(reply, tuple) and reply[:1] == ("error",):
            self.process.join(30)
            raise ValueError(f"worker for {self.spec['path']}: {reply[1]}")
        return reply

    def stop(self) -> float:
        rss = self.ask("stop")
        self.process.join(30)
        return rss


def round_robin(workers: dict[str, Worker], runs: int) -> None:
    """``runs`` rounds; in each, every worker runs once, the first one rotating. A line per
    round on stderr: the load average, so a disturbed round can be seen."""
    names = list(workers)
    for round_ in range(runs):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            workers[name].times.append(workers[name].ask("run"))
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"round {round_ + 1}/{runs} done, load average {load}", file=sys.stderr)


# --- the benchmark ---------------------------------------------------------------------------


def _summary(times: Sequence[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(times),
        "p90_ms": float(np.percentile(times, 90)),
        "min_ms": min(times),
    }


def benchmark_image(size: int) -> np.ndarray:
    """The input: a ``size``×``size`` crop of the bundled sample photo (a real image, so int8
    calibration and agreement are as on photos), resized up first if it is smaller; float32
    ``(1, size, size, 3)`` on 0..255."""
    from drn_tf.bundled import SAMPLE_IMAGE
    from drn_tf.degrade import imresize
    from export.photo_sets import read_rgb

    photo = read_rgb(SAMPLE_IMAGE).astype(np.float32)
    short = min(photo.shape[:2])
    if short < size:
        photo = imresize(photo, size / short + 1e-6)
    top, left = (photo.shape[0] - size) // 2, (photo.shape[1] - size) // 2
    return np.clip(photo[None, top : top + size, left : left + size], 0, 255).astype(np.float32)


def resolve_model(
    name: str, config: LatencyConfig, work_dir: Path
) -> tuple[str, Path, Path | None]:
    """``(label, .keras path, authors' .pt or None)`` of a ``--models`` entry."""
    from drn_tf.bundled import DEFAULT_MODEL_PATH, model_path

    if name == "default":
        return "default model (packaged)", DEFAULT_MODEL_PATH, None
    if name == "fast":
        return "fast model (packaged)", model_path("fast"), None
    if name == "tiny":
        path = work_dir / "tiny_x4.keras"
        if not path.exists():
            import keras

            from drn_tf.models import build_drn_bundle, save_model_atomic

            keras.utils.set_random_seed(0)
            save_model_atomic(build_drn_bundle("drn-s", 4, n_blocks=1, n_feats=4), path)
        return "tiny DRN-S x4 (1 block, 4 features, random)", path, None
    if name == "drn-s":
        from benchmarks import checkpoints
        from drn_tf.convert import convert_checkpoint
        from drn_tf.torch_checkpoints import read_checkpoint

        checkpoint = Path(config.checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"--checkpoint {checkpoint}: file does not exist")
        path = work_dir / f"drn-s_{P.base.sha256_of(checkpoint)[:16]}.keras"
        if not path.exists():
            sizes = checkpoints.checkpoint_sizes(read_checkpoint(checkpoint))
            scale = sizes.pop("scale")
            convert_checkpoint(checkpoint, "drn-s", scale, path, **sizes)
        return f"DRN-S (converted from {checkpoint.name})", path, checkpoint
    if not name.endswith(".keras"):
        raise UsageError(f"--models {name!r}: use drn-s, default, fast, tiny or a .keras path")
    return Path(name).name, Path(name), None


def measure_model(
    name: str, config: LatencyConfig, work_dir: Path, image: np.ndarray, gemm: dict, verbose: bool
) -> dict[str, Any]:
    """Builds the artifacts of one model, runs all its paths and the GEMMs side by side, and
    returns the model's record (its paths' numbers, and the GEMM times of this round)."""
    label, keras_path, checkpoint = resolve_model(name, config, work_dir)
    flags = P.cpu_info()["flags"]
    source = P.base.load_source(keras_path)
    size = image.shape[1]
    # drn-tf's paths run the folded top level; PyTorch runs the authors' whole pyramid (traced
    # only when a PyTorch path runs: a second trace of the model).
    macs = P.conv_macs(source.model, size, size)
    with_torch = any(P.PATHS[p].runtime == "torch" for p in config.paths)
    torch_macs = P.pyramid_macs(source.model, size, size) if with_torch else None
    reference = verification.keras_runner(source.model)(image)
    folder = P.artifact_folder(work_dir, source)

    results: dict[str, dict] = {}
    workers: dict[str, Worker] = {}
    for path in config.paths:
        info = P.PATHS[path]
        path_label, compute = P.ran_as(info.runtime, info.label, info.compute, flags)
        results[path] = {"path": path, "label": path_label, "compute": compute}
        try:
            spec = P.prepare(path, source, folder, checkpoint)
        except P.Skipped as reason:
            results[path]["skipped"] = str(reason)
            continue
        except (ValueError, ImportError, OSError) as error:
            results[path]["error"] = " ".join(str(error).split())[:300]
            continue
        _add_worker(workers, results[path], spec, image, config, verbose)
    for path, (precision, n, chain) in gemm.items():
        spec = {"path": path, "n": n, "chain": chain}
        results[path] = {"path": path, "compute": precision, "n": n, "chain": chain}
        _add_worker(workers, results[path], spec, image, config, verbose)

    round_robin(workers, config.runs)
    for path, worker in workers.items():
        record = results[path]
        record.update(_summary(worker.times))
        if not path.startswith("gemm_"):
            record.update(verification.agreement(worker.ask("output"), reference))
            record["floor_db"] = P.base.FLOORS_DB[P.PATHS[path].floor]
            record["meets_floor"] = record["psnr_db"] >= record["floor_db"]
        record["kernels"] = worker.ask("kernels")
        record["peak_rss_mb"] = worker.stop()

    output_mp = reference.shape[1] * reference.shape[2] / 1e6
    for record in results.values():
        if "median_ms" in record and not record["path"].startswith("gemm_"):
            record["mp_per_s"] = output_mp / (record["median_ms"] / 1000)
            work = torch_macs if P.PATHS[record["path"]].runtime == "torch" else macs
            record["gflops"] = 2 * work / (record["median_ms"] / 1000) / 1e9
    cfg = source.model.drn_config
    return {
        "name": name,
        "label": label,
        "config": dataclasses.asdict(cfg),
        "keras": str(keras_path),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "input_shape": list(image.shape),
        "output_megapixels": output_mp,
        "macs": macs,
        "torch_macs": torch_macs,
        "paths": [r for p, r in results.items() if not p.startswith("gemm_")],
        "gemm": {p: r for p, r in results.items() if p.startswith("gemm_")},
    }


def _add_worker(workers, record, spec, image, config, verbose) -> None:
    worker = Worker(spec, image, config.warmup, config.threads, verbose)
    if worker.status != "ready":
        record[worker.status] = worker.error
        worker.process.join(30)
    else:
        workers[spec["path"]] = worker


def run(config: LatencyConfig, positionals: list[str], verbose: bool = False) -> dict:
    """Runs the benchmark and writes the report; returns it (also as JSON)."""
    if config.quick:
        if config.models == ["drn-s", "default"]:
            config.models = ["tiny"]
        config.size = min(config.size, 32)
        config.runs, config.warmup = min(config.runs, 3), min(config.warmup, 1)
    for flag, value, low in (("--size", config.size, 8), ("--runs", config.runs, 1),
                             ("--warmup", config.warmup, 0)):  # fmt: skip
        if value < low:
            raise UsageError(f"{flag} must be at least {low}, got {value}")
    if config.size % 4:
        raise UsageError(f"--size must be a multiple of 4 (two stride-2 stages), got {config.size}")
    P.available(config.paths)
    output = Path(config.output)
    work_dir = Path(config.work_dir) if config.work_dir else output / "artifacts"
    work_dir.mkdir(parents=True, exist_ok=True)
    gemm = {
        p: (c, peaks.QUICK_GEMM, 1) if config.quick else (c, n, chain)
        for p, (c, n, chain) in peaks.GEMMS.items()
    }

    cpu = P.cpu_info()
    image = benchmark_image(config.size)
    report = {
        "command": " ".join([PROG, *sys.argv[1:]]) if sys.argv[0].endswith("latency.py") else PROG,
        "cpu": cpu,
        "threads": config.threads,
        "size": config.size,
        "runs": config.runs,
        "warmup": config.warmup,
        "loadavg_before": list(os.getloadavg()),
        "versions": reporting.library_versions(
            "onnxruntime", "openvino", "ai-edge-litert", "torch"
        ),
        "models": [],
    }
    for name in config.models:
        record = measure_model(name, config, work_dir, image, gemm, verbose)
        record["targets"] = evaluate_targets(record, cpu)
        record["auto_precision"] = auto_precision_check(record)
        report["models"].append(record)
    report["loadavg_after"] = list(os.getloadavg())

    R.write(output, "latency", report, markdown(report), chart)
    print(f"wrote {output / 'latency.md'}, latency.json, latency.png")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.latency [flags]``; returns the exit status."""
    return R.command(PROG, LatencyConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
