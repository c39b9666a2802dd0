"""The report of :mod:`benchmarks.latency`: the issue's targets checked against a model's
measurements, and the Markdown and chart written beside ``latency.json``."""

from __future__ import annotations

import math

from benchmarks import kernels, peaks
from benchmarks import paths as P
from benchmarks import report as R

#: The paths' targets (issue 9), checked in the report.
TARGETS = {
    "fastest_vs_torch": 2.5,  # fastest path meeting its floor / fastest PyTorch (AMX: 4.0)
    "fastest_vs_torch_amx": 4.0,
    "fastest_peak_share": 0.80,  # of its precision's GEMM peak
    "fp32_vs_torch_fp32": 1.3,  # fastest fp32 / fastest PyTorch fp32 (issue 21)
    "fp32_peak_share": 0.85,
    "keras_bf16_vs_torch_bf16": 1.3,  # mixed_bfloat16 tf.function / PyTorch bf16 autocast
}


def evaluate_targets(model_record: dict, cpu: dict) -> list[dict]:
    """The issue's targets for one model: each with its measured value, the bar and met."""
    machine_peaks = peaks.peaks_of(model_record)
    ok = {r["path"]: r for r in model_record["paths"] if "median_ms" in r}
    for record in ok.values():
        peak = machine_peaks.get(record["compute"])
        record["peak_share"] = record["gflops"] / peak if peak else None
    torch_paths = [r for p, r in ok.items() if p in P.TORCH]
    targets = []

    def add(what: str, value: float, bar: float) -> None:
        targets.append({"target": what, "value": value, "bar": bar, "met": value >= bar})

    def fastest_of(records):
        return min(records, key=lambda r: r["median_ms"], default=None)

    fastest_torch = fastest_of(torch_paths)
    fastest = fastest_of(
        r for p, r in ok.items() if r.get("meets_floor") and P.PATHS[p].compute != "gpu"
    )
    if fastest and fastest_torch:
        what = f"fastest path ({fastest['path']}) / fastest PyTorch ({fastest_torch['path']})"
        bar = TARGETS[
            "fastest_vs_torch_amx" if cpu["flags"].get("amx_int8") else "fastest_vs_torch"
        ]
        add(what, fastest_torch["median_ms"] / fastest["median_ms"], bar)
    if fastest and fastest.get("peak_share"):
        what = f"fastest path ({fastest['path']}) share of the {fastest['compute']} GEMM peak"
        add(what, fastest["peak_share"], TARGETS["fastest_peak_share"])
    fp32 = fastest_of(r for r in ok.values() if r["compute"] == "fp32" and r.get("meets_floor"))
    torch_fp32 = fastest_of(r for r in torch_paths if r["compute"] == "fp32")
    if fp32 and torch_fp32:
        what = f"fastest fp32 ({fp32['path']}) / fastest PyTorch fp32 ({torch_fp32['path']})"
        add(what, torch_fp32["median_ms"] / fp32["median_ms"], TARGETS["fp32_vs_torch_fp32"])
    if fp32 and fp32.get("peak_share"):
        what = f"fastest fp32 ({fp32['path']}) share of the fp32 GEMM peak"
        add(what, fp32["peak_share"], TARGETS["fp32_peak_share"])
    if "mixed_bfloat16" in ok and "torch_bf16" in ok:
        what = "Keras mixed_bfloat16 tf.function / PyTorch bf16 autocast"
        ratio = ok["torch_bf16"]["median_ms"] / ok["mixed_bfloat16"]["median_ms"]
        add(what, ratio, TARGETS["keras_bf16_vs_torch_bf16"])
    return targets


def auto_precision_check(model_record: dict) -> dict | None:
    """What ``--precision auto`` picks for upscaling here (drn_tf.precision) and whether this
    run's numbers agree: bf16 should be picked exactly when mixed_bfloat16 was faster."""
    try:
        from drn_tf.precision import auto_policy
    except ImportError:
        return None
    ok = {r["path"]: r for r in model_record["paths"] if "median_ms" in r}
    if "tf_function" not in ok or "mixed_bfloat16" not in ok:
        return {"picks": auto_policy(training=False)}
    speedup = ok["tf_function"]["median_ms"] / ok["mixed_bfloat16"]["median_ms"]
    picks = auto_policy(training=False)
    return {
        "picks": picks,
        "bf16_speedup": speedup,
        "agrees": (picks == "mixed_bfloat16") == (speedup > 1.0),
    }


# --- the report ------------------------------------------------------------------------------


def _fmt(value, digits=1, unit="") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:,.{digits}f}{unit}"


def markdown(report: dict) -> str:
    """The report as Markdown: the CPU heading, the GEMM peaks, one table per model, targets."""
    cpu = report["cpu"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu["flags"].items())
    load = report["loadavg_before"], report["loadavg_after"]
    lines = [
        f"## Latency: {cpu['model']}, {cpu['cpus']} logical CPUs",
        "",
        f"CPU flags: {flags}.  ",
        f"Load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in load[0])}, after: "
        f"{' '.join(f'{x:.2f}' for x in load[1])}.  ",
        f"Input {report['size']}×{report['size']} (a crop of the bundled photo), batch 1; "
        f"{report['warmup']} warm-up + {report['runs']} timed runs per path, taking turns "
        f"round by round; threads {report['threads'] or 'all'}.  ",
        f"Command: `{report['command']}`",
    ]
    for model in report["models"]:
        machine_peaks = peaks.peaks_of(model)
        torch_macs = model.get("torch_macs")
        pyramid = (
            f" (PyTorch, the authors' pyramid: {torch_macs / 1e9:,.2f} G)" if torch_macs else ""
        )
        lines += [
            "",
            f"### {model['label']}: {model['config']['n_blocks']} blocks, "
            f"{model['config']['n_feats']} features, ×{model['config']['scale']}, "
            f"{model['macs'] / 1e9:,.2f} G multiply-accumulates{pyramid}",
            "",
            "GEMM peaks in the same rounds (best round; a precision's peak is its fastest "
            "GEMM): "
            + ", ".join(
                f"{p} {_fmt(v, 0)} G{'OP' if p == 'int8' else 'FLOP'}/s"
                for p, v in machine_peaks.items()
            )
            + ".",
            "",
            *[peaks.gemm_line(path, g) for path, g in model["gemm"].items()],
            "",
            "| path | compute | median ms | p90 ms | MP/s | GFLOP/s | % of peak | peak RSS MB "
            "| PSNR vs Keras fp32 dB (floor) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        rows = sorted(model["paths"], key=lambda r: r.get("median_ms", math.inf))
        for r in rows:
            if "median_ms" not in r:
                why = r.get("skipped") or r.get("error")
                lines.append(f"| {r['path']} | {r['compute']} | – | – | – | – | – | – | "
                             f"{'skipped' if 'skipped' in r else 'failed'}: {why} |")  # fmt: skip
                continue
            share = r.get("peak_share")
            floor = "ok" if r["meets_floor"] else "BELOW"
            lines.append(
                f"| {r['path']} | {r['compute']} | {_fmt(r['median_ms'])} | {_fmt(r['p90_ms'])} "
                f"| {_fmt(r['mp_per_s'], 3)} | {_fmt(r['gflops'], 0)} "
                f"| {_fmt(share * 100 if share else None, 0, '%')} | {_fmt(r['peak_rss_mb'], 0)} "
                f"| {_fmt(r['psnr_db'])} ({r['floor_db']:.0f}, {floor}) |"
            )
        ran = [r for r in rows if r.get("kernels")]
        if ran:
            lines += ["", "Kernels that ran (OpenVINO's runtime graph, oneDNN's verbose log):", ""]
            lines += [f"- `{r['path']}`: {kernels.kernel_summary(r['kernels'])}" for r in ran]
        if model.get("targets"):
            lines += ["", "| target | measured | bar | met |", "|---|---:|---:|---|"]
            for t in model["targets"]:
                pct = "share" in t["target"]
                value = f"{t['value'] * 100:.0f}%" if pct else f"{t['value']:.2f}×"
                bar = f"{t['bar'] * 100:.0f}%" if pct else f"{t['bar']:.2f}×"
                lines.append(f"| {t['target']} | {value} | {bar} | {'yes' if t['met'] else 'NO'} |")
        auto = model.get("auto_precision")
        if auto and "agrees" in auto:
            lines += [
                "",
                f"`--precision auto` picks {auto['picks']} for upscaling here; mixed_bfloat16 ran "
                f"{auto['bf16_speedup']:.2f}× the float32 tf.function speed: "
                f"{'agrees' if auto['agrees'] else 'DISAGREES'}.",
            ]
    return "\n".join(lines) + "\n"


def chart(report: dict):
    """Median latency per path, one panel per model, bars coloured by compute precision."""
    plt = R.pyplot()

    colours = {"fp32": "tab:blue", "bf16": "tab:orange", "int8": "tab:green", "gpu": "tab:gray",
               "bf16 emulated": "tab:red"}  # fmt: skip
    models = report["models"]
    height = max(3.0, 0.32 * max(len(m["paths"]) for m in models) + 1.2)
    figure, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), height), squeeze=False)
    for axis, model in zip(axes[0], models, strict=True):
        rows = [r for r in model["paths"] if "median_ms" in r]
        rows.sort(key=lambda r: -r["median_ms"])
        names = [r["path"] + (" (torch)" if r["path"] in P.TORCH else "") for r in rows]
        values = [r["median_ms"] for r in rows]
        axis.barh(names, values, color=[colours[r["compute"]] for r in rows])
        for y, value in enumerate(values):
            axis.text(value, y, f" {value:,.0f}", va="center", fontsize=7)
        axis.set_xlabel(f"median ms, {report['size']}×{report['size']} input")
        axis.set_title(f"{model['label']}\n{model['macs'] / 1e9:,.1f} G MACs", fontsize=9)
        axis.tick_params(axis="y", labelsize=7)
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
        axis.legend(handles, list(colours), loc="upper right", fontsize=7)
    figure.suptitle(report["cpu"]["model"], fontsize=9)
    figure.tight_layout()
    return figure
