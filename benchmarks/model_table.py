"""One table of every packaged model beside the published ones: quality, size, cost and speed.

    python -m benchmarks.model_table
    python -m benchmarks.model_table --frames 2 --output /tmp/model_table
    python -m benchmarks.model_table --models default runs/x4/model.keras --runtimes keras

For each model (``default``: the packaged ×2/×4/×8 models, ``fast``: the packaged fast ×4 model
when installed, or a ``.keras`` path) and for bicubic at each of their scales:

- Set5/Set14 (or the ``--data`` folders) Y-PSNR/SSIM by :func:`drn_tf.evaluation.evaluate`,
  the protocol and numbers of ``drn-tf evaluate``;
- parameters of the primal network and of the dual networks;
- GMAC (10⁹ multiply-accumulates) of upscaling (:func:`drn_tf.models.top_level`: the top
  level, projections folded) the LR frame of one ``--frame`` output (1920×1080 by default: a
  480×270 input at ×4), counted exactly from the traced graph by
  :func:`benchmarks.paths.conv_macs` (one pass over the whole frame; upscaling in tiles adds
  the tiles' overlaps on top);
- frames/s of ``drn_tf.upscale`` (tiles as the defaults) on one such LR frame (the bundled
  photo resized) with ``runtime="keras"`` in float32 and with ``runtime="auto"`` (what it
  runs on this CPU is named; skipped without the ``export`` extra): each in a fresh process,
  one warm-up frame (it also converts the model for ``auto``, cached on disk), then
  ``--frames`` timed ones, median.

Beside them, :data:`PUBLISHED`: the results other methods' papers report, with their training
data. Writes ``model_table.md`` and ``model_table.json`` to ``--output``; prints the Markdown.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import report as R
from drn_tf import bundled, cpu
from drn_tf.flags import UsageError, flag_name, setting

PROG = "python -m benchmarks.model_table"
_BENCHMARK = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark"
RUNTIMES = ("keras", "auto")


@dataclasses.dataclass(frozen=True)
class Published:
    """One published result: ``sets`` maps a set name to ``(PSNR dB, SSIM)`` as printed (the
    strings keep the paper's digits)."""

    model: str
    scale: int
    training: str
    sets: dict[str, tuple[str, str]]
    source: str


_SRCNN = (
    'Dong, Loy, He, Tang, "Image Super-Resolution Using Deep Convolutional Networks", TPAMI 2016'
)
_FSRCNN = (
    'Dong, Loy, Tang, "Accelerating the Super-Resolution Convolutional Neural Network", ECCV 2016'
)
_VDSR = (
    'Kim, Lee, Lee, "Accurate Image Super-Resolution Using Very Deep Convolutional Networks", '
    "CVPR 2016"
)
_DRRN = 'Tai, Yang, Liu, "Image Super-Resolution via Deep Recursive Residual Network", CVPR 2017'
_MEMNET = (
    'Tai, Yang, Liu, Xu, "MemNet: A Persistent Memory Network for Image Restoration", ICCV 2017'
)
_LAPSRN = (
    'Lai, Huang, Ahuja, Yang, "Deep Laplacian Pyramid Networks for Fast and Accurate '
    'Super-Resolution", CVPR 2017'
)
_DRN = (
    'Guo et al., "Closed-loop Matters: Dual Regression Networks for Single Image '
    "Super-Resolution\", CVPR 2020: the paper's DRN-S (docs/drn-reference.md §5)"
)
_291 = "T91 + BSD200"


def _published(model: str, scale: int, training: str, source: str, *cells: str) -> Published:
    """A :class:`Published` row from its Set5 (then Set14) cells ``"PSNR / SSIM"``."""
    names = ("Set5", "Set14")[: len(cells)]
    sets = {name: tuple(cell.split(" / ")) for name, cell in zip(names, cells, strict=True)}
    return Published(model, scale, training, sets, source)


#: Published Set5/Set14 results (bicubic LR, Y channel, ``scale`` pixels shaved). Only numbers
#: known for sure are here; a cell left out is shown as "–" (e.g. the 8× Set14 of DRN-S).
PUBLISHED: tuple[Published, ...] = (
    _published("SRCNN", 2, "ImageNet", _SRCNN, "36.66 / 0.9542", "32.45 / 0.9067"),
    _published("SRCNN", 4, "ImageNet", _SRCNN, "30.48 / 0.8628", "27.49 / 0.7503"),
    _published("FSRCNN", 2, "T91 + General-100", _FSRCNN, "37.05 / 0.9560", "32.66 / 0.9090"),
    _published("FSRCNN", 4, "T91 + General-100", _FSRCNN, "30.71 / 0.8657", "27.59 / 0.7535"),
    _published("VDSR", 2, _291, _VDSR, "37.53 / 0.9587", "33.03 / 0.9124"),
    _published("VDSR", 4, _291, _VDSR, "31.35 / 0.8838", "28.01 / 0.7674"),
    _published("DRRN", 2, _291, _DRRN, "37.74 / 0.9591", "33.23 / 0.9136"),
    _published("DRRN", 4, _291, _DRRN, "31.68 / 0.8888", "28.21 / 0.7720"),
    _published("MemNet", 2, _291, _MEMNET, "37.78 / 0.9597", "33.28 / 0.9142"),
    _published("MemNet", 4, _291, _MEMNET, "31.74 / 0.8893", "28.26 / 0.7723"),
    _published("LapSRN", 8, _291, _LAPSRN, "26.15 / 0.738", "24.35 / 0.620"),
    _published("DRN-S (paper)", 4, "DIV2K + Flickr2K", _DRN, "32.68 / 0.901", "28.93 / 0.790"),
    _published("DRN-S (paper)", 8, "DIV2K + Flickr2K", _DRN, "27.41 / 0.790"),
)


@dataclasses.dataclass
class ModelTableConfig:
    """Every packaged model's PSNR/SSIM, size, GMAC per frame and frames/s beside published
    results."""

    models: list[str] = setting(
        ["default", "fast"],
        "default (the packaged ×2/×4/×8 models), fast (the packaged fast ×4, if installed) "
        "or .keras paths.",
    )
    data: list[str] = setting(
        [str(_BENCHMARK / "Set5"), str(_BENCHMARK / "Set14")],
        "Benchmark sets (HR/ + LR_bicubic/X<s>/) or folders of HR images; add folders after "
        "Set5 and Set14 to score more sets.",
    )
    frame: str = setting("1920x1080", "Output frame WIDTHxHEIGHT of the GMAC and frames/s columns.")
    frames: int = setting(2, "Timed frames per model and runtime after one warm-up (0: no timing).")
    runtimes: list[str] = setting(list(RUNTIMES), "drn_tf.upscale runtimes to time.", RUNTIMES)
    output: str = setting("runs/benchmarks", "Folder for model_table.md and model_table.json.")


def command_line(config: ModelTableConfig) -> str:
    """``python -m benchmarks.model_table`` with the flags of ``config`` that differ from the
    defaults."""
    words, defaults = [PROG], ModelTableConfig()
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value != getattr(defaults, field.name):
            values = value if isinstance(value, list) else [value]
            words += [flag_name(field.name), *(shlex.quote(str(v)) for v in values)]
    return " ".join(words)


def _frame_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise UsageError(f"--frame: {text!r} is not WIDTHxHEIGHT")
    return int(width), int(height)


def model_files(names: Sequence[str]) -> tuple[list[tuple[str, Path]], list[str]]:
    """``([(label, .keras path)], notes)`` for ``--models``: ``default`` gives every packaged
    scale, ``fast`` the fast tier's files that are installed (a note when none is), anything
    else is a path, which must exist."""
    files, notes = [], []
    for name in names:
        if name in ("default", "fast"):
            packaged = getattr(bundled, "FAST_MODEL_PATHS" if name == "fast" else
                               "DEFAULT_MODEL_PATHS", {})  # fmt: skip
            found = [(f"{p.name} ({name})", p) for _, p in sorted(packaged.items()) if p.is_file()]
            if not found:
                notes.append(f"--models {name}: no packaged {name} model is installed here")
            files += found
        elif Path(name).is_file():
            files.append((Path(name).name, Path(name)))
        else:
            raise FileNotFoundError(f"--models {name}: no such model file")
    return files, notes


def training_data(info: dict) -> str:
    """The training data a model file names in ``model.info["training"]`` (``drn-tf train on
    T91 + BSD200 (a remark), …`` → ``T91 + BSD200``); "–" when it names none."""
    text = str(info.get("training", ""))
    found = re.search(r"\bon (.+?)(?:,| \(|$)", text)
    return found.group(1).strip() if found else (text or "–")


def lr_frame(width: int, height: int):
    """The bundled photo (:data:`drn_tf.bundled.SAMPLE_IMAGE`) resized (Lanczos) to
    ``width × height``: uint8 ``(height, width, 3)``."""
    import numpy as np
    from PIL import Image

    with Image.open(bundled.SAMPLE_IMAGE) as image:
        return np.asarray(image.convert("RGB").resize((width, height), Image.LANCZOS))


def _timing_worker(path: str, runtime: str, lr_size: tuple[int, int], frames: int, results):
    """Times ``drn_tf.upscale`` on one LR frame in this fresh process: 1 warm-up + ``frames``."""
    try:
        from drn_tf.console import quiet_tensorflow

        quiet_tensorflow()  # before TensorFlow loads
        from drn_tf.loading import load_model
        from export import runtime as runtimes

        model = load_model(path)
        precision = "float32" if runtime == "keras" else "auto"
        choice = runtimes.choose(runtime, precision)
        frame = lr_frame(*lr_size)
        seconds = []
        for _ in range(frames + 1):
            start = time.perf_counter()
            runtimes.upscale(frame, model, runtime=runtime, precision=precision)
            seconds.append(time.perf_counter() - start)
        results.put(
            {
                "ran": choice.describe(),
                "warmup_s": seconds[0],
                "seconds": seconds[1:],
                "frames_per_s": 1 / statistics.median(seconds[1:]),
                "load_average": os.getloadavg()[0],
                "peak_rss_mb": R.peak_rss_mb(),
            }
        )
    except Exception as error:  # noqa: BLE001 - told in the table, the other rows go on
        results.put({"error": f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"})


def _timings(path: Path, lr_size, config: ModelTableConfig, auto_note: str | None) -> dict:
    timings = {}
    for runtime in config.runtimes if config.frames else ():
        if runtime == "auto" and auto_note:
            timings[runtime] = {"skipped": auto_note}
            continue
        result = R.in_fresh_process(_timing_worker, str(path), runtime, lr_size, config.frames)
        timings[runtime] = result
        print(f"{path.name} {runtime}: {result}", file=sys.stderr, flush=True)
    return timings


def run(config: ModelTableConfig, positionals: list[str], verbose: bool = False) -> dict:
    """Measures every model and bicubic, adds the published rows; writes and returns the report."""
    if positionals:
        raise UsageError(f"unexpected arguments: {' '.join(positionals)}")
    if config.frames < 0:
        raise UsageError(f"--frames must be at least 0, got {config.frames}")
    width, height = _frame_size(config.frame)
    for folder in config.data:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--data {folder}: folder does not exist")
    files, notes = model_files(config.models)
    if not files:
        raise UsageError("--models: no model to measure")
    from drn_tf.console import quiet_tensorflow

    if not verbose:
        quiet_tensorflow()
    from benchmarks.paths import conv_macs
    from drn_tf.evaluation import evaluate
    from drn_tf.loading import load_model
    from export import runtime as runtimes

    auto = runtimes.choose("auto")
    auto_note = "no export extra" if auto.note else None
    rows = []
    for label, path in files:
        model = load_model(path, policy="float32")
        scale = model.scale
        if width % scale or height % scale:
            raise UsageError(f"--frame {config.frame}: not divisible by the ×{scale} of {label}")
        lr_size = (width // scale, height // scale)
        sets = evaluate(model, config.data, scale, progress=verbose)
        rows.append(
            {
                "model": label,
                "path": str(path),
                "scale": scale,
                "training": training_data(getattr(model, "info", {}) or {}),
                "sets": {s: {"psnr": r["psnr"], "ssim": r["ssim"]} for s, r in sets.items()},
                "primal_parameters": model.primal.count_params(),
                "dual_parameters": sum(d.count_params() for d in model.duals),
                "macs_per_frame": conv_macs(model, lr_size[1], lr_size[0]),
                "timings": _timings(path, lr_size, config, auto_note),
            }
        )
        del model
    scales = sorted({r["scale"] for r in rows})
    for scale in scales:
        sets = evaluate("bicubic", config.data, scale, progress=verbose)
        rows.append(
            {
                "model": "bicubic",
                "scale": scale,
                "training": "none",
                "sets": {s: {"psnr": r["psnr"], "ssim": r["ssim"]} for s, r in sets.items()},
            }
        )
    published = [
        {
            "model": p.model,
            "scale": p.scale,
            "training": p.training,
            "sets": {
                s: {"psnr": float(v[0]), "ssim": float(v[1]), "printed": v}
                for s, v in p.sets.items()
            },
            "source": p.source,
        }
        for p in PUBLISHED
        if p.scale in scales
    ]
    set_names = list(rows[0]["sets"])
    first = set_names[0]
    ordered = sorted(
        rows + published,
        key=lambda r: (r["scale"], r["sets"].get(first, {}).get("psnr", -math.inf)),
    )
    report = {
        "command": command_line(config),
        "cpu": cpu.describe_cpu(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "frame": [width, height],
        "frames": config.frames,
        "auto": auto.describe(),
        "sets": set_names,
        "notes": notes,
        "rows": ordered,
    }
    R.write(config.output, "model_table", report, markdown(report))
    return report


def _quality(row: dict, name: str) -> str:
    value = row["sets"].get(name)
    if value is None:
        return "–"
    if "printed" in value:
        return " / ".join(value["printed"])
    return f"{value['psnr']:.2f} / {value['ssim']:.4f}"


def _gmac(macs: int) -> str:
    gmac = macs / 1e9
    return f"{gmac:,.1f}" if gmac >= 10 else f"{gmac:.3g}"


def _speed(row: dict, runtime: str) -> str:
    if "timings" not in row:
        return ""  # not ours: published, or bicubic
    timing = row["timings"].get(runtime)
    if timing is None:
        return "–"
    if "frames_per_s" not in timing:
        return (timing.get("skipped") or timing.get("error", "–")).replace("|", "/")
    ran = "" if runtime == "keras" else f" ({timing['ran'].split(' (')[0]})"
    return f"{timing['frames_per_s']:.3g}{ran}"


def markdown(report: dict) -> str:
    """The table: rows by scale, then by PSNR on the first set, then the sources."""
    width, height = report["frame"]
    sets = report["sets"]
    loads = [
        t["load_average"] for r in report["rows"] for t in r.get("timings", {}).values()
        if "load_average" in t
    ]  # fmt: skip
    during = f", {min(loads):.1f}–{max(loads):.1f} after the timed runs" if loads else ""
    lines = [
        f"## Models: quality, size and speed on {report['cpu']}",
        "",
        f"Command: `{report['command']}`; load average {report['load_average']:.1f} at the end"
        f"{during} ({report['cpus']} CPUs). "
        "PSNR/SSIM: Y channel, scale pixels shaved (`drn-tf evaluate`); GMAC: upscaling's "
        "multiply-accumulates (top level, projections folded) on the LR frame of one "
        f"{width}×{height} output; "
        f"frames/s: `drn_tf.upscale` on that frame (default tiles), median of "
        f"{report['frames']} after a warm-up, each runtime in a fresh process; auto runs "
        f"{report['auto']} here. Published rows: the papers' numbers [n].",
        "",
        "| model | scale | training data | "
        + " | ".join(f"{s} PSNR / SSIM" for s in sets)
        + f" | parameters (primal + duals) | GMAC per {width}×{height} frame "
        "| frames/s keras fp32 | frames/s auto |",
        "|---|---:|---|" + "---:|" * len(sets) + "---:|---:|---:|---|",
    ]
    sources = []
    for row in report["rows"]:
        name = row["model"]
        if "source" in row:
            if row["source"] not in sources:
                sources.append(row["source"])
            name += f" [{sources.index(row['source']) + 1}]"
        params = (
            f"{row['primal_parameters']:,} + {row['dual_parameters']:,}"
            if "primal_parameters" in row
            else ("0" if row["model"] == "bicubic" else "–")
        )
        gmac = _gmac(row["macs_per_frame"]) if "macs_per_frame" in row else "–"
        lines.append(
            f"| {name} | ×{row['scale']} | {row['training']} | "
            + " | ".join(_quality(row, s) for s in sets)
            + f" | {params} | {gmac} | {_speed(row, 'keras')} | {_speed(row, 'auto')} |"
        )
    lines.append("")
    lines += [f"[{i}] {source}." for i, source in enumerate(sources, 1)]
    lines += [f"Note: {note}." for note in report["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.model_table [flags]``; returns the exit status."""
    return R.command(PROG, ModelTableConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
