"""Route 2 of the TensorRT export (export/trt_engine.py): the profile's shapes, the
TensorRT-ready ONNX (fp32, fp16, int8 QDQ) against TensorRT's ONNX support list and the
agreement floors, calibration batches, and the engine and CUDA calls on a GPU.

No GPU and no tensorrt exist here or in CI: tests that need them are marked ``gpu`` and skip.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from drn_tf.bundled import SAMPLE_IMAGE
from export import base, photo_sets, reporting, trt, trt_engine, trt_routes, verification
from export import onnx as onnx_export

SET14_HR = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark" / "Set14" / "HR"
HAS_GPU = trt_routes.cuda_device_count() > 0
HAS_TENSORRT = trt_routes.tensorrt_version() is not None


# --- the profile ---------------------------------------------------------------------------


def test_shape_flags():
    assert trt_engine.parse_shape("2x16x24x3", "--min-shape") == (2, 16, 24, 3)
    for bad in ("16x16x3", "1x16x16x4", "1x0x16x3", "1xax16x3"):
        with pytest.raises(base.ExportError, match=f"--opt-shape '{bad}'"):
            trt_engine.parse_shape(bad, "--opt-shape")
    trt_engine.check_shapes((1, 16, 16, 3), (1, 16, 16, 3), (4, 512, 512, 3))
    with pytest.raises(base.ExportError, match="min <= opt <= max"):
        trt_engine.check_shapes((1, 16, 16, 3), (1, 8, 16, 3), (1, 512, 512, 3))


def test_profile_shapes_parse_texts_and_check_the_range():
    assert trt_engine.profile_shapes("1x16x16x3", (1, 64, 64, 3), "2x512x512x3") == [
        (1, 16, 16, 3),
        (1, 64, 64, 3),
        (2, 512, 512, 3),
    ]
    with pytest.raises(base.ExportError, match="--max-shape '1x64x3'"):
        trt_engine.profile_shapes(*trt_engine.DEFAULT_SHAPES[:2], "1x64x3")
    with pytest.raises(base.ExportError, match="min <= opt <= max"):
        trt_engine.profile_shapes("1x256x256x3", *trt_engine.DEFAULT_SHAPES[1:])


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
    for precision in trt_engine.PRECISIONS:
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
@pytest.mark.parametrize("precision", trt_engine.PRECISIONS)
def test_onnx_uses_only_tensorrt_supported_operators(route2_onnx, precision):
    _, path = route2_onnx[precision]
    model = onnx.load(str(path))
    ops = onnx_export.op_types(path)
    assert {domain for domain, _ in ops} == {""}
    assert {op for _, op in ops} <= trt_engine.TENSORRT_ONNX_OPS, {op for _, op in ops}
    initializers = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Slice" and len(node.input) > 3:
            assert node.input[3] in initializers  # TensorRT: Slice axes must be an initializer
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero_point = numpy_helper.to_array(initializers[node.input[2]])
            assert zero_point.dtype == np.int8 and not zero_point.any()  # TensorRT: symmetric


@pytest.mark.slow
@pytest.mark.parametrize("precision", trt_engine.PRECISIONS)
def test_onnx_passes_the_full_checker_and_holds_its_metadata(route2_onnx, precision):
    """The fp16 one failed ("nodes must be topologically sorted": the float16 converter
    appends its input Casts last)."""
    _, path = route2_onnx[precision]
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    metadata = reporting.read_metadata(path)  # strict JSON
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


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("size", [(33, 47), (24, 40)], ids=["odd", "even"])
def test_onnx_agrees_with_keras_above_its_floor(route2_onnx, default_source, precision, size):
    report, path = route2_onnx[precision]
    floor = base.FLOORS_DB[precision]
    assert [r["floor_db"] for r in report.verification] == [floor] * len(photo_sets.probe_images(4))
    assert all(r["psnr_db"] >= floor for r in report.verification)
    _, lr = photo_sets.probe_images(4)[0]
    h, w = size
    images = np.concatenate([lr[:, :h, :w], lr[:, -h:, -w:]])
    output = onnx_export.onnxruntime_runner(path)(images)
    expected = verification.keras_runner(default_source.model)(images)
    assert output.shape == (2, 4 * h, 4 * w, 3)
    psnr = verification.agreement(output, expected)["psnr_db"]
    assert floor <= psnr < 100  # reduced precision: close, but not the fp32 graph


@pytest.mark.slow
def test_onnx_metadata(route2_onnx):
    _, path = route2_onnx["int8"]
    metadata = json.loads(reporting.metadata_path(path).read_text())
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
    batches = trt_engine.calibration_batches(folders, scale=4)
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
        bundled = {b["images"].tobytes() for b in trt_engine.calibration_batches([], 4)}
        assert not bundled & {b["images"].tobytes() for b in batches}


# --- on a GPU ------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(
    not HAS_GPU or trt_routes.load_cudart() is None, reason="no CUDA GPU / libcudart"
)
def test_cuda_runtime_round_trip():
    cuda = trt_engine._Cuda()
    data = np.arange(1000, dtype=np.float32)
    back = np.zeros_like(data)
    pointer = cuda.malloc(data.nbytes)
    try:
        cuda.copy(pointer, data.ctypes.data, data.nbytes, trt_engine._Cuda.H2D)
        cuda.copy(back.ctypes.data, pointer, data.nbytes, trt_engine._Cuda.D2H)
    finally:
        cuda.free(pointer)
    np.testing.assert_array_equal(back, data)
    cuda.synchronize(cuda.stream())


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_GPU and HAS_TENSORRT), reason="needs a CUDA GPU and tensorrt")
@pytest.mark.parametrize("precision", trt_engine.PRECISIONS)
def test_engine_agrees_with_keras(default_source, tmp_path, precision):
    output = tmp_path / f"drn_{precision}.engine"
    report = trt.export_trt(default_source, output, precision=precision, timing_runs=3)
    assert report.format == "tensorrt-engine" and "route: onnx-tensorrt" in report.notes
    assert all(r["psnr_db"] >= base.FLOORS_DB[precision] for r in report.verification)
    runner = trt_engine.EngineRunner(output.read_bytes())
    _, lr = photo_sets.probe_images(4)[0]
    for h, w in ((33, 47), (24, 40)):
        images = np.concatenate([lr[:, :h, :w], lr[:, -h:, -w:]])
        expected = verification.keras_runner(default_source.model)(images)
        assert (
            verification.agreement(runner(images), expected)["psnr_db"] >= base.FLOORS_DB[precision]
        )
