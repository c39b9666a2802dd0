"""OpenVINO export (export/openvino.py): each precision of the packaged model, agreement at two
sizes, the IR's operations, weight types and stored precision hint, Set5 task PSNR, CLI."""

import json
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import openvino as ov
import pytest
from helpers import ROOT, SET5, SUBPROCESS_ENV, photo_batch

from drn_tf import cpu, serving
from drn_tf.flags import FlagError
from export import base, openvino, photo_sets, reporting, verification
from export import onnx as onnx_export

PRECISIONS = list(openvino.HINTS)
NATIVE_BF16 = cpu.native_bf16()
AVX2 = "avx2" in reporting.host_cpu()["features"]


@pytest.fixture(scope="module")
def exports(default_source, tmp_path_factory):
    """The packaged model exported at a precision, once per precision: ``exports(p)`` →
    ``(report, folder)``."""
    root = tmp_path_factory.mktemp("openvino")
    done = {}

    def get(precision: str):
        if precision not in done:
            folder = root / precision
            report = openvino.export_openvino(
                default_source, folder, precision=precision, timing_runs=0
            )
            done[precision] = report, folder
        return done[precision]

    return get


def read_ir(folder: Path):
    return openvino.core().read_model(folder / "model.xml")


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_precision_verifies_above_its_floor(exports, default_source, precision):
    report, folder = exports(precision)
    floor = base.FLOORS_DB[precision]
    assert report.precision == precision
    assert [r["floor_db"] for r in report.verification] == [floor] * len(photo_sets.probe_images(4))
    assert all(r["psnr_db"] >= floor for r in report.verification)
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "model.bin", "model.xml"]
    metadata = reporting.read_metadata(folder)  # strict: no Infinity/NaN
    assert metadata["format"] == "openvino" and metadata["precision"] == precision
    assert metadata["verification"] == json.loads(reporting.strict_json(report.verification))
    assert openvino.embedded_metadata(folder) == metadata  # rt_info holds the same fields
    verified_on = dict(metadata["verified_on"])
    assert verified_on.pop("cpu") == reporting.host_cpu()
    # int8 is verified a second time on the int8 kernels of CPUs without VNNI.
    no_vnni = verified_on.pop("onednn_max_cpu_isa", None)
    assert not verified_on
    assert (no_vnni is not None) == (precision == "int8" and AVX2)
    if no_vnni:
        assert no_vnni["isa"] == "AVX2"
        records = no_vnni["verification"]
        assert [r["input"] for r in records] == [r["input"] for r in report.verification]
        assert all(r["floor_db"] == floor <= r["psnr_db"] for r in records)
    assert metadata["model"]["source_sha256"] == base.sha256_of(default_source.path)
    assert metadata["io"]["inference_precision_hint"] == openvino.HINTS[precision]
    assert ("NO native bf16" in metadata["notes"][0]) == (not NATIVE_BF16)


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("size", [(33, 47), (24, 40)], ids=["odd", "even"])
def test_runs_at_two_sizes_batch_2(exports, default_source, precision, size):
    _, folder = exports(precision)
    images = photo_batch(*size)
    output = openvino.openvino_runner(folder)(images)
    expected = verification.keras_runner(default_source.model)(images)
    assert output.shape == (2, 4 * size[0], 4 * size[1], 3) == expected.shape
    assert output.dtype == np.float32
    assert verification.agreement(output, expected)["psnr_db"] >= base.FLOORS_DB[precision]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_int8_compiles_again_for_a_shape_given_twice(exports, precision):
    """int8 fuses its element-wise passes only at a static shape (openvino_runner)."""
    run = openvino.openvino_runner(exports(precision)[1])
    images = photo_batch(24, 40)
    first = run(images)
    assert run.compiled.input(0).get_partial_shape().is_dynamic
    second = run(images)
    assert run.compiled.input(0).get_partial_shape().is_static == (precision == "int8")
    assert verification.agreement(second, first)["psnr_db"] >= 50


@pytest.mark.slow
def test_ir_io_is_dynamic_and_named(exports):
    ir = read_ir(exports("fp32")[1])
    (images,), (sr,) = ir.inputs, ir.outputs
    assert images.get_names() == {"images"} and sr.get_names() == {"sr"}
    assert images.get_element_type() == ov.Type.f32 == sr.get_element_type()
    layouts = {port.get_node().get_layout().to_string() for port in (images, sr)}
    assert layouts == {ov.Layout("NHWC").to_string()} == {"[N,H,W,C]"}
    shape = images.get_partial_shape()
    assert [shape[i].is_dynamic for i in range(4)] == [True, True, True, False]
    assert shape[3].get_length() == 3


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_only_standard_opset_operations(exports, precision):
    ops = openvino.op_types(exports(precision)[1])
    assert all(re.fullmatch(r"opset\d+", version) for _, version in ops), ops
    names = {name for name, _ in ops}
    assert "FrameworkNode" not in names
    # The bicubic layer is a convolution and PixelShuffle is DepthToSpace: no Interpolate.
    assert {"Convolution", "DepthToSpace"} <= names and not any("Interpolate" in n for n in names)
    assert ("FakeQuantize" in names) == (precision == "int8")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_float_weights_are_stored_as_float32(exports, precision):
    ir = read_ir(exports(precision)[1])
    constants = [op for op in ir.get_ops() if op.get_type_name() == "Constant"]
    float_types = {op.get_element_type() for op in constants if op.get_element_type().is_real()}
    assert float_types == {ov.Type.f32}
    assert {op.get_type_name() for op in ir.get_ops()}.isdisjoint({"Convert", "FakeQuantize"})


@pytest.mark.slow
def test_int8_quantizes_all_but_the_pixel_domain_convolutions(exports):
    """Every convolution but the first 3 (bicubic upsample, sub_mean, head), the last 2 (tail,
    add_mean) and those of the channel attention on pooled 1×1 maps (which NNCF leaves in
    float) has int8 weights and reads quantized activations."""
    ir = read_ir(exports("int8")[1])
    convs = [op for op in ir.get_ordered_ops() if op.get_type_name() == "Convolution"]

    def source(node, port):
        return node.input(port).get_source_output().get_node()

    def quantized(node) -> bool:  # a FakeQuantize, seen through layout-only operations
        kind = node.get_type_name()
        if kind in ("DepthToSpace", "Transpose"):
            return quantized(source(node, 0))
        if kind == "Concat":
            return all(quantized(source(node, i)) for i in range(node.get_input_size()))
        return kind == "FakeQuantize"

    def stored_weight_type(conv):
        node = source(conv, 1)
        while node.get_type_name() != "Constant":  # int8 weights: Constant → Convert → scale
            node = source(node, 0)
        return node.get_element_type()

    def pooled(conv) -> bool:
        shape = conv.get_output_partial_shape(0)
        return shape[2].is_static and shape[3].is_static and shape[2].get_length() == 1

    expected = [not (i < 3 or i >= len(convs) - 2 or pooled(c)) for i, c in enumerate(convs)]
    assert sum(expected) >= 20
    assert [quantized(source(c, 0)) for c in convs] == expected
    assert [stored_weight_type(c) == ov.Type.i8 for c in convs] == expected
    # The overflow fix: int8 weights on 7 bits (-64..63), so that u8 × s8 pair sums fit in
    # int16 on CPUs without VNNI; the full -128..127 would saturate there.
    weights = [op for op in ir.get_ops() if op.get_element_type() == ov.Type.i8]
    assert weights and max(np.abs(op.get_data().astype(int)).max() for op in weights) <= 64
    # The first is the ×4 bicubic (3 → 3·4² phases), the last add_mean writes the 3 channels.
    assert convs[0].get_output_partial_shape(0)[1].get_length() == 48
    assert convs[-1].get_output_partial_shape(0)[1].get_length() == 3
    sizes = {p: (exports(p)[1] / "model.bin").stat().st_size for p in ("fp32", "int8")}
    assert sizes["int8"] < 0.5 * sizes["fp32"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_hint_round_trips_and_is_compiled(exports, precision):
    folder = exports(precision)[1]
    hint = openvino.HINTS[precision]
    assert read_ir(folder).get_rt_info(openvino.HINT_KEY).astype(str) == hint
    compiled = openvino.compile_artifact(folder)
    compiled_as = compiled.get_property("INFERENCE_PRECISION_HINT")
    as_bf16 = hint == "bf16" or (precision == "int8" and openvino.INT8_BF16_FLAG in cpu.cpu_flags())
    # Without native bf16, OpenVINO computes a bf16 hint in f32.
    assert compiled_as == (ov.Type.bf16 if as_bf16 and NATIVE_BF16 else ov.Type.f32)


@pytest.mark.slow
@pytest.mark.parametrize("amx", [True, False], ids=["amx", "no-amx"])
def test_int8_float_parts_compile_in_bf16_only_with_amx(exports, monkeypatch, amx):
    flags = cpu.cpu_flags() - {openvino.INT8_BF16_FLAG} | (
        {openvino.INT8_BF16_FLAG} if amx else set()
    )
    monkeypatch.setattr(cpu, "cpu_flags", lambda *_: frozenset(flags))
    compiled = openvino.compile_artifact(exports("int8")[1])
    # A CPU without bf16 instructions computes a bf16 hint in f32 (OpenVINO's own fallback).
    expected = ov.Type.bf16 if amx and NATIVE_BF16 else ov.Type.f32
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == expected
    assert (
        openvino.compile_artifact(exports("int8")[1], "f32").get_property(
            "INFERENCE_PRECISION_HINT"
        )
        == ov.Type.f32
    )  # an explicit hint wins


@pytest.fixture(scope="module")
def keras_set5_psnr(default_source) -> float:
    return verification.task_psnr(verification.keras_runner(default_source.model), 4, SET5)


@pytest.mark.slow
@pytest.mark.parametrize(("precision", "max_drop"), [("bf16", 0.05), ("int8", 0.15)])
def test_set5_x4_task_psnr_drop(exports, keras_set5_psnr, precision, max_drop):
    psnr = verification.task_psnr(openvino.openvino_runner(exports(precision)[1]), 4, SET5)
    assert keras_set5_psnr - psnr <= max_drop, (keras_set5_psnr, psnr)


#: Runs an IR with oneDNN held to AVX2 (as on CPUs without VNNI, where int8 u8 × s8 pairs sum
#: in saturating int16): prints the convolution kernels, Set5 ×4 PSNR and the outputs on the
#: probe images (saved to argv[3]).
AVX2_SCRIPT = """
import json, sys
import numpy as np
from export import openvino, photo_sets, verification
run = openvino.openvino_runner(sys.argv[1])
kernels = {
    op.get_rt_info()["primitiveType"].astype(str)
    for op in run.compiled.get_runtime_model().get_ops()
    if op.get_rt_info()["layerType"].astype(str) == "Convolution"
}
np.savez(sys.argv[3], **{name: run(images) for name, images in photo_sets.probe_images(4)})
print(json.dumps({"kernels": sorted(kernels), "set5": verification.task_psnr(run, 4, sys.argv[2])}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not AVX2, reason="not an AVX2 CPU")
def test_int8_holds_its_floors_on_avx2_kernels(exports, default_source, keras_set5_psnr, tmp_path):
    """The int8 IR made here, run with ``ONEDNN_MAX_CPU_ISA=AVX2`` (OpenVINO's int8 kernels
    of CPUs without VNNI), keeps the int8 floor on every probe image (sample photo and
    held-out crops) and loses <= 0.15 dB on Set5 ×4; without the overflow fix it lost 0.37."""
    folder = exports("int8")[1]
    outputs = tmp_path / "outputs.npz"
    result = subprocess.run(
        [sys.executable, "-c", AVX2_SCRIPT, str(folder), str(SET5), str(outputs)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**SUBPROCESS_ENV, "ONEDNN_MAX_CPU_ISA": "AVX2"},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    int8_kernels = [k for k in measured["kernels"] if k.endswith("_I8")]
    assert int8_kernels and all("avx2" in k for k in measured["kernels"]), measured["kernels"]
    assert keras_set5_psnr - measured["set5"] <= 0.15, (keras_set5_psnr, measured["set5"])
    keras = verification.keras_runner(default_source.model)
    with np.load(outputs) as produced:
        for name, images in photo_sets.probe_images(4):
            psnr = verification.agreement(produced[name], keras(images))["psnr_db"]
            assert psnr >= base.FLOORS_DB["int8"], (name, psnr)


@pytest.mark.slow
def test_cli(tiny, tmp_path, capsys):
    output = tmp_path / "out" / "drn_ir"
    argv = ["--model", str(tiny[1]), "--output", str(output), "--precision", "bf16"]
    assert openvino.main([*argv, "--timing-runs", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {output} (openvino, bf16)" in printed and "latency on 128x128" in printed
    metadata = reporting.read_metadata(output)
    assert (
        metadata["model"]["n_feats"] == 4 and metadata["io"]["inference_precision_hint"] == "bf16"
    )
    assert metadata["timing"]["artifact_ms"] > 0 and metadata["timing"]["keras_ms"] > 0
    assert sorted(p.name for p in output.iterdir()) == ["export.json", "model.bin", "model.xml"]
    assert [p.name for p in output.parent.iterdir()] == ["drn_ir"]  # no temporary left


def test_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    output = tmp_path / "ir"
    output.mkdir()
    (output / "model.xml").write_text("old")
    assert openvino.main(["--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert [p.name for p in output.iterdir()] == ["model.xml"]
    assert (output / "model.xml").read_text() == "old"


def test_flag_errors(tmp_path, capsys):
    output = str(tmp_path / "ir")
    assert openvino.main(["--output", output, "--precision", "fp16"]) == 2
    assert "--precision" in capsys.readouterr().err
    assert openvino.main(["--precision", "int8"]) == 2
    assert "--output is required" in capsys.readouterr().err
    assert openvino.main(["--output", output, "--calibration-data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--calibration-data" in err
    with pytest.raises(base.ExportError, match="--precision 'fp16'"):
        openvino.export_openvino("default", output, precision="fp16")
    assert not list(tmp_path.iterdir())


def test_bad_models_are_one_line_errors(tmp_path, capsys):
    not_drn = tmp_path / "plain.keras"
    keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 3)]).save(not_drn)
    for model in (not_drn, tmp_path / "missing.keras"):
        assert openvino.main(["--model", str(model), "--output", str(tmp_path / "ir")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(model) in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "ir").exists()


@pytest.mark.parametrize(("module", "precision"), [("openvino", "fp32"), ("nncf", "int8")])
def test_missing_package_names_the_extra(tiny, tmp_path, capsys, monkeypatch, module, precision):
    monkeypatch.setitem(sys.modules, module, None)  # import fails
    argv = ["--model", str(tiny[1]), "--output", str(tmp_path / "ir"), "--precision", precision]
    assert openvino.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and module in err and "pip install" in err
    assert not (tmp_path / "ir").exists()


@pytest.mark.slow
def test_int8_below_its_floor_without_vnni_is_an_error(default_source, monkeypatch):
    """The second verification fails the export, naming the oneDNN ISA, when the IR run as
    on CPUs without VNNI falls below the int8 floor (outputs faked 30 dB off)."""
    noise = np.random.default_rng(0)
    keras = verification.keras_runner(default_source.model)

    def off_by_8(folder, isa, inputs):  # σ = 8: about 30 dB
        return [keras(images) + noise.normal(0, 8, keras(images).shape) for images in inputs]

    monkeypatch.setattr(openvino, "run_with_isa", off_by_8)
    with pytest.raises(base.ExportError, match=r"^with oneDNN held to AVX2: verification failed"):
        openvino.verify_without_vnni("unused", default_source)


@pytest.fixture(scope="module")
def tiny_irs(tiny, tmp_path_factory):
    """The tiny model exported (fp32) with a tensor format, once per format:
    ``tiny_irs(io, layout)`` → ``(report, folder)``."""
    root = tmp_path_factory.mktemp("openvino_formats")
    source = base.load_source(tiny[1])
    done = {}

    def get(io: str, layout: str):
        if (io, layout) not in done:
            folder = root / f"{io}_{layout}"
            report = openvino.export_openvino(source, folder, io=io, layout=layout, timing_runs=0)
            done[io, layout] = report, folder
        return done[io, layout]

    return get


def compiled_ir(folder: Path):
    hint = {"INFERENCE_PRECISION_HINT": "f32"}
    return openvino.core().compile_model(read_ir(folder), openvino.DEVICE, hint)


def test_uint8_io_takes_and_returns_keras_pixels(tiny, tiny_irs):
    """``--io uint8``: OpenVINO takes uint8 pixels and returns the pixels of Keras's serving
    function (clipped, rounded half to even), within the fp32 floor; the exporter verified the
    same against Keras's pixels on every probe image."""
    report, folder = tiny_irs("uint8", "nhwc")
    assert [r["floor_db"] for r in report.verification] == [60.0] * len(photo_sets.probe_images(4))
    assert all(r["psnr_db"] >= 60 for r in report.verification)
    images = photo_batch(33, 47)
    pixels = images.astype(np.uint8)
    np.testing.assert_array_equal(pixels, images)  # the photo is whole pixel values
    output = compiled_ir(folder)({"images": pixels})["sr"]
    expected = serving.to_pixels(verification.keras_runner(tiny[0])(images)).numpy()
    assert output.dtype == np.uint8 and output.shape == expected.shape == (2, 132, 188, 3)
    assert verification.agreement(output, expected)["psnr_db"] >= base.FLOORS_DB["fp32"]
    assert np.mean(output != expected) < 1e-3  # at most a rare half-way pixel rounds apart


@pytest.mark.parametrize("io", [pytest.param("float32", marks=pytest.mark.slow), "uint8"])
def test_nchw_output_is_the_nhwc_output_transposed(tiny_irs, io):
    images = photo_batch(21, 30).astype(io)
    outputs = {}
    for layout in onnx_export.LAYOUTS:
        report, folder = tiny_irs(io, layout)
        assert all(r["psnr_db"] >= 60 for r in report.verification)
        given = images.transpose(0, 3, 1, 2) if layout == "nchw" else images
        outputs[layout] = compiled_ir(folder)({"images": np.ascontiguousarray(given)})["sr"]
    assert outputs["nchw"].shape == (2, 3, 84, 120) and outputs["nchw"].dtype == io
    for layout, shape in (("nhwc", ["N", "H", "W", 3]), ("nchw", ["N", 3, "H", "W"])):
        tensor = reporting.read_metadata(tiny_irs(io, layout)[1])["io"]["input"]
        assert [tensor[k] for k in ("dtype", "layout", "shape")] == [io, layout.upper(), shape]
    transposed = outputs["nchw"].transpose(0, 2, 3, 1)
    assert verification.agreement(transposed, outputs["nhwc"])["psnr_db"] >= 60


def test_metadata_records_io_and_layout(tiny_irs):
    _, folder = tiny_irs("uint8", "nchw")
    metadata = reporting.read_metadata(folder)
    assert openvino.embedded_metadata(folder) == metadata
    given, taken = metadata["io"]["input"], metadata["io"]["output"]
    assert (given["name"], taken["name"]) == ("images", "sr")
    assert given["dtype"] == taken["dtype"] == "uint8"
    assert given["layout"] == taken["layout"] == "NCHW"
    assert (given["shape"], taken["shape"]) == (["N", 3, "H", "W"], ["N", 3, "4H", "4W"])
    assert metadata["io"]["layout_stored"].startswith("NCHW")
    ir = read_ir(folder)
    (images,), (sr,) = ir.inputs, ir.outputs
    assert images.get_names() == {"images"} and sr.get_names() == {"sr"}
    assert images.get_element_type() == ov.Type.u8 == sr.get_element_type()
    for port in (images, sr):
        assert port.get_node().get_layout().to_string() == "[N,C,H,W]"
        shape = port.get_partial_shape()
        assert [shape[i].is_dynamic for i in range(4)] == [True, False, True, True]
        assert shape[1].get_length() == 3


@pytest.mark.parametrize("flag", ["--io", "--layout"])
def test_bad_io_or_layout_exits_2(tmp_path, capsys, flag):
    assert openvino.main(["--output", str(tmp_path / "ir"), flag, "int16"]) == 2
    message = capsys.readouterr().err.splitlines()[0]
    assert flag in message and "int16" in message and "Traceback" not in message
    with pytest.raises(FlagError, match=f"^{flag} 'int16': use one of"):
        openvino.export_openvino("default", tmp_path / "ir", **{flag[2:]: "int16"})
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_int8_with_uint8_nchw_io_holds_its_floors(default_source, keras_set5_psnr, tmp_path):
    """int8 calibrated and run on uint8 NCHW pixels: the exporter's two verifications (native
    and, on AVX2 CPUs, on the kernels of CPUs without VNNI) hold the int8 floor against
    Keras's pixels, and Set5 ×4 loses <= 0.15 dB as with float I/O."""
    folder = tmp_path / "int8_uint8_nchw"
    report = openvino.export_openvino(
        default_source, folder, precision="int8", io="uint8", layout="nchw", timing_runs=0
    )
    floor = base.FLOORS_DB["int8"]
    assert all(r["psnr_db"] >= floor for r in report.verification)
    no_vnni = reporting.read_metadata(folder)["verified_on"].get("onednn_max_cpu_isa")
    assert (no_vnni is not None) == AVX2
    assert all(r["psnr_db"] >= floor for r in (no_vnni or {"verification": []})["verification"])
    (images,), (sr,) = read_ir(folder).inputs, read_ir(folder).outputs
    assert images.get_element_type() == ov.Type.u8 == sr.get_element_type()
    assert images.get_node().get_layout().to_string() == "[N,C,H,W]"
    psnr = verification.task_psnr(openvino.openvino_runner(folder), 4, SET5)
    assert keras_set5_psnr - psnr <= 0.15, (keras_set5_psnr, psnr)


SIGNAL_SCRIPT = """
import gc, os, signal
from benchmarks import kernels
first, _ = kernels.openvino_gemm("fp32", 64)
second, _ = kernels.openvino_gemm("fp32", 64)
first(None), second(None)
del first; gc.collect(); del second; gc.collect()  # the first made ends first
signal.signal(signal.SIGTERM, lambda *_: print("handled", flush=True))
os.kill(os.getpid(), signal.SIGTERM)
"""


def test_a_signal_after_two_compiled_models_is_handled():
    """Two compiled models released first-made-first, then a SIGTERM to a Python handler: with
    a Core per model, CPUs with AMX were left with an unmapped signal stack and this process
    died of SIGSEGV (:func:`export.openvino.core`)."""
    result = subprocess.run(
        [sys.executable, "-c", SIGNAL_SCRIPT],
        capture_output=True, text=True, timeout=120, env=SUBPROCESS_ENV, cwd=ROOT,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "handled\n"), result.stderr[-2000:]
