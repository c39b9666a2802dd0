"""Tests for the benchmark commands: their flags, their usage examples, a tiny run of each."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import drn_tf
from benchmarks import (
    checkpoints,
    data_pipeline,
    latency,
    latency_report,
    peaks,
    precision,
    profile_ops,
    quality,
    train_throughput,
)
from benchmarks import paths as bench_paths
from drn_tf.flags import parse_config
from export import verification


@pytest.mark.parametrize(
    "module, config_cls",
    [
        (precision, precision.PrecisionConfig),
        (data_pipeline, data_pipeline.PipelineConfig),
        (latency, latency.LatencyConfig),
        (quality, quality.QualityConfig),
        (train_throughput, train_throughput.ThroughputConfig),
        (profile_ops, profile_ops.ProfileConfig),
    ],
)
def test_usage_examples_in_docstrings_parse(module, config_cls):
    text = module.__doc__.replace("\\\n", " ")
    examples = re.findall(rf"python -m {module.__name__}( [^\n]*)", text)
    assert examples, "the docstring shows how to run it"
    for example in examples:
        parse_config(config_cls, shlex.split(example), module.__name__)  # raises on a bad flag


@pytest.mark.slow
def test_precision_runs_tiny(capsys):
    argv = ["--n-blocks", "1", "--n-feats", "4", "--patch-size", "16", "--batch-size", "2"]
    assert precision.main([*argv, "--steps", "1", "--precisions", "float32"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("drn-s x4 n_blocks=1 n_feats=4 patch=16 batch=2 on ")
    assert len(lines) == 2 and re.match(r"\s*float32: +[\d.]+ ms/step", lines[1])


def test_data_pipeline_runs_tiny(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    argv = ["--train-dir", str(tmp_path), "--scale", "2", "--patch-size", "16", "--batch-size", "2"]
    assert data_pipeline.main([*argv, "--steps", "2", "--warmup", "1", "--repeats", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["images"], report["skipped"], report["batch_size"]) == (3, 0, 2)
    assert len(report["samples_per_s_all"]) == 1 and report["samples_per_s_median"] > 0


def test_bad_values_are_one_line(capsys):
    assert precision.main(["--steps", "0"]) == 1
    assert capsys.readouterr().err.strip() == (
        "python -m benchmarks.precision: error: --steps must be at least 1, got 0"
    )
    assert precision.main(["--n_blocks", "4"]) == 2  # the old underscore spelling is refused


# --- latency, quality, train_throughput and their helpers ---------------------------------

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def expected_macs(n_blocks: int, n_feats: int, h: int, w: int, pyramid: bool = False) -> int:
    """Multiply-accumulates of DRN-S ×4 written out from the architecture (docs/drn-reference.md
    §2.3), independently of the traced graph: k·k·C_in·C_out·H_out·W_out per convolution.
    ``pyramid``: every level and the 1×1 projections, as the authors' code; otherwise the top
    level with each projection folded into the ×2 convolution before it (what drn-tf runs)."""
    f, H, W = n_feats, 4 * h, 4 * w

    def conv(k, c_in, c_out, hh, ww):
        return k * k * c_in * c_out * hh * ww

    total = conv(5, 3, 3 * 16, h, w)  # bicubic: one 5×5 conv, scale² phases per channel
    total += 2 * conv(1, 3, 3, H, W)  # mean shifts of the input and the top level
    total += conv(3, 3, f, H, W)  # head
    total += conv(3, f, f, H // 2, W // 2) + conv(3, f, 2 * f, H // 2, W // 2)  # down 0
    total += conv(3, 2 * f, 2 * f, h, w) + conv(3, 2 * f, 4 * f, h, w)  # down 1
    c = 4 * f
    if pyramid:  # the lower levels' tails and mean shifts
        total += conv(3, c, 3, h, w) + conv(1, 3, 3, h, w)
        total += conv(3, 4 * f, 3, 2 * h, 2 * w) + conv(1, 3, 3, 2 * h, 2 * w)
    for k, skip in ((0, 2 * f), (1, f)):
        hh, ww = h * 2**k, w * 2**k
        squeezed = max(c // 16, 1)
        rcab = 2 * conv(3, c, c, hh, ww) + conv(1, c, squeezed, 1, 1) + conv(1, squeezed, c, 1, 1)
        total += n_blocks * rcab
        if pyramid:  # ×2 conv to 4c channels, shuffle, 1×1 projection to the skip's width
            total += conv(3, c, 4 * c, hh, ww) + conv(1, c, skip, 2 * hh, 2 * ww)
        else:  # ×2 conv straight to 4 sub-pixels of the skip's width
            total += conv(3, c, 4 * skip, hh, ww)
        c = 2 * skip
    return total + conv(3, c, 3, H, W)  # top tail


@pytest.mark.slow
def test_mac_count_is_exact():
    keras.utils.set_random_seed(0)
    tiny = drn_tf.build_drn_bundle("drn-s", 4, n_blocks=2, n_feats=4)
    assert bench_paths.conv_macs(tiny, 12, 20) == expected_macs(2, 4, 12, 20)
    assert bench_paths.pyramid_macs(tiny, 12, 20) == expected_macs(2, 4, 12, 20, pyramid=True)
    paper = drn_tf.build_drn_bundle("drn-s", 4)
    assert bench_paths.conv_macs(paper, 128, 128) == expected_macs(30, 16, 128, 128)
    pyramid = bench_paths.pyramid_macs(paper, 128, 128)
    assert pyramid == expected_macs(30, 16, 128, 128, pyramid=True)
    assert round(pyramid / 1e9, 1) == 195.1  # the figure for DRN-S ×4 at 128×128


def test_checkpoint_sizes_of_the_authors_file():
    from drn_tf.torch_checkpoints import read_checkpoint

    state = read_checkpoint(REFERENCE / "drn_s_x4.pt")
    assert checkpoints.checkpoint_sizes(state) == {"scale": 4, "n_blocks": 30, "n_feats": 16}
    with pytest.raises(ValueError, match="not a DRN primal state dict"):
        checkpoints.checkpoint_sizes({"weight": np.zeros(3)})


def test_keras_state_dict_converts_back_to_the_same_weights(tiny):
    from drn_tf.convert import _assign

    model, _ = tiny
    state = checkpoints.keras_state_dict(model)
    keras.utils.set_random_seed(1)
    other = drn_tf.build_drn_bundle("drn-s", 4, n_blocks=1, n_feats=4)
    _assign(other, state, Path("state"))  # the converter's own checks and mapping
    for a, b in zip(model.primal.get_weights(), other.primal.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_cpu_info_reads_the_flags(tmp_path, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Test CPU 9000\nflags\t\t: fpu avx2 amx_bf16 avx512f\n")
    info = bench_paths.cpu_info(cpuinfo)
    assert info["model"] == "Test CPU 9000"
    assert info["flags"]["amx_bf16"] and info["flags"]["avx2"] and not info["flags"]["amx_int8"]
    assert not any(bench_paths.cpu_info(tmp_path / "absent")["flags"].values())


def test_torch_module_reproduces_the_authors_outputs():
    torch = pytest.importorskip("torch")
    from benchmarks import torch_drn

    model = torch_drn.load(REFERENCE / "drn_s_x4.pt")
    assert sum(p.numel() for p in model.parameters()) == 4_804_065  # docs/drn-reference.md §2.2
    io = np.load(REFERENCE / "drn_s_x4_io.npz")  # the authors' code on the same file
    with torch.inference_mode():
        levels = model(torch.from_numpy(io["lr"]).permute(0, 3, 1, 2).contiguous())
    for k, level in enumerate(levels):
        np.testing.assert_allclose(level.permute(0, 2, 3, 1).numpy(), io[f"sr_{k}"], atol=1e-3)
    channels_last = torch_drn.runner(model, "channels_last")(io["lr"])
    np.testing.assert_allclose(channels_last, io["sr_2"], atol=1e-2)
    bf16 = verification.agreement(torch_drn.runner(model, "bf16")(io["lr"]), io["sr_2"])
    assert 30 < bf16["psnr_db"] < 100  # bf16 arithmetic: close, not equal
    with pytest.raises(ValueError, match="PyTorch setting"):
        torch_drn.runner(model, "fp16")


def test_torch_training_step_is_the_authors_step():
    pytest.importorskip("torch")
    from benchmarks import torch_drn

    io = np.load(REFERENCE / "drn_s_x4_io.npz")  # one step of the authors' trainer.py
    model = torch_drn.load(REFERENCE / "drn_s_x4.pt")
    duals = torch_drn.load_duals(REFERENCE / "drn_s_x4_dual.pt")
    before = torch_drn.runner(model)(io["lr"])
    losses = torch_drn.trainer(model, duals)(io["lr"], (io["step_lr_1"], io["step_hr"]))
    for key, expected in (("loss", "step_loss"), ("primal_loss", "step_primary"),
                          ("dual_loss", "step_dual")):  # fmt: skip
        assert losses[key] == pytest.approx(float(io[expected]), rel=1e-4), key
    after = torch_drn.runner(model.eval())(io["lr"])
    assert np.abs(before - io["step_sr_after"]).mean() > 0.5  # so the check below means something
    assert np.abs(after - io["step_sr_after"]).mean() < 0.01
    fresh = torch_drn.load_duals(REFERENCE / "drn_s_x4_dual.pt")
    bf16 = torch_drn.trainer(torch_drn.load(REFERENCE / "drn_s_x4.pt"), fresh, "bf16")
    assert bf16(io["lr"], (io["step_lr_1"], io["step_hr"]))["loss"] == pytest.approx(
        float(io["step_loss"]), rel=0.02
    )


def test_torch_module_on_keras_weights_matches_keras(tiny, tmp_path):
    pytest.importorskip("torch")
    from benchmarks import torch_drn

    model, _ = tiny
    path = tmp_path / "state.npz"
    np.savez(path, **checkpoints.keras_state_dict(model))
    images = np.random.default_rng(0).uniform(0, 255, (1, 12, 16, 3)).astype(np.float32)
    expected = verification.keras_runner(model)(images)
    np.testing.assert_allclose(torch_drn.runner(torch_drn.load(path))(images), expected, atol=2e-3)


@pytest.mark.slow
def test_torch_compiled_settings_compute_what_eager_does():
    """torch.compile (PyTorch's fastest setting, timed by the benchmarks) changes speed only:
    the same outputs and the same training step as eager, on a small DRN."""
    torch = pytest.importorskip("torch")
    if not shutil.which(bench_paths.inductor_compiler()):
        pytest.skip("torch.compile needs a C++ compiler")
    from benchmarks import torch_drn

    def fresh():
        torch.manual_seed(0)
        model = torch_drn.DRN(4, 1, 4)
        return model, [torch_drn.DownBlock(3, 4, 3) for _ in range(model.phases)]

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (1, 12, 16, 3)).astype(np.float32)
    eager = torch_drn.runner(fresh()[0], "channels_last")(images)
    compiled = torch_drn.runner(fresh()[0], "channels_last_compiled")(images)
    assert verification.agreement(compiled, eager)["psnr_db"] >= 80
    targets = tuple(rng.uniform(0, 255, (1, 12 * f, 16 * f, 3)).astype(np.float32) for f in (2, 4))
    steps = [torch_drn.trainer(*fresh(), setting) for setting in ("bf16", "bf16_compiled")]
    for _ in range(2):  # the second step runs on weights the compiled step updated
        eager_loss, compiled_loss = (step(images, targets)["loss"] for step in steps)
        assert compiled_loss == pytest.approx(eager_loss, rel=0.02)


def test_torch_compile_without_a_compiler_is_skipped_naming_it(
    default_source, tmp_path, monkeypatch
):
    pytest.importorskip("torch")
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(bench_paths.Skipped, match="needs a C.. compiler .no-such-compiler."):
        bench_paths.prepare("torch_bf16_compiled", default_source, tmp_path, None)


@pytest.mark.slow
def test_latency_quick_run(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--quick", "--paths", "tf_function", "tflite_fp32", "tensorrt", "--runs", "2"]
    assert latency.main([*argv, "--output", str(out)]) == 0
    report = json.loads((out / "latency.json").read_text())
    assert report["cpu"] == bench_paths.cpu_info()
    (model,) = report["models"]
    assert model["macs"] == expected_macs(1, 4, 32, 32)
    rows = {r["path"]: r for r in model["paths"]}
    assert "skipped" in rows["tensorrt"] or "median_ms" in rows["tensorrt"]
    for name in ("tf_function", "tflite_fp32"):
        row = rows[name]
        assert 0 < row["median_ms"] <= row["p90_ms"] and row["peak_rss_mb"] > 50
        assert row["gflops"] == pytest.approx(2 * model["macs"] / row["median_ms"] / 1e6)
        assert row["mp_per_s"] == pytest.approx(128 * 128 / 1e6 / (row["median_ms"] / 1000))
    assert rows["tf_function"]["psnr_db"] == float("inf")  # it is the reference's arithmetic
    assert rows["tflite_fp32"]["psnr_db"] > 60 and rows["tflite_fp32"]["meets_floor"]
    assert model["gemm"]["gemm_fp32"]["median_ms"] > 0
    assert model["gemm"]["gemm_fp32"]["compute"] == "fp32"
    text = (out / "latency.md").read_text()
    assert text.startswith(f"## Latency: {report['cpu']['model']}") and "amx_bf16" in text
    assert f"### {model['label']}: 1 blocks, 4 features" in text  # the model, not a path
    assert model["label"] not in {row["label"] for row in model["paths"]}
    assert model["torch_macs"] is None and "pyramid" not in text  # no PyTorch path ran
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert text in capsys.readouterr().out


def test_bf16_paths_are_labelled_by_what_runs():
    """Without bf16 instructions OpenVINO computes a bf16-hinted model in float32, TensorFlow
    and PyTorch emulate bf16: neither is labelled plain bf16."""
    native = dict.fromkeys(bench_paths.CPU_FLAGS, False) | {"avx2": True, "avx512_bf16": True}
    avx2 = native | {"avx512_bf16": False}

    def ran_as(path, flags):
        info = bench_paths.PATHS[path]
        return bench_paths.ran_as(info.runtime, info.label, info.compute, flags)

    assert ran_as("openvino_bf16", native) == ("OpenVINO bf16", "bf16")
    hinted = ran_as("openvino_bf16", avx2)
    assert hinted == ("OpenVINO bf16 hint (no native bf16: ran fp32)", "fp32")
    assert ran_as("mixed_bfloat16", avx2)[1] == "bf16 emulated"
    assert ran_as("torch_bf16", avx2 | {"amx_bf16": True})[1] == "bf16"
    assert ran_as("tflite_int8", avx2) == ("TFLite full int8", "int8")


def test_latency_bad_flags_are_one_line(capsys):
    assert latency.main(["--size", "30"]) == 2
    assert "--size must be a multiple of 4" in capsys.readouterr().err
    assert latency.main(["--paths", "warp_drive", "--quick"]) == 1
    assert "--paths: unknown warp_drive" in capsys.readouterr().err


def test_targets_are_ratios_of_the_measured_times():
    def row(path, compute, ms, floor=True):
        return {"path": path, "compute": compute, "median_ms": ms, "meets_floor": floor,
                "gflops": 1000 / ms}  # fmt: skip

    record = {
        "paths": [
            row("torch_fp32", "fp32", 400),
            row("torch_bf16", "bf16", 100),
            row("tf_function", "fp32", 200),
            row("mixed_bfloat16", "bf16", 50),
            row("tflite_int8", "int8", 10, floor=False),
        ],  # fmt: skip
        "gemm": {
            "gemm_fp32": {"compute": "fp32", "n": 1000, "min_ms": 10.0},
            "gemm_bf16": {"compute": "bf16", "n": 1000, "min_ms": 1.0},
            "gemm_int8": {"compute": "int8", "n": 1000, "min_ms": 2.0},
            "gemm_int8_openvino": {"compute": "int8", "n": 1000, "min_ms": 0.5},
        },
    }
    # A precision's peak is its fastest GEMM: int8 is OpenVINO's 2·1000³ / 0.5 ms.
    assert peaks.peaks_of(record)["int8"] == pytest.approx(4000)
    targets = {t["target"]: t for t in latency_report.evaluate_targets(record, {"flags": {}})}
    fastest = targets["fastest path (mixed_bfloat16) / fastest PyTorch (torch_bf16)"]
    assert fastest["value"] == pytest.approx(2.0) and not fastest["met"]  # int8 is below floor
    fp32 = targets["fastest fp32 (tf_function) / fastest PyTorch fp32 (torch_fp32)"]
    assert fp32["value"] == pytest.approx(2.0) and fp32["met"]
    share = targets["fastest fp32 (tf_function) share of the fp32 GEMM peak"]
    assert share["value"] == pytest.approx(5 / 200)  # 5 GFLOP/s of a 2·1000³ / 10 ms peak
    keras_bf16 = targets["Keras mixed_bfloat16 tf.function / PyTorch bf16 autocast"]
    assert keras_bf16["value"] == pytest.approx(2.0) and keras_bf16["met"]
    assert fastest["bar"] == latency_report.TARGETS["fastest_vs_torch"]
    amx = latency_report.evaluate_targets(record, {"flags": {"amx_int8": True}})
    assert amx[0]["bar"] == latency_report.TARGETS["fastest_vs_torch_amx"]  # the AMX bar is higher


@pytest.mark.parametrize("precision, suffix", [("int8", "_I8"), ("fp32", "_f32")])
def test_openvino_gemm_names_the_kernels_of_its_precision(precision, suffix):
    pytest.importorskip("openvino")
    from benchmarks import kernels

    run, ran = kernels.openvino_gemm(precision, 64)
    run(None)
    # Every CPU this project runs on has AVX2: an int8 MatMul must run an int8 kernel there.
    assert ran and all(name.endswith(suffix) for name in ran), ran
    assert f"{suffix} ×1" in kernels.kernel_summary(ran)
    run, ran = kernels.openvino_gemm(precision, 64, chain=3)
    run(None)
    assert sum(ran.values()) == 3 and all(name.endswith(suffix) for name in ran), ran
    assert kernels.kernel_summary(None) == "not logged"


def test_onednn_kernels_names_what_pytorch_ran():
    torch = pytest.importorskip("torch")
    from benchmarks import kernels

    a = torch.randint(-128, 128, (64, 64), dtype=torch.int8)
    ran = kernels.onednn_kernels(lambda: torch._int_mm(a, a))
    assert ran and all(k.startswith(("gemm_api", "matmul:")) for k in ran), ran
    assert kernels.onednn_kernels(lambda: None) == {}


def test_a_chained_gemm_counts_each_product():
    record = {"compute": "int8", "n": 1000, "min_ms": 2.0}
    assert peaks.gemm_speed(record) == pytest.approx(1000)  # 2·1000³ ops in 2 ms
    chained = {**record, "chain": 16}
    assert peaks.gemm_speed(chained) == pytest.approx(16_000)
    assert peaks.peaks_of({"gemm": {"a": record, "b": chained}})["int8"] == pytest.approx(16_000)
    assert "(int8, 16 × 1000³): 16,000 GOP/s" in peaks.gemm_line("b", chained)


def test_loss_curve_comparison():
    rng = np.random.default_rng(0)
    curve = list(10 * np.exp(-np.arange(200) / 50) + 1 + 0.05 * rng.standard_normal(200))
    same = train_throughput.compare_curves({"float32": curve, "mixed_bfloat16": curve})
    assert same["mean_relative_gap"] == 0 and same["within_noise"]
    off = train_throughput.compare_curves(
        {"float32": curve, "mixed_bfloat16": [1.1 * x for x in curve]}
    )
    assert off["mean_relative_gap"] == pytest.approx(0.1) and not off["within_noise"]


@pytest.mark.slow
def test_train_throughput_runs_tiny(tmp_path):
    argv = ["--steps", "1", "--warmup", "1", "--batch-size", "1", "--patch-size", "16",
            "--no-xla-variants", "--no-pipeline", "--no-torch-compile",
            "--output", str(tmp_path)]  # fmt: skip
    assert train_throughput.main(argv) == 0
    report = json.loads((tmp_path / "train_throughput.json").read_text())
    (size,) = report["sizes"]
    rows = {v["policy"]: v for v in size["variants"]}
    torch_rows = {"torch_fp32", "torch_channels_last", "torch_bf16"}
    has_torch = importlib.util.find_spec("torch") is not None
    assert set(rows) == {"float32", "mixed_bfloat16"} | (torch_rows if has_torch else set())
    if has_torch:
        fastest = size["vs_torch"]["fastest"]
        keras_ms = min(rows[p]["median_ms"] for p in ("float32", "mixed_bfloat16"))
        torch_ms = min(rows[p]["median_ms"] for p in torch_rows)
        assert fastest["speedup"] == pytest.approx(torch_ms / keras_ms)
    for row in rows.values():
        assert row["samples_per_s"] == pytest.approx(1000 / row["median_ms"])
    assert size["bf16_speedup"] == pytest.approx(
        rows["float32"]["median_ms"] / rows["mixed_bfloat16"]["median_ms"]
    )


def test_profile_layers_of_forward_backward_and_optimizer_ops():
    layer_of = profile_ops.layer_of
    assert layer_of("model_1/up_1_rcab_7_1/attention_1/Mean") == "up_1_rcab/attention"
    assert layer_of("model_1/head_1/convolution") == "head"
    backward = "gradient_tape/drn-s_x4_primal_1/up_0_rcab_3_1/conv2_1/convolution/Conv2D"
    assert layer_of(backward) == "up_0_rcab/conv2 (backward)"
    assert layer_of("cond/then/_0/cond/adam/mul_132") == "optimizer"


@pytest.mark.slow
def test_profile_of_a_training_step_adds_up(tmp_path):
    """One op at a time (--inter-op-threads 1), the ops' times cannot add up to more than the
    steps took; the profile sees the gradients and the optimizer. In its own process: TensorFlow
    takes the inter-op setting only before it starts."""
    argv = ["--step", "train", "--model", "tiny", "--precision", "mixed_bfloat16", "--size", "8",
            "--runs", "2", "--inter-op-threads", "1", "--output", str(tmp_path)]  # fmt: skip
    command = [sys.executable, "-m", "benchmarks.profile_ops", *argv]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "profile_ops_tiny_mixed_bfloat16_train.json").read_text())
    assert 0 < report["op_total_ms"] <= report["run_ms"]
    ops = {row["op"] for row in report["by_type"]}
    assert any("Conv2DBackpropFilter" in op for op in ops), ops
    assert any("Conv2DBackpropInput" in op for op in ops), ops
    layers = {row["layer"] for row in report["by_layer"]}
    assert "optimizer" in layers and "up_0_rcab/conv2 (backward)" in layers, layers


@pytest.mark.slow
def test_quality_scores_artifacts_against_keras(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    out = tmp_path / "out"
    argv = ["--model", "tiny", "--data", str(tmp_path), "--paths", "tflite_fp32"]
    assert quality.main([*argv, "--output", str(out)]) == 0
    report = json.loads((out / "quality.json").read_text())
    rows = {r["path"]: r for r in report["paths"]}
    assert set(rows) == {"tf_function", "tflite_fp32"}
    keras_row, tflite_row = rows["tf_function"][tmp_path.name], rows["tflite_fp32"][tmp_path.name]
    assert tflite_row["agreement_db"] > 60
    assert tflite_row["psnr"] == pytest.approx(keras_row["psnr"], abs=0.01)
    assert (out / "quality.png").exists() and "tflite_fp32" in (out / "quality.md").read_text()


def test_spatial_mean_formulations():
    """float32 keeps ops.mean (the graph exporters see); bfloat16 takes the GEMM formulation
    (benchmarks/profile_ops.py showed the mean as ~1/5 of mixed_bfloat16 time), within
    bfloat16 rounding of the exact mean."""
    import tensorflow as tf

    from drn_tf.layers import spatial_mean

    x = np.random.default_rng(0).uniform(-50, 200, (2, 9, 7, 16)).astype(np.float32)
    exact = x.astype(np.float64).mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(spatial_mean(tf.constant(x)).numpy(), exact, rtol=1e-6)
    low = spatial_mean(tf.constant(x, tf.bfloat16))
    assert low.dtype == tf.bfloat16 and low.shape == (2, 1, 1, 16)
    bf16_input = tf.cast(tf.constant(x, tf.bfloat16), tf.float64).numpy()
    want = bf16_input.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(tf.cast(low, tf.float64).numpy(), want, rtol=2**-7)

    def op_types(dtype):
        spec = tf.TensorSpec((1, None, None, 16), dtype)
        graph = tf.function(spatial_mean).get_concrete_function(spec).graph
        return {op.type for op in graph.get_operations()}

    assert "Mean" in op_types(tf.float32) and "BatchMatMulV2" not in op_types(tf.float32)
    assert "BatchMatMulV2" in op_types(tf.bfloat16) and "Mean" not in op_types(tf.bfloat16)


def test_bfloat16_channel_attention_follows_float32():
    from drn_tf.layers import ChannelAttention

    x = np.random.default_rng(1).uniform(0, 100, (1, 12, 10, 32)).astype(np.float32)
    full = ChannelAttention(32)
    reference = full(x).numpy()
    low = ChannelAttention(32, dtype="mixed_bfloat16")
    low.build(x.shape)
    low.set_weights(full.get_weights())
    got = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(low(x), "float32")))
    np.testing.assert_allclose(got, reference, rtol=2**-6, atol=0.05)


@pytest.mark.slow
def test_a_failing_worker_is_a_one_line_error(tmp_path, capsys):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "small.png")
    argv = ["--no-throughput", "--loss-steps", "1", "--train-dir", str(tmp_path)]
    assert train_throughput.main([*argv, "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m benchmarks.train_throughput: error: ") and "\n" not in err
    assert "small.png" in err or "no image" in err.lower() or "too small" in err


# --- model_table ----------------------------------------------------------------------------


def test_model_table_usage_examples_parse():
    from benchmarks import model_table

    examples = re.findall(r"python -m benchmarks\.model_table( [^\n]*)", model_table.__doc__)
    assert examples, "the docstring shows how to run it"
    for example in examples:
        parse_config(model_table.ModelTableConfig, shlex.split(example), model_table.PROG)


def test_model_table_bad_frame_is_a_usage_error(capsys):
    from benchmarks import model_table

    assert model_table.main(["--frame", "1920by1080"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"{model_table.PROG}: --frame: '1920by1080' is not WIDTHxHEIGHT"


@pytest.mark.slow
def test_model_table_tiny_run(tiny, tmp_path):
    from benchmarks import model_table
    from drn_tf.evaluation import evaluate

    model, path = tiny
    data = tmp_path / "Set5"  # named as the set, so the published Set5 cells line up with it
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(data / f"{i}.png")
    out = tmp_path / "out"
    argv = ["--models", str(path), "--data", str(data), "--frame", "64x48", "--frames", "3"]
    argv += ["--runtimes", "keras", "--output", str(out)]
    assert model_table.main(argv) == 0
    report = json.loads((out / "model_table.json").read_text())
    assert report["command"] == " ".join([model_table.PROG, *argv])  # the flags given
    rows = {(r["model"], r["scale"]): r for r in report["rows"]}
    ours, bicubic = rows[(path.name, 4)], rows[("bicubic", 4)]
    assert ours["macs_per_frame"] == expected_macs(1, 4, 48 // 4, 64 // 4)
    assert ours["primal_parameters"] == sum(int(np.prod(w.shape)) for w in model.primal.weights)
    assert ours["dual_parameters"] == sum(
        int(np.prod(w.shape)) for d in model.duals for w in d.weights
    )
    for name, row in (("bicubic", bicubic), (model, ours)):
        expected = evaluate(name, [data], 4, progress=False)["Set5"]
        assert row["sets"]["Set5"] == {"psnr": expected["psnr"], "ssim": expected["ssim"]}
    keras_timing = ours["timings"]["keras"]
    assert len(keras_timing["seconds"]) == 3 and keras_timing["ran"] == "keras float32"
    assert keras_timing["frames_per_s"] == pytest.approx(1 / np.median(keras_timing["seconds"]))
    assert set(ours["timings"]) == {"keras"}
    # Sorted by scale, then by Set5 PSNR; only the published rows of the models' scales.
    psnrs = [r["sets"]["Set5"]["psnr"] for r in report["rows"]]
    assert psnrs == sorted(psnrs) and {r["scale"] for r in report["rows"]} == {4}
    text = (out / "model_table.md").read_text()
    assert text.startswith("## Models: quality, size and speed on ")
    table = {}  # model name, its source number dropped -> its cells
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| model "):
            cells = line.strip("| ").split(" | ")
            table[re.sub(r" \[\d+\]$", "", cells[0])] = cells[1:]
    x4 = [p for p in model_table.PUBLISHED if p.scale == 4]
    assert set(table) == {path.name, "bicubic", *(p.model for p in x4)}
    for published in x4:
        cells = " / ".join(published.sets["Set5"])
        assert table[published.model][:3] == ["×4", published.training, cells]


def test_training_data_is_read_from_the_model_note():
    from benchmarks.model_table import training_data

    note = "drn-tf train on T91 + BSD200 (BSD200 every 20th held out for validation), n_blocks 3"
    assert training_data({"training": note}) == "T91 + BSD200"
    assert training_data({"training": "drn-tf train on T91, 5,000 steps"}) == "T91"
    assert training_data({}) == "–"
