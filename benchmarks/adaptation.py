"""DRN-Adapt on this CPU: does adapting to LR-only degraded images help, and which loop?

    python -m benchmarks.adaptation
    python -m benchmarks.adaptation --steps 500 --patch-size 64 --batch-size 10 --seeds 1 2 3 \
        --work-dir /tmp/drn_adapt --picture docs/adaptation_example.png
    python -m benchmarks.adaptation --degradation blur --variants cascade kernel \
        --json docs/adaptation_kernel_blur.json --picture ''

The data (``docs/drn-reference.md`` §1.5, scaled down to a CPU):

* paired: T91 and the even-numbered BSD200 photos, with MATLAB-bicubic LR;
* LR-only: the odd-numbered BSD200 photos degraded with ``--degradation`` (``nearest`` or
  ``blur``, :func:`drn_tf.degrade.degrade`; the HR is thrown away);
* test: Set5 and Set14, once with their official bicubic LR, once with that degradation.

Every model starts from ``--model`` (the packaged bicubic-trained ×4 model) and gets the same
optimizer, steps, seed and paired stream; the rows differ only in what fills the LR-only
share ρ of each batch:

* ``un-adapted``: the model as it is;
* ``paired only``: the paired samples alone (batch ``B − m``), the control: how much the
  continued bicubic training alone moves the numbers;
* ``first`` / ``cascade`` / ``kernel``: DRN-Adapt, LR-only degraded samples with that closed
  loop (:class:`drn_tf.dual_regression.DualRegressionModel`; ``kernel`` also records the
  learned kernel);
* ``paired-degraded``: the same photos *with* their HR (degraded LR input, bicubic ×2 and HR
  targets), the upper bound that adaptation cannot beat.

Each fine-tuned row runs once per ``--seeds`` seed (the data streams: photo order, crops,
flips). Prints a table of Y-PSNR on degraded and bicubic Set5/Set14 (mean over the seeds, with
the smallest and largest) and the closed-loop error on the degraded sets, writes it as JSON
(every run too), and saves an un-adapted | adapted | upper bound | HR picture (first seed).

Sized for a shared 2-core CPU: the defaults (500 steps of batch 10 at HR patch 64 per row, a
fraction of an adaptation run; three seeds) take about 20 minutes; ``--steps``,
``--patch-size`` and ``--seeds`` scale it. ``--dual-weight 1 --variants first cascade
--picture ''`` strengthens the closed loop, to see which way it pulls. The results and why are
in ``docs/adaptation.md`` and the README.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from drn_tf.console import run_command
from drn_tf.flags import setting

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VARIANTS = ("paired-only", "first", "cascade", "kernel", "paired-degraded")
DEGRADATIONS = ("nearest", "blur")


@dataclasses.dataclass
class AdaptationConfig:
    """Adapt the default model to degraded LR-only photos; compare with its controls."""

    model: str = setting("default", "The bicubic-trained .keras model to start from.")
    train_dir: str = setting(str(DATA / "train"), "Folder with T91/ and BSD200/.")
    test_dir: list[str] = setting(
        [str(DATA / "benchmark" / "Set5"), str(DATA / "benchmark" / "Set14")],
        "Benchmark sets (HR/ and LR_bicubic/X4/).",
    )
    degradation: str = setting(
        "nearest", "The unknown degradation of the LR-only and test images.", choices=DEGRADATIONS
    )
    variants: list[str] = setting(
        ["paired-only", "first", "cascade", "paired-degraded"],
        "Fine-tuned rows to run.",
        choices=VARIANTS,
    )
    steps: int = setting(500, "Steps per fine-tuned model.")
    batch_size: int = setting(10, "Batch size B (paired + LR-only).")
    patch_size: int = setting(64, "HR patch size.")
    unpaired_ratio: float = setting(0.3, "Share ρ of LR-only samples per batch.")
    learning_rate: float = setting(2e-4, "Initial Adam learning rate (cosine decay).")
    min_learning_rate: float = setting(1e-6, "Final learning rate.")
    dual_weight: float = setting(0.1, "λ, the weight of the dual terms.")
    seeds: list[int] = setting(
        [1, 2, 3], "Seeds of the data streams and the fine-tuning: one run of each row per seed."
    )
    work_dir: str = setting("/tmp/drn_adapt", "Folder for the split, the LR sets and the models.")
    json: str | None = setting(None, "Results file (default: WORK_DIR/results.json).")
    picture: str | None = setting(
        "docs/adaptation_example.png", "The un-adapted | adapted | HR picture ('' for none)."
    )
    crop: list[str] = setting(
        ["Set14", "barbara", "100", "300", "160"], "Picture crop: SET IMAGE TOP LEFT SIZE (HR)."
    )


def _link_split(train_dir: Path, work: Path) -> tuple[Path, Path]:
    """Links T91 + even BSD200 photos into ``work/paired``, odd ones into ``work/unpaired_hr``."""
    from drn_tf.images import find_images

    paired, unpaired = work / "paired", work / "unpaired_hr"
    for folder in (paired, unpaired):
        if folder.exists():
            for link in folder.rglob("*"):
                if link.is_symlink():
                    link.unlink()
        folder.mkdir(parents=True, exist_ok=True)
    for path in find_images(train_dir / "T91"):
        (paired / f"T91_{path.name}").symlink_to(path.resolve())
    for number, path in enumerate(find_images(train_dir / "BSD200")):
        target = paired if number % 2 == 0 else unpaired
        (target / path.name).symlink_to(path.resolve())
    return paired, unpaired


def _test_sets(test_dirs: Sequence[str], work: Path, kind: str) -> list[Path]:
    """Each benchmark set as ``work/test/<set>`` (HR/ and LR_bicubic/ linked) + LR_<kind>/X4."""
    from drn_tf.image_sets import write_degraded_set

    sets = []
    for source in map(Path, test_dirs):
        target = work / "test" / source.name
        target.mkdir(parents=True, exist_ok=True)
        for name in ("HR", "LR_bicubic"):
            if (source / name).is_dir() and not (target / name).exists():
                (target / name).symlink_to((source / name).resolve())
        write_degraded_set(target, kind, 4, target, progress=False)
        sets.append(target)
    return sets


def _load(config: AdaptationConfig, paired_dir: Path, unpaired_dir: Path) -> tuple:
    """The paired pyramids, the LR-only degraded images and the degraded pyramids of the same
    photos (for the upper bound)."""
    from drn_tf import data, degrade
    from drn_tf.image_sets import write_degraded_set
    from drn_tf.training_images import Pyramid, load_lr_images, load_pyramids

    scale, patch, batch, kind = 4, config.patch_size, config.batch_size, config.degradation
    count = data.unpaired_count(batch, config.unpaired_ratio)
    pyramids, _ = load_pyramids(paired_dir, scale, patch, progress=False)
    hr_pyramids, _ = load_pyramids(unpaired_dir, scale, patch, progress=False)
    # The LR-only data: degraded LR of the held-apart photos, written and read back as files.
    lr_folder, _, _ = write_degraded_set(
        unpaired_dir, kind, scale, unpaired_dir.parent / "unpaired", progress=False
    )
    lr_images, _ = load_lr_images(lr_folder, patch // scale)
    degraded_pyramids = [
        Pyramid(p.path, scale, (degrade.degrade(p.hr, kind, scale), *p.levels[1:]))
        for p in hr_pyramids
    ]
    print(
        f"paired {len(pyramids)} photos, LR-only {len(lr_images)} photos; batch {batch} = "
        f"{batch - count} paired + {count} LR-only, HR patch {patch}"
    )
    return pyramids, lr_images, degraded_pyramids


def _datasets(config: AdaptationConfig, loaded: tuple, seed: int) -> dict:
    """``{variant: tf.data.Dataset}``, all with the same paired stream (``seed``) per batch."""
    import keras
    import tensorflow as tf

    from drn_tf import data

    # TensorFlow combines the streams' seeds with the global one: set it, so that a seed's
    # streams do not depend on the runs before it.
    keras.utils.set_random_seed(seed)
    pyramids, lr_images, degraded_pyramids = loaded
    scale, patch, batch = 4, config.patch_size, config.batch_size
    count = data.unpaired_count(batch, config.unpaired_ratio)

    def paired_stream(size):
        return data.make_train_dataset(pyramids, scale, patch, size, seed)

    def with_all_paired(paired_batch, degraded_batch):
        (lr, targets), (lr_n, targets_n) = paired_batch, degraded_batch
        return (
            tf.concat([lr, lr_n], 0),
            tuple(tf.concat(pair, 0) for pair in zip(targets, targets_n, strict=True)),
        )

    degraded = data.make_train_dataset(degraded_pyramids, scale, patch, count, seed + 1)
    mixed = data.make_mixed_dataset(
        pyramids, lr_images, scale, patch, batch, config.unpaired_ratio, seed
    )
    return {
        "paired-only": paired_stream(batch - count),
        "first": mixed,
        "cascade": mixed,
        "kernel": mixed,
        "paired-degraded": tf.data.Dataset.zip((paired_stream(batch - count), degraded)).map(
            with_all_paired
        ),
    }


def _fine_tune(config: AdaptationConfig, seed: int, variant: str, dataset, output: Path) -> dict:
    """Fine-tunes a fresh copy of the model on ``dataset``; saves it to ``output``."""
    import keras

    from drn_tf.dual_regression import DualRegressionModel
    from drn_tf.loading import load_model
    from drn_tf.models import DRN, save_model_atomic
    from drn_tf.settings import UNPAIRED_LOOPS

    keras.utils.set_random_seed(seed)
    loop = variant if variant in UNPAIRED_LOOPS else "first"
    model = DualRegressionModel.from_drn(load_model(config.model), config.dual_weight, loop)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, config.steps, config.min_learning_rate / config.learning_rate
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    rows: list = []  # (step, running mean loop_error of the LR-only samples)

    def log_loop(batch, logs):
        if (batch + 1) % max(1, config.steps // 10) == 0 and "loop_error" in (logs or {}):
            rows.append((batch + 1, float(logs["loop_error"])))

    start = time.perf_counter()
    history = model.fit(
        dataset,
        steps_per_epoch=config.steps,
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=log_loop)],
    )
    seconds = time.perf_counter() - start
    save_model_atomic(DRN(model.primal, model.duals, name=f"adapt_{variant}"), output)
    print(f"{variant}, seed {seed}: {config.steps} steps in {seconds:.0f} s, final logs "
          + ", ".join(f"{k} {v[-1]:.3f}" for k, v in history.history.items()))  # fmt: skip
    result = {"seconds": seconds, "loop_error_during_training": rows, "model": str(output)}
    if model.degradation is not None:
        kernel = model.degradation.kernel.numpy()
        result["kernel"] = _kernel_summary(kernel)
        print(f"{variant}, seed {seed}: learned kernel {result['kernel']['summary']}")
    return result


def _kernel_summary(kernel) -> dict:
    """Where the learned kernel's mass sits: centre (row, column, in taps from the bicubic
    centre), peak, and its taps rounded to 1e-4."""
    import numpy as np

    offsets = np.arange(kernel.shape[0]) - (kernel.shape[0] - 1) / 2
    rows, columns = kernel.sum(1), kernel.sum(0)
    centre = [float(rows @ offsets), float(columns @ offsets)]
    spread = [float(np.sqrt(rows @ (offsets - centre[0]) ** 2)),
              float(np.sqrt(columns @ (offsets - centre[1]) ** 2))]  # fmt: skip
    summary = (f"centre {centre[0]:+.2f}, {centre[1]:+.2f}; spread {spread[0]:.2f}, "
               f"{spread[1]:.2f} px; peak {kernel.max():.3f}")  # fmt: skip
    return {"summary": summary, "centre": centre, "spread": spread, "peak": float(kernel.max()),
            "taps": np.round(kernel, 4).tolist()}  # fmt: skip


def _measure(model, sets: list[Path], degradation: str) -> dict:
    from drn_tf.evaluation import evaluate, evaluate_closed_loop

    result = {}
    for kind in (degradation, "bicubic"):
        scores = evaluate(model, sets, 4, progress=False, lr_kind=kind)
        for name, score in scores.items():
            result[f"{name} {kind}"] = {"psnr": score["psnr"], "ssim": score["ssim"]}
    loops = evaluate_closed_loop(model, sets, 4, degradation, progress=False)
    for name, score in loops.items():
        result[f"{name} {degradation}"]["loop_error"] = score["loop_error"]
    return result


def _picture(config: AdaptationConfig, sets: list[Path], models: dict, path: Path) -> None:
    """un-adapted | adapted | HR crop of one degraded test image, labelled."""
    import numpy as np
    from PIL import Image, ImageDraw

    from drn_tf.files import atomic_path
    from drn_tf.image_sets import load_eval_pairs
    from drn_tf.inference import upscale

    set_name, image_name, top, left, size = config.crop
    top, left, size = int(top), int(left), int(size)
    folder = next(s for s in sets if s.name == set_name)
    pairs = load_eval_pairs(folder, 4, lr_kind=config.degradation)
    _, lr, hr = next(p for p in pairs if p[0] == image_name)
    window = (slice(top, top + size), slice(left, left + size))
    panels = [(label, upscale(lr, model)[window]) for label, model in models.items()]
    panels.append(("HR", hr[window]))
    zoom, gap, band = 2, 6, 22
    width = len(panels) * size * zoom + (len(panels) - 1) * gap
    canvas = Image.new("RGB", (width, size * zoom + band), "white")
    draw = ImageDraw.Draw(canvas)
    for number, (label, crop) in enumerate(panels):
        x = number * (size * zoom + gap)
        tile = Image.fromarray(np.ascontiguousarray(crop)).resize(
            (size * zoom, size * zoom), Image.Resampling.NEAREST
        )
        canvas.paste(tile, (x, band))
        draw.text((x + 4, 4), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        canvas.save(temp, format="PNG")
    print(f"wrote {path} ({set_name}/{image_name}, {config.degradation} LR ×4, "
          f"HR crop {size}px at ×{zoom})")  # fmt: skip


def _mean_scores(runs: list[dict]) -> tuple[dict, dict]:
    """The mean of each score over ``runs`` (one per seed), and ``[min, max]`` of each PSNR."""
    columns = runs[0]["scores"]
    mean = {
        column: {k: sum(r["scores"][column][k] for r in runs) / len(runs) for k in values}
        for column, values in columns.items()
    }
    spread = {
        column: [min(r["scores"][column]["psnr"] for r in runs),
                 max(r["scores"][column]["psnr"] for r in runs)]
        for column in columns
    }  # fmt: skip
    return mean, spread


def run(config: AdaptationConfig, positionals: list[str]) -> None:
    from drn_tf import data
    from drn_tf.loading import load_model

    if config.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {config.steps}")
    if not config.seeds:
        raise ValueError("--seeds needs at least one seed")
    data.unpaired_count(config.batch_size, config.unpaired_ratio)
    work = Path(config.work_dir)
    paired_dir, unpaired_dir = _link_split(Path(config.train_dir), work)
    sets = _test_sets(config.test_dir, work, config.degradation)
    loaded = _load(config, paired_dir, unpaired_dir)

    start = time.perf_counter()
    base = load_model(config.model)
    rows = {"un-adapted": {"scores": _measure(base, sets, config.degradation)}}
    print(json.dumps({"un-adapted": rows["un-adapted"]["scores"]}))
    models = {}  # the first seed's fine-tuned files, for the picture
    for seed in config.seeds:
        datasets = _datasets(config, loaded, seed)
        for variant in config.variants:
            output = work / f"{config.degradation}_{variant}_seed{seed}.keras"
            models.setdefault(variant, output)
            result = _fine_tune(config, seed, variant, datasets[variant], output)
            result["scores"] = _measure(load_model(output), sets, config.degradation)
            rows.setdefault(variant, {"runs": []})["runs"].append({"seed": seed, **result})
            print(json.dumps({variant: {"seed": seed, **result["scores"]}}))
    for variant in config.variants:
        rows[variant]["scores"], rows[variant]["psnr_range"] = _mean_scores(rows[variant]["runs"])
    total = time.perf_counter() - start

    columns = list(rows["un-adapted"]["scores"])
    seeds = ", ".join(map(str, config.seeds))
    print(f"\nY-PSNR, mean over seeds {seeds} (min..max), and the mean closed-loop error")
    loop_title = f"loop ({config.degradation})"
    print(f"{'model':16}" + "".join(f"{c:>22}" for c in columns) + f"{loop_title:>16}")
    for name, row in rows.items():
        scores, spread = row["scores"], row.get("psnr_range")
        cells = [f"{scores[c]['psnr']:.2f}" for c in columns]
        if spread and len(config.seeds) > 1:
            cells = [
                f"{m} ({spread[c][0]:.2f}..{spread[c][1]:.2f})"
                for m, c in zip(cells, columns, strict=True)
            ]
        loops = [v["loop_error"] for v in scores.values() if "loop_error" in v]
        print(f"{name:16}" + "".join(f"{cell:>22}" for cell in cells)
              + f"{sum(loops) / len(loops):16.3f}")  # fmt: skip
    print(f"total {total / 60:.1f} min")
    report = {"config": dataclasses.asdict(config), "rows": rows, "minutes": total / 60}
    json_path = Path(config.json or work / "results.json")
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {json_path}")
    adapted = next((v for v in ("kernel", "cascade", "first") if v in rows), None)
    if config.picture and adapted:
        shown = {"un-adapted": base, f"adapted ({adapted})": load_model(models[adapted])}
        if "paired-degraded" in models:
            shown[f"paired {config.degradation} (upper bound)"] = load_model(
                models["paired-degraded"]
            )
        _picture(config, sets, shown, Path(config.picture))


def main(argv: Sequence[str]) -> int:
    return run_command("python -m benchmarks.adaptation", AdaptationConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
