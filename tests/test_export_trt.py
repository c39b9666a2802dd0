"""TensorRT export (export/trt.py): route selection, messages, the route-2 ONNX (fp32, fp16,
int8 QDQ) against TensorRT's ONNX support list and the agreement floors, calibration batches.

No GPU and no tensorrt exist here or in CI: tests that need them are marked ``gpu`` and skip.
"""

import json
import os
import shutil
import stat
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from drn_tf.demo import SAMPLE_IMAGE
from export import base, trt
from export import onnx as onnx_export

SET14_HR = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark" / "Set14" / "HR"
HAS_GPU = trt.cuda_device_count() > 0
HAS_TENSORRT = trt.tensorrt_version() is not None


def fake_probes(monkeypatch, tf_trt=False, tensorrt=None, gpus=0):
    monkeypatch.setattr(trt, "tf_trt_available", lambda: tf_trt)
    monkeypatch.setattr(trt, "tensorrt_version", lambda: tensorrt)
    monkeypatch.setattr(trt, "cuda_device_count", lambda: gpus)


# --- routes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tf_trt, tensorrt, gpus, route",
    [
        (True, None, 0, trt.TF_TRT),  # TF-TRT probes GPUs through TensorFlow itself
        (True, "10.8.0", 1, trt.TF_TRT),
        (False, "10.8.0.43", 1, trt.ONNX_TENSORRT),
        (False, "11.4.0.106", 2, trt.ONNX_TENSORRT),
    ],
)
def test_route_selection(monkeypatch, tf_trt, tensorrt, gpus, route):
    fake_probes(monkeypatch, tf_trt, tensorrt, gpus)
    assert trt.choose_route() == route


@pytest.mark.parametrize(
    "tensorrt, gpus, named, not_named",
    [
        (None, 1, "the tensorrt Python package", "CUDA GPU"),
        ("10.8.0", 0, "a CUDA GPU", "tensorrt Python package"),
        ("8.6.1", 1, "tensorrt >= 10 (found 8.6.1", "CUDA GPU"),
        (None, 0, "tensorrt Python package (pip install tensorrt", "nothing"),
    ],
)
def test_no_route_names_what_is_missing(monkeypatch, tensorrt, gpus, named, not_named):
    fake_probes(monkeypatch, False, tensorrt, gpus)
    with pytest.raises(trt.NoRoute) as raised:
        trt.choose_route()
    message = str(raised.value)
    assert named in message and not_named not in message and "TF-TRT" in message
    if tensorrt is None and gpus == 0:
        assert "a CUDA GPU" in message


def test_no_route_is_exit_2_with_one_line(monkeypatch, tmp_path, capsys):
    fake_probes(monkeypatch)
    output = tmp_path / "drn.engine"
    assert trt.main(["--output", str(output)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("python -m export.trt: no TensorRT route here")
    for needed in ("TF-TRT", "tensorrt", "CUDA GPU", "--onnx-only"):
        assert needed in captured.err
    assert "Traceback" not in captured.err and not list(tmp_path.iterdir())


def test_tf_trt_probe_follows_the_build_info():
    import tensorflow as tf

    if not tf.sysconfig.get_build_info().get("is_tensorrt_build", False):
        assert trt.tf_trt_available() is False  # tensorflow-cpu 2.21 here and in CI


def test_tensorrt_probe(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    assert trt.tensorrt_version() is None
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.9.0.34"))
    assert trt.tensorrt_version() == "10.9.0.34"


class FakeCudart:
    def __init__(self, status, count):
        self.status, self.count = status, count

    def cudaGetDeviceCount(self, pointer):
        pointer._obj.value = self.count
        return self.status


def test_gpu_probe_uses_the_cuda_runtime(monkeypatch):
    monkeypatch.setattr(trt, "_load_cudart", lambda: FakeCudart(0, 3))
    assert trt.cuda_device_count() == 3
    # cudaErrorNoDevice (100), e.g. a driver without a GPU: no device, whatever count says.
    monkeypatch.setattr(trt, "_load_cudart", lambda: FakeCudart(100, 7))
    assert trt.cuda_device_count() == 0


def fake_nvidia_smi(folder: Path, output: str, status: int = 0) -> None:
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '{output}'\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_gpu_probe_falls_back_to_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.setattr(trt, "_load_cudart", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert trt.cuda_device_count() == 0  # no nvidia-smi
    fake_nvidia_smi(
        tmp_path, "GPU 0: NVIDIA H100 (UUID: GPU-1)\\nGPU 1: NVIDIA H100 (UUID: GPU-2)\\n"
    )
    assert trt.cuda_device_count() == 2
    fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed: no driver\\n", status=9)
    assert trt.cuda_device_count() == 0


# --- flags ---------------------------------------------------------------------------------


def test_shape_flags():
    assert trt.parse_shape("2x16x24x3", "--min-shape") == (2, 16, 24, 3)
    for bad in ("16x16x3", "1x16x16x4", "1x0x16x3", "1xax16x3"):
        with pytest.raises(base.ExportError, match=f"--opt-shape '{bad}'"):
            trt.parse_shape(bad, "--opt-shape")
    trt.check_shapes((1, 16, 16, 3), (1, 16, 16, 3), (4, 512, 512, 3))
    with pytest.raises(base.ExportError, match="min <= opt <= max"):
        trt.check_shapes((1, 16, 16, 3), (1, 8, 16, 3), (1, 512, 512, 3))


def test_flag_errors(monkeypatch, tmp_path, capsys):
    fake_probes(monkeypatch, False, "10.8.0", 1)
    output = str(tmp_path / "m.engine")
    assert trt.main(["--output", output, "--calibration-data", str(tmp_path)]) == 2
    assert "--calibration-data is used only with --precision int8" in capsys.readouterr().err
    assert trt.main(["--output", output, "--min-shape", "1x64x64x3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must admit the verification and timing inputs" in err
    assert not list(tmp_path.iterdir())


# --- the route-2 ONNX ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def route2_onnx(default_source, tmp_path_factory):
    """The TensorRT-ready ONNX of the packaged model at each precision: {precision: (report,
    path)}. int8 calibrates on Set14 (other photos than the verification's sample)."""
    folder = tmp_path_factory.mktemp("trt_onnx")
    photos = SET14_HR
    if not photos.is_dir():  # without the benchmark data: the bundled photo
        photos = folder / "photos"
        photos.mkdir()
        shutil.copy(SAMPLE_IMAGE, photos)
    made = {}
    for precision in trt.PRECISIONS:
        calibration = [photos] if precision == "int8" else []
        path = folder / f"drn_{precision}.onnx"
        report = trt.export_trt(
            default_source,
            path,
            precision=precision,
            calibration_data=calibration,
            onnx_only=True,
            timing_runs=0,
        )
        made[precision] = report, path
    return made


@pytest.mark.slow
@pytest.mark.parametrize("precision", trt.PRECISIONS)
def test_onnx_uses_only_tensorrt_supported_operators(route2_onnx, precision):
    _, path = route2_onnx[precision]
    model = onnx.load(str(path))
    ops = onnx_export.op_types(path)
    assert {domain for domain, _ in ops} == {""}
    assert {op for _, op in ops} <= trt.TENSORRT_ONNX_OPS, {op for _, op in ops}
    initializers = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Slice" and len(node.input) > 3:
            assert node.input[3] in initializers  # TensorRT: Slice axes must be an initializer
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero_point = numpy_helper.to_array(initializers[node.input[2]])
            assert zero_point.dtype == np.int8 and not zero_point.any()  # TensorRT: symmetric


@pytest.mark.slow
@pytest.mark.parametrize("precision", trt.PRECISIONS)
def test_onnx_passes_the_full_checker_and_holds_its_metadata(route2_onnx, precision):
    """The fp16 one failed ("nodes must be topologically sorted": the float16 converter
    appends its input Casts last)."""
    _, path = route2_onnx[precision]
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    metadata = base.read_metadata(path)  # strict JSON
    assert onnx_export.embedded_metadata(path) == metadata
    assert metadata["precision"] == precision and metadata["format"] == "onnx-for-tensorrt"


@pytest.mark.slow
def test_fp32_onnx_is_the_plain_export(route2_onnx):
    report, path = route2_onnx["fp32"]
    assert report.format == "onnx-for-tensorrt" and "route: onnx-only" in report.notes
    assert all(r["psnr_db"] >= 60 for r in report.verification)
    assert "QuantizeLinear" not in {op for _, op in onnx_export.op_types(path)}


@pytest.mark.slow
def test_fp16_onnx_is_float16_inside_float32_outside(route2_onnx):
    _, path = route2_onnx["fp16"]
    graph = onnx.load(str(path)).graph
    weights = {i.name: i.data_type for i in graph.initializer}
    conv_weights = [weights[n.input[1]] for n in graph.node if n.op_type == "Conv"]
    assert conv_weights and set(conv_weights) == {onnx.TensorProto.FLOAT16}
    assert onnx.TensorProto.FLOAT not in weights.values()
    for value in (graph.input[0], graph.output[0]):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.slow
def test_int8_onnx_quantizes_the_feature_convolutions(route2_onnx):
    _, path = route2_onnx["int8"]
    graph = onnx.load(str(path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    initializers = {i.name: i for i in graph.initializer}
    quantized = float_kept = 0
    for conv in (n for n in graph.node if n.op_type == "Conv"):
        data, weight = (producer.get(name) for name in conv.input[:2])
        stored = initializers[weight.input[0] if weight else conv.input[1]]
        groups = next((a.i for a in conv.attribute if a.name == "group"), 1)
        rgb_facing = min(stored.dims[0], stored.dims[1] * groups) <= 3
        if rgb_facing:  # carries the image's 0..255 range: float
            assert weight is None and stored.data_type == onnx.TensorProto.FLOAT
            float_kept += 1
        else:
            assert data.op_type == weight.op_type == "DequantizeLinear"
            assert producer[data.input[0]].op_type == "QuantizeLinear"  # activations quantized
            assert stored.data_type == onnx.TensorProto.INT8
            quantized += 1
        bias = conv.input[2] if len(conv.input) > 2 else None
        assert bias is None or initializers[bias].data_type == onnx.TensorProto.FLOAT
    assert quantized >= 10 and float_kept >= 4  # upsampling, mean shifts, head and tail


def test_int8_needs_calibration_data(tmp_path, capsys):
    with pytest.raises(base.ExportError, match="needs --calibration-data"):
        trt.export_trt("default", tmp_path / "m.onnx", precision="int8", onnx_only=True)
    argv = ["--output", str(tmp_path / "m.onnx"), "--precision", "int8", "--onnx-only"]
    assert trt.main(argv) == 2
    assert "needs --calibration-data" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("size", [(33, 47), (24, 40)], ids=["odd", "even"])
def test_onnx_agrees_with_keras_above_its_floor(route2_onnx, default_source, precision, size):
    report, path = route2_onnx[precision]
    floor = base.FLOORS_DB[precision]
    assert [r["floor_db"] for r in report.verification] == [floor] * len(base.probe_images(4))
    assert all(r["psnr_db"] >= floor for r in report.verification)
    _, lr = base.probe_images(4)[0]
    h, w = size
    images = np.concatenate([lr[:, :h, :w], lr[:, -h:, -w:]])
    output = onnx_export.onnxruntime_runner(path)(images)
    expected = base.keras_runner(default_source.model)(images)
    assert output.shape == (2, 4 * h, 4 * w, 3)
    psnr = base.agreement(output, expected)["psnr_db"]
    assert floor <= psnr < 100  # reduced precision: close, but not the fp32 graph


@pytest.mark.slow
def test_onnx_metadata(route2_onnx):
    _, path = route2_onnx["int8"]
    metadata = json.loads(base.metadata_path(path).read_text())
    assert metadata["precision"] == "int8" and metadata["io"]["input"]["name"] == "images"
    assert metadata["io"]["profile"] == {"min": [1, 16, 16, 3], "opt": [1, 128, 128, 3],
                                         "max": [1, 512, 512, 3]}  # fmt: skip


# --- calibration ---------------------------------------------------------------------------


def neighbour_correlation(image: np.ndarray) -> float:
    """Correlation of horizontally adjacent pixels: about 0.9+ for photos, 0 for noise."""
    gray = image[0].mean(-1)
    return float(np.corrcoef(gray[:, :-1].ravel(), gray[:, 1:].ravel())[0, 1])


@pytest.mark.parametrize("folders", [[], [SET14_HR]], ids=["bundled", "set14"])
def test_calibration_batches_are_real_photo_crops(folders):
    if folders and not SET14_HR.is_dir():
        pytest.skip(f"{SET14_HR} not found")
    batches = trt.calibration_batches(folders, scale=4)
    assert len(batches) == 32
    for batch in batches:
        assert list(batch) == ["images"]
        image = batch["images"]
        assert image.shape == (1, 48, 48, 3) and image.dtype == np.float32
        assert image.min() >= 0 and image.max() <= 255 and image.std() > 5
        assert neighbour_correlation(image) > 0.5
    noise = np.random.default_rng(0).uniform(0, 255, (1, 48, 48, 3))
    assert abs(neighbour_correlation(noise)) < 0.1  # the statistic tells noise apart
    assert len({b["images"].tobytes() for b in batches}) == 32  # distinct crops
    if folders:
        bundled = {b["images"].tobytes() for b in trt.calibration_batches([], 4)}
        assert not bundled & {b["images"].tobytes() for b in batches}


# --- route 2 wiring, with the GPU parts faked ----------------------------------------------


@pytest.mark.slow
def test_route_2_flow_with_a_fake_engine(monkeypatch, tiny, tmp_path, capsys):
    """Route 2 end to end with the two GPU steps replaced: the "engine" is the ONNX run in
    onnxruntime. Checks what reaches the builder and what the report says."""
    fake_probes(monkeypatch, False, "10.8.0", 1)
    built = {}

    def fake_build(onnx_path, shapes):
        built["ops"] = onnx_export.op_types(onnx_path)
        built["shapes"] = shapes
        return Path(onnx_path).read_bytes()

    def fake_runner(engine: bytes):
        scratch = tmp_path / "engine_as.onnx"
        scratch.write_bytes(engine)
        return onnx_export.onnxruntime_runner(scratch)

    monkeypatch.setattr(trt, "build_engine", fake_build)
    monkeypatch.setattr(trt, "EngineRunner", fake_runner)
    output = tmp_path / "tiny_fp16.engine"
    _, model_path = tiny
    argv = ["--model", str(model_path), "--output", str(output), "--precision", "fp16"]
    assert trt.main([*argv, "--timing-runs", "1", "--max-shape", "2x256x300x3"]) == 0
    printed = capsys.readouterr().out
    assert "(tensorrt-engine, fp16)" in printed and "route: onnx-tensorrt" in printed
    assert "its ONNX in onnxruntime against Keras" in printed
    assert built["shapes"] == [(1, 16, 16, 3), (1, 128, 128, 3), (2, 256, 300, 3)]
    assert ("", "Cast") in built["ops"]  # the fp16 ONNX went to the builder
    assert output.is_file() and base.metadata_path(output).is_file()


# --- on a GPU ------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU or trt._load_cudart() is None, reason="no CUDA GPU / libcudart")
def test_cuda_runtime_round_trip():
    cuda = trt._Cuda()
    data = np.arange(1000, dtype=np.float32)
    back = np.zeros_like(data)
    pointer = cuda.malloc(data.nbytes)
    try:
        cuda.copy(pointer, data.ctypes.data, data.nbytes, trt._Cuda.H2D)
        cuda.copy(back.ctypes.data, pointer, data.nbytes, trt._Cuda.D2H)
    finally:
        cuda.free(pointer)
    np.testing.assert_array_equal(back, data)
    cuda.synchronize(cuda.stream())


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_GPU and HAS_TENSORRT), reason="needs a CUDA GPU and tensorrt")
@pytest.mark.parametrize("precision", trt.PRECISIONS)
def test_engine_agrees_with_keras(default_source, tmp_path, precision):
    output = tmp_path / f"drn_{precision}.engine"
    report = trt.export_trt(default_source, output, precision=precision, timing_runs=3)
    assert report.format == "tensorrt-engine" and "route: onnx-tensorrt" in report.notes
    assert all(r["psnr_db"] >= base.FLOORS_DB[precision] for r in report.verification)
    runner = trt.EngineRunner(output.read_bytes())
    _, lr = base.probe_images(4)[0]
    for h, w in ((33, 47), (24, 40)):
        images = np.concatenate([lr[:, :h, :w], lr[:, -h:, -w:]])
        expected = base.keras_runner(default_source.model)(images)
        assert base.agreement(runner(images), expected)["psnr_db"] >= base.FLOORS_DB[precision]


def test_gpu_check_script_reports_missing_tensorrt(tmp_path, capsys):
    if HAS_TENSORRT:
        pytest.skip("tensorrt is installed")
    from export import trt_gpu_check

    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    assert trt_gpu_check.main([str(model)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install tensorrt" in err
    assert os.listdir(tmp_path) == ["m.onnx"]
