"""The cost of each exported artifact and precision: Set5/Set14 ×4 PSNR/SSIM next to Keras fp32.

    python -m benchmarks.quality
    python -m benchmarks.quality --model default --paths tf_function tflite_int8 openvino_bf16

Every path of :mod:`benchmarks.paths` (artifacts built and cached as for
:mod:`benchmarks.latency`) super-resolves each whole LR image of the sets in its own worker
process; the output is scored with the evaluation protocol of ``drn-tf evaluate`` (rounded to
8 bits, MATLAB's Y, ``scale`` pixels shaved: :func:`drn_tf.metrics.psnr_y`, ``ssim_y``).
Beside each set's means: the change against the Keras fp32 model (``tf_function``) and the
agreement of the raw output with Keras fp32's (PSNR, peak 255, mean over the images). Writes
``quality.md``, ``quality.json`` and ``quality.png`` to ``--output`` and prints the Markdown.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks import paths as P
from benchmarks import report as R
from drn_tf.flags import setting
from export import verification

PROG = "python -m benchmarks.quality"
_BENCHMARK = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark"
#: The reference every other path is compared with.
REFERENCE = "tf_function"
#: Paths left out by default: the same arithmetic as another one in the list.
SAME_AS = {"keras_eager": REFERENCE, "torch_channels_last": "torch_fp32"}


@dataclasses.dataclass
class QualityConfig:
    """Set5/Set14 PSNR/SSIM of each exported artifact and precision next to Keras fp32."""

    model: str = setting(
        "default",
        "default or fast (packaged), drn-s (converted from --checkpoint) or a .keras path.",
    )
    checkpoint: str = setting(
        str(_BENCHMARK.parents[1] / "reference" / "drn_s_x4.pt"), "The authors' .pt for drn-s."
    )
    data: list[str] = setting(
        [str(_BENCHMARK / "Set5"), str(_BENCHMARK / "Set14")], "Benchmark set folders."
    )
    paths: list[str] = setting(
        [p for p in P.PATHS if p not in SAME_AS], "Paths to score (tf_function is always run)."
    )
    output: str = setting("runs/benchmarks", "Folder for quality.md, quality.json, quality.png.")
    work_dir: str | None = setting(None, "Artifact cache (default: OUTPUT/artifacts).")


def score(
    outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], hrs: dict, scale: int
) -> dict:
    """PSNR/SSIM (Y, shaved) of each image's SR against its HR, their means, and the mean
    agreement of the raw outputs with ``reference`` (PSNR of the float outputs, peak 255)."""
    from drn_tf.metrics import psnr_y, ssim_y

    images = {
        name: {"psnr": psnr_y(sr[0], hrs[name], scale), "ssim": ssim_y(sr[0], hrs[name], scale)}
        for name, sr in outputs.items()
    }
    agreement = [verification.agreement(outputs[n], reference[n])["psnr_db"] for n in outputs]
    finite = [a for a in agreement if math.isfinite(a)]
    return {
        "psnr": float(np.mean([v["psnr"] for v in images.values()])),
        "ssim": float(np.mean([v["ssim"] for v in images.values()])),
        "agreement_db": float(np.mean(finite)) if finite else math.inf,
        "images": images,
    }


def run(config: QualityConfig, positionals: list[str], verbose: bool = False) -> dict:
    """Scores every path on every set; writes and returns the report."""
    from benchmarks.latency import LatencyConfig, Worker, resolve_model
    from drn_tf.degrade import imresize
    from drn_tf.evaluation import smallest_measurable
    from drn_tf.image_sets import load_eval_pairs
    from drn_tf.metrics import psnr_y, ssim_y

    names = [REFERENCE] + [p for p in P.available(config.paths) if p != REFERENCE]
    output = Path(config.output)
    work_dir = Path(config.work_dir) if config.work_dir else output / "artifacts"
    work_dir.mkdir(parents=True, exist_ok=True)
    lookup = LatencyConfig(checkpoint=config.checkpoint)
    label, keras_path, checkpoint = resolve_model(config.model, lookup, work_dir)
    source = P.base.load_source(keras_path)
    scale = source.model.scale
    folder = P.artifact_folder(work_dir, source)
    sets = {}
    for data in config.data:
        if not Path(data).is_dir():
            raise FileNotFoundError(f"--data {data}: folder does not exist")
        pairs = load_eval_pairs(data, scale, smallest_measurable(scale))
        sets[Path(data).name] = {n: (lr, hr) for n, lr, hr in pairs}

    bicubic = {}
    for set_name, pairs in sets.items():
        ups = {n: imresize(lr, scale) for n, (lr, _) in pairs.items()}
        bicubic[set_name] = {
            "psnr": float(np.mean([psnr_y(ups[n], hr, scale) for n, (_, hr) in pairs.items()])),
            "ssim": float(np.mean([ssim_y(ups[n], hr, scale) for n, (_, hr) in pairs.items()])),
        }
    results, references = {}, {}
    for name in names:
        record = {"path": name, "label": P.PATHS[name].label, "compute": P.PATHS[name].compute}
        results[name] = record
        try:
            spec = P.prepare(name, source, folder, checkpoint)
        except P.Skipped as reason:
            record["skipped"] = str(reason)
            continue
        worker = Worker(spec, None, 0, None, verbose)
        if worker.status != "ready":
            record[worker.status] = worker.error
            continue
        for set_name, pairs in sets.items():
            outputs = {
                n: worker.ask(("output", lr[None].astype(np.float32)))
                for n, (lr, _) in pairs.items()
            }
            if name == REFERENCE:
                references[set_name] = outputs
            hrs = {n: hr for n, (_, hr) in pairs.items()}
            record[set_name] = score(outputs, references[set_name], hrs, scale)
        record["peak_rss_mb"] = worker.stop()

    report = {
        "command": " ".join([PROG, *sys.argv[1:]]),
        "model": {
            "name": config.model,
            "label": label,
            "keras": str(keras_path),
            **dataclasses.asdict(source.model.drn_config),
        },  # fmt: skip
        "sets": list(sets),
        "bicubic": bicubic,
        "paths": list(results.values()),
    }
    R.write(output, "quality", report, markdown(report), chart)
    return report


def markdown(report: dict) -> str:
    sets = report["sets"]
    reference = next(r for r in report["paths"] if r["path"] == REFERENCE)
    head = " | ".join(f"{s} PSNR / SSIM | Δ dB | vs Keras dB" for s in sets)
    lines = [
        f"## Quality ×{report['model']['scale']}: {report['model']['label']}",
        "",
        f"Command: `{report['command']}`. Y channel, {report['model']['scale']} pixels shaved, "
        "output rounded to 8 bits; Δ: against Keras fp32; vs Keras: agreement of the raw "
        "output with Keras fp32's (PSNR, mean over the images).",
        "",
        f"| path | compute | {head} |",
        "|---|---|" + "---:|---:|---:|" * len(sets),
        "| bicubic | – | "
        + " | ".join(
            f"{report['bicubic'][s]['psnr']:.2f} / {report['bicubic'][s]['ssim']:.4f} | | "
            for s in sets
        )
        + " |",
    ]
    for r in report["paths"]:
        if sets[0] not in r:
            why = r.get("skipped") or r.get("error")
            state = "skipped" if "skipped" in r else "failed"
            lines.append(
                f"| {r['path']} | {r['compute']} | {state}: {why} |" + " |" * (3 * len(sets) - 1)
            )
            continue
        cells = []
        for s in sets:
            delta = r[s]["psnr"] - reference[s]["psnr"]
            agree = r[s]["agreement_db"]
            cells.append(
                f"{r[s]['psnr']:.2f} / {r[s]['ssim']:.4f} | {delta:+.3f} | "
                + ("∞" if math.isinf(agree) else f"{agree:.1f}")
            )
        lines.append(f"| {r['path']} | {r['compute']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(report: dict):
    plt = R.pyplot()

    sets = report["sets"]
    reference = next(r for r in report["paths"] if r["path"] == REFERENCE)
    rows = [r for r in report["paths"] if sets[0] in r]
    figure, axis = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.5))
    height = 0.8 / len(sets)
    for i, s in enumerate(sets):
        deltas = [r[s]["psnr"] - reference[s]["psnr"] for r in rows]
        axis.barh(np.arange(len(rows)) + i * height, deltas, height, label=s)
    axis.set_yticks(np.arange(len(rows)) + height * (len(sets) - 1) / 2)
    axis.set_yticklabels([r["path"] for r in rows], fontsize=7)
    axis.axvline(0, color="black", linewidth=0.5)
    axis.set_xlabel("PSNR change against Keras fp32 (dB)")
    axis.set_title(report["model"]["label"], fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.quality [flags]``; returns the exit status."""
    return R.command(PROG, QualityConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
