"""Training throughput of DRN under each precision and with XLA on and off, side by side.

    python -m benchmarks.train_throughput --sizes default
    python -m benchmarks.train_throughput --sizes paper --batch-size 2 --no-xla-variants
    python -m benchmarks.train_throughput --sizes paper --no-throughput --loss-steps 200

Sizes: ``default`` is the packaged model's (4 blocks, 8 features, HR patch 96, batch 8),
``paper`` the paper's DRN-S ×4 (30 blocks, 16 features) at the recipe's HR patch 384
(``--batch-size`` to fit memory: the recipe's 32 needs tens of GB). For each precision
(``float32``, ``mixed_bfloat16``; ``mixed_float16`` only where a GPU is present, being
emulated on CPUs) × XLA (``jit_compile`` off/on) there are two workers: one trains on a fixed
in-memory batch (the arithmetic alone), one on :func:`drn_tf.data.make_train_dataset` of real
photos (the data pipeline in the loop); a last worker only draws batches from the pipeline
(the pipeline alone). Each worker is its own process (:class:`benchmarks.latency.Worker`); they
take turns one step at a time. A step is one call of the compiled train function ``fit``
runs (``train_on_batch``), so per-``fit`` set-up is not counted.

Where torch is installed (``pip install '.[compare]'``), more workers run the authors'
training step in PyTorch (:func:`benchmarks.torch_drn.trainer`: fp32, channels_last, bf16
autocast, and the last two through ``torch.compile`` unless ``--no-torch-compile``) on the same
in-memory batches, and the report compares Keras's fastest step with
PyTorch's (issue #21's bar on AMX: 1.3×, both bf16).

``--loss-steps N`` also trains float32 and mixed_bfloat16 from the same initial weights on the
same seeded batches for N steps each and compares their loss curves. Writes
``train_throughput.md``, ``.json`` and ``.png`` to ``--output`` and prints the Markdown.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks import paths as P
from benchmarks import report as R
from drn_tf.flags import UsageError, setting

PROG = "python -m benchmarks.train_throughput"
_DEFAULT_TRAIN_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"
#: size name → (n_blocks, n_feats, HR patch, batch)
SIZES = {"default": (4, 8, 96, 8), "paper": (30, 16, 384, 2)}
#: PyTorch's float32 steps, for the float32 comparison.
TORCH_FP32 = ("torch_fp32", "torch_channels_last", "torch_channels_last_compiled")
#: The issue's bar: mixed_bfloat16 / float32 step rate on a CPU with AMX.
BF16_TARGET = 1.8


@dataclasses.dataclass
class ThroughputConfig:
    """Steps/s and samples/s of DRN training per precision and XLA setting, side by side."""

    sizes: list[str] = setting(["default"], "default and/or paper.", choices=tuple(SIZES))
    batch_size: int | None = setting(None, "Batch size (default: 8 default, 2 paper).")
    patch_size: int | None = setting(None, "HR patch (default: 96 default, 384 paper).")
    precisions: list[str] = setting(
        ["float32", "mixed_bfloat16"], "Keras policies (mixed_float16 is run only on a GPU)."
    )
    xla_variants: bool = setting(True, "Also time each precision with XLA (jit_compile).")
    pipeline: bool = setting(True, "Also time with the data pipeline in the loop and alone.")
    torch: bool = setting(
        True,
        "Also time the authors' training step in PyTorch (fp32, channels_last, bf16), "
        "in memory, where torch is installed (the `compare` extra).",
    )
    torch_compile: bool = setting(
        True, "Also PyTorch's channels_last and bf16 steps through torch.compile (inductor)."
    )
    train_dir: list[str] = setting([str(_DEFAULT_TRAIN_DIR)], "HR photos for the pipeline.")
    steps: int = setting(10, "Timed steps per variant.")
    warmup: int = setting(2, "Untimed steps per variant first (tracing, XLA compile).")
    loss_steps: int = setting(
        0, "Compare float32 and mixed_bfloat16 loss curves over N steps (first of --sizes)."
    )
    throughput: bool = setting(True, "Time the variants (--no-throughput: loss curves only).")
    seed: int = setting(0, "Seed of the initial weights and the batches.")
    output: str = setting("runs/benchmarks", "Folder for train_throughput.md/.json/.png.")


# --- the worker side -------------------------------------------------------------------------


def make_step_runner(spec: dict):
    """A worker's runner (:func:`benchmarks.latency._worker`): each call runs one training
    step (``spec["policy"]``, ``spec["xla"]``, on ``spec["data"]``: ``"memory"`` or
    ``"pipeline"``) and returns the losses so far; ``"pipeline_alone"`` only draws a batch."""
    import keras

    keras.utils.set_random_seed(spec["seed"])
    batches = _batches(spec)
    if spec["data"] == "pipeline_alone":
        return lambda _: next(batches)[0].shape[0]
    if spec["policy"].startswith("torch_"):
        return _torch_step_runner(spec, batches)
    model = _model(spec)
    losses: list[float] = []

    def step(_):
        x, y = next(batches)
        logs = model.train_on_batch(x, y, return_dict=True)
        losses.append(float(logs["loss"]))
        return np.asarray(losses)

    return step


def _torch_step_runner(spec: dict, batches):
    """The authors' step (:func:`benchmarks.torch_drn.trainer`) at the same size and batches."""
    import torch

    from benchmarks import torch_drn

    torch.manual_seed(spec["seed"])
    model = torch_drn.DRN(4, spec["n_blocks"], spec["n_feats"])
    duals = [torch_drn.DownBlock(3, spec["n_feats"], 3) for _ in range(model.phases)]
    train = torch_drn.trainer(model, duals, spec["policy"].removeprefix("torch_"))
    losses: list[float] = []

    def step(_):
        lr, targets = next(batches)
        losses.append(train(lr, targets)["loss"])
        return np.asarray(losses)

    return step


def _model(spec: dict):
    """A compiled DualRegressionModel under ``spec["policy"]``; the initial weights depend on
    the seed only (drawn in float32, copied into the policy's model), so every precision
    starts from the same point."""
    import keras

    from drn_tf.dual_regression import DualRegressionModel
    from drn_tf.models import build_drn, build_duals

    sizes = {"n_blocks": spec["n_blocks"], "n_feats": spec["n_feats"]}

    def build():
        return DualRegressionModel(build_drn("drn-s", 4, **sizes), build_duals("drn-s", 4, **sizes))

    weights = build().get_weights()
    keras.mixed_precision.set_global_policy(spec["policy"])
    model = build()
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=spec["xla"])
    return model


def _batches(spec: dict):
    """An iterator of ``(lr, targets)`` numpy-convertible batches for ``spec["data"]``."""
    from drn_tf.data import make_train_dataset
    from drn_tf.training_images import load_pyramids

    patch, batch = spec["patch_size"], spec["batch_size"]
    if spec["data"] == "memory":
        rng = np.random.default_rng(spec["seed"])
        levels = [rng.uniform(0, 255, (batch, patch // k, patch // k, 3)).astype("float32")
                  for k in (4, 2, 1)]  # fmt: skip
        while True:
            yield levels[0], (levels[1], levels[2])
    pyramids, _ = load_pyramids(spec["train_dir"], 4, patch, progress=False)
    dataset = make_train_dataset(pyramids, 4, patch, batch, seed=spec["seed"])
    yield from iter(dataset)


# --- the benchmark ---------------------------------------------------------------------------


def variants(config: ThroughputConfig, gpu: bool) -> list[dict]:
    """The workers' specs for one size, and notes on what is not run here."""
    runs = []
    for policy in config.precisions:
        if policy == "mixed_float16" and not gpu:
            continue
        for xla in (False, True) if config.xla_variants else (False,):
            for data in ("memory", "pipeline") if config.pipeline else ("memory",):
                runs.append({"policy": policy, "xla": xla, "data": data})
    if config.pipeline:
        runs.append({"policy": "-", "xla": False, "data": "pipeline_alone"})
    if config.torch and importlib.util.find_spec("torch"):
        names = ["fp32", "channels_last", "bf16"]
        names += ["channels_last_compiled", "bf16_compiled"] if config.torch_compile else []
        runs += [{"policy": f"torch_{name}", "xla": False, "data": "memory"} for name in names]
    return runs


def measure_size(name: str, config: ThroughputConfig, gpu: bool, verbose: bool) -> dict:
    """Times every variant of one size side by side; returns its record."""
    from benchmarks.latency import Worker, round_robin

    n_blocks, n_feats, patch, batch = SIZES[name]
    patch, batch = config.patch_size or patch, config.batch_size or batch
    common = {
        "factory": "benchmarks.train_throughput:make_step_runner",
        "n_blocks": n_blocks, "n_feats": n_feats, "patch_size": patch, "batch_size": batch,
        "train_dir": config.train_dir, "seed": config.seed,
    }  # fmt: skip
    records, workers = {}, {}
    for number, variant in enumerate(variants(config, gpu)):
        spec = {**common, **variant, "path": str(number)}
        record = dict(variant)
        worker = Worker(spec, None, config.warmup, None, verbose)
        if worker.status != "ready":
            record["error"] = worker.error
        else:
            workers[spec["path"]] = worker
        records[spec["path"]] = record
    round_robin(workers, config.steps)
    for key, worker in workers.items():
        median = statistics.median(worker.times)
        records[key].update({
            "median_ms": median,
            "p90_ms": float(np.percentile(worker.times, 90)),
            "steps_per_s": 1000 / median,
            "samples_per_s": batch * 1000 / median,
        })  # fmt: skip
        records[key]["peak_rss_mb"] = worker.stop()
    return {
        "size": name, "n_blocks": n_blocks, "n_feats": n_feats, "patch_size": patch,
        "batch_size": batch, "variants": list(records.values()),
    }  # fmt: skip


def loss_curves(config: ThroughputConfig, verbose: bool) -> dict:
    """float32 and mixed_bfloat16 trained side by side for ``loss_steps`` steps from the same
    weights on the same batches (the first of ``sizes``, pipeline data)."""
    from benchmarks.latency import Worker, round_robin

    n_blocks, n_feats, patch, batch = SIZES[config.sizes[0]]
    workers = {}
    for policy in ("float32", "mixed_bfloat16"):
        spec = {
            "factory": "benchmarks.train_throughput:make_step_runner", "path": policy,
            "policy": policy, "xla": False, "data": "pipeline", "n_blocks": n_blocks,
            "n_feats": n_feats, "patch_size": config.patch_size or patch,
            "batch_size": config.batch_size or batch, "train_dir": config.train_dir,
            "seed": config.seed,
        }  # fmt: skip
        workers[policy] = Worker(spec, None, 0, None, verbose)
        if workers[policy].status != "ready":
            raise ValueError(f"{policy} training failed: {workers[policy].error}")
    round_robin(workers, config.loss_steps)
    curves = {policy: w.ask("output").tolist() for policy, w in workers.items()}
    for worker in workers.values():
        worker.stop()
    return {"size": config.sizes[0], "steps": config.loss_steps, "curves": curves,
            **compare_curves(curves)}  # fmt: skip


def compare_curves(curves: dict[str, list[float]], window: int = 20) -> dict:
    """How far the mixed_bfloat16 loss curve is from float32's: the mean and max gap of their
    ``window``-step moving averages, relative to float32's, beside float32's own step-to-step
    noise (the std of its first differences / √2, relative to its mean loss; a trend barely
    moves it). "Within noise" when the mean gap is at most that noise."""
    a, b = (np.asarray(curves[p], np.float64) for p in ("float32", "mixed_bfloat16"))
    window = max(1, min(window, len(a) // 2))
    kernel = np.ones(window) / window
    smooth_a, smooth_b = np.convolve(a, kernel, "valid"), np.convolve(b, kernel, "valid")
    gap = np.abs(smooth_b - smooth_a) / smooth_a
    noise = float(np.std(np.diff(a)) / math.sqrt(2) / np.mean(a)) if len(a) > 1 else 0.0
    return {
        "window": window,
        "mean_relative_gap": float(np.mean(gap)),
        "max_relative_gap": float(np.max(gap)),
        "float32_relative_noise": noise,
        "within_noise": bool(np.mean(gap) <= noise),
    }


def versus_torch(times: dict) -> dict:
    """Keras's fastest step against PyTorch's (all in memory, no XLA): overall (the issue's
    bar: 1.3× on AMX, both bf16 there) and float32 against PyTorch's fastest fp32 setting.
    ``times``: ``(policy, xla, data)`` → median ms or None. Empty without PyTorch rows."""
    ran = {policy: ms for (policy, xla, data), ms in times.items()
           if ms and not xla and data == "memory"}  # fmt: skip

    def fastest(names) -> str | None:
        return min((p for p in names if p in ran), key=ran.get, default=None)

    keras_all = [p for p in ran if not p.startswith("torch_")]
    torch_all = [p for p in ran if p.startswith("torch_")]
    comparisons = {}
    for label, keras, torch in (
        ("fastest", fastest(keras_all), fastest(torch_all)),
        ("float32", fastest(["float32"]), fastest(TORCH_FP32)),
    ):
        if keras and torch:
            comparisons[label] = {
                "keras": keras,
                "torch": torch,
                "speedup": ran[torch] / ran[keras],
            }
    return comparisons


def markdown(report: dict) -> str:
    cpu = report["cpu"]
    lines = [
        f"## Training throughput: {cpu['model']}, {cpu['cpus']} logical CPUs",
        "",
        f"AMX bf16: {'yes' if cpu['flags']['amx_bf16'] else 'no'}; AVX-512 BF16: "
        f"{'yes' if cpu['flags']['avx512_bf16'] else 'no'}; GPU: {report['gpu']}.  ",
        f"Load average before: {' '.join(f'{x:.2f}' for x in report['loadavg_before'])}, after: "
        f"{' '.join(f'{x:.2f}' for x in report['loadavg_after'])}.  ",
        f"Command: `{report['command']}`  ",
        f"`--precision auto` picks {report['auto']} for training here.",
    ]
    if not report["gpu"]:
        lines.append("mixed_float16: GPU-only (emulated on CPUs, several times slower), not run.")
    for size in report["sizes"]:
        lines += [
            "",
            f"### {size['size']}: DRN-S ×4, {size['n_blocks']} blocks, {size['n_feats']} "
            f"features, HR patch {size['patch_size']}, batch {size['batch_size']}",
            "",
            "| precision | XLA | data | median ms/step | p90 | steps/s | samples/s | vs float32 "
            "| peak RSS MB |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        base = {
            (v["xla"], v["data"]): v["median_ms"]
            for v in size["variants"]
            if v["policy"] == "float32" and "median_ms" in v
        }
        for v in size["variants"]:
            if "median_ms" not in v:
                lines.append(f"| {v['policy']} | {v['xla']} | {v['data']} | failed: {v['error']} "
                             "| | | | | |")  # fmt: skip
                continue
            ref = base.get((v["xla"], v["data"]))
            ratio = f"{ref / v['median_ms']:.2f}×" if ref and v["policy"] != "-" else ""
            lines.append(
                f"| {v['policy']} | {'on' if v['xla'] else 'off'} | {v['data']} "
                f"| {v['median_ms']:,.1f} | {v['p90_ms']:,.1f} | {v['steps_per_s']:.2f} "
                f"| {v['samples_per_s']:,.1f} | {ratio} | {v['peak_rss_mb']:,.0f} |"
            )
        if size.get("bf16_speedup"):
            met = size["bf16_speedup"] >= BF16_TARGET
            lines += ["", f"mixed_bfloat16 / float32 step rate (no XLA, in memory): "
                      f"{size['bf16_speedup']:.2f}× (target {BF16_TARGET}× on AMX: "
                      f"{'met' if met else 'MISSED'}); `auto` "
                      f"{'agrees' if size['auto_agrees'] else 'DISAGREES'}."]  # fmt: skip
        for label, c in size.get("vs_torch", {}).items():
            lines.append(f"\n{label}: Keras {c['keras']} / PyTorch's fastest ({c['torch']}) "
                         f"step rate: {c['speedup']:.2f}×.")  # fmt: skip
    curve = report.get("loss_curves")
    if curve:
        lines += [
            "",
            f"Loss curves, {curve['size']} size, {curve['steps']} steps (same weights, same "
            "batches): "
            f"{curve['window']}-step moving averages differ by {curve['mean_relative_gap']:.2%} "
            f"on average (max {curve['max_relative_gap']:.2%}); float32's own step noise "
            f"{curve['float32_relative_noise']:.2%}: "
            f"{'within noise' if curve['within_noise'] else 'NOT within noise'}.",
        ]
    return "\n".join(lines) + "\n"


def chart(report: dict):
    plt = R.pyplot()

    panels = len(report["sizes"]) + bool(report.get("loss_curves"))
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 3.6), squeeze=False)
    for axis, size in zip(axes[0], report["sizes"], strict=False):
        rows = [v for v in size["variants"] if "median_ms" in v]
        names = [f"{v['policy']} {'XLA ' if v['xla'] else ''}{v['data']}" for v in rows]
        axis.barh(names, [v["samples_per_s"] for v in rows])
        axis.set_xlabel("samples/s")
        axis.set_title(f"{size['size']}: patch {size['patch_size']}, batch {size['batch_size']}")
        axis.tick_params(axis="y", labelsize=7)
    curve = report.get("loss_curves")
    if curve:
        axis = axes[0][-1]
        for policy, losses in curve["curves"].items():
            axis.plot(losses, label=policy, linewidth=0.8)
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.legend()
        axis.set_title("loss, same weights and batches")
    figure.tight_layout()
    return figure


def run(config: ThroughputConfig, positionals: list[str], verbose: bool = False) -> dict:
    """Runs the benchmark, writes the report; returns it."""
    for flag, value, low in (("--steps", config.steps, 1), ("--warmup", config.warmup, 0),
                             ("--loss-steps", config.loss_steps, 0)):  # fmt: skip
        if value < low:
            raise UsageError(f"{flag} must be at least {low}, got {value}")
    unknown = set(config.precisions) - {"float32", "mixed_bfloat16", "mixed_float16"}
    if unknown:
        raise UsageError(f"--precisions: unknown {', '.join(sorted(unknown))}")
    for folder in config.train_dir:
        if config.pipeline and not Path(folder).is_dir():
            raise FileNotFoundError(f"--train-dir {folder}: folder does not exist")
    import tensorflow as tf

    from drn_tf.precision import auto_policy

    gpu = bool(tf.config.list_physical_devices("GPU"))
    report = {
        "command": " ".join([PROG, *sys.argv[1:]]),
        "cpu": P.cpu_info(),
        "gpu": gpu,
        "auto": auto_policy(training=True),
        "loadavg_before": list(os.getloadavg()),
        "sizes": [],
    }
    for name in config.sizes if config.throughput else ():
        size = measure_size(name, config, gpu, verbose)
        times = {(v["policy"], v["xla"], v["data"]): v.get("median_ms") for v in size["variants"]}
        f32 = times.get(("float32", False, "memory"))
        b16 = times.get(("mixed_bfloat16", False, "memory"))
        if f32 and b16:
            size["bf16_speedup"] = f32 / b16
            size["auto_agrees"] = (report["auto"] == "mixed_bfloat16") == (f32 > b16)
        size["vs_torch"] = versus_torch(times)
        report["sizes"].append(size)
    if config.loss_steps:
        report["loss_curves"] = loss_curves(config, verbose)
    report["loadavg_after"] = list(os.getloadavg())
    R.write(config.output, "train_throughput", report, markdown(report), chart)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.train_throughput [flags]``; returns the exit status."""
    return R.command(PROG, ThroughputConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
