"""ONNX export (export/onnx.py): conversion, onnxruntime agreement, op list, CLI."""

import json

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import photo_batch

from drn_tf import serving
from drn_tf.flags import FlagError
from export import base, photo_sets, reporting, verification
from export import onnx as onnx_export


@pytest.fixture(scope="module")
def exported(default_source, tmp_path_factory):
    """The packaged model exported once: (report, path)."""
    path = tmp_path_factory.mktemp("onnx") / "drn.onnx"
    report = onnx_export.export_onnx(default_source, path, timing_runs=1)
    return report, path


@pytest.mark.slow
@pytest.mark.parametrize("size", [(33, 47), (24, 40)], ids=["odd", "even"])
def test_agrees_with_keras_at_two_sizes_batch_2(exported, default_source, size):
    _, path = exported
    images = photo_batch(*size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(["sr"], {"images": images})
    expected = verification.keras_runner(default_source.model)(images)
    assert output.shape == (2, 4 * size[0], 4 * size[1], 3) == expected.shape
    assert verification.agreement(output, expected)["psnr_db"] >= base.FLOORS_DB["fp32"]


@pytest.mark.slow
def test_report_metadata_and_dynamic_io(exported):
    report, path = exported
    assert all(r["psnr_db"] >= 60 for r in report.verification)
    assert len(report.verification) == len(photo_sets.probe_images(4))
    assert report.timing["artifact_ms"] > 0 and report.timing["keras_ms"] > 0
    metadata = reporting.read_metadata(path)  # strict: no Infinity/NaN
    assert metadata["verified_on"] == {"cpu": reporting.host_cpu()}
    # metadata_props: the side-car's fields, each a JSON string (onnxruntime shows them too).
    assert onnx_export.embedded_metadata(path) == metadata
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    custom = session.get_modelmeta().custom_metadata_map
    assert json.loads(custom["precision"]) == "fp32" and set(custom) == set(metadata)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert metadata["format"] == "onnx" and metadata["precision"] == "fp32"
    assert metadata["model"]["source_sha256"] == base.sha256_of(base.load_source("default").path)
    graph = onnx.load(str(path)).graph
    (given,), (taken,) = graph.input, graph.output
    assert (given.name, taken.name) == (metadata["io"]["input"]["name"], "sr")
    dims = [
        [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (given, taken)
    ]
    assert dims == [["N", "H", "W", 3], ["N", "4H", "4W", 3]]
    assert (
        given.type.tensor_type.elem_type
        == taken.type.tensor_type.elem_type
        == onnx.TensorProto.FLOAT
    )


@pytest.mark.slow
def test_only_standard_domain_operators(exported):
    _, path = exported
    model = onnx.load(str(path))
    ops = onnx_export.op_types(path)
    assert {domain for domain, _ in ops} == {""}
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    names = {op for _, op in ops}
    # The bicubic layer is convolutions and PixelShuffle is DepthToSpace: no Resize.
    assert {"Conv", "DepthToSpace"} <= names and "Resize" not in names


@pytest.mark.slow
def test_opset_18(tiny, tmp_path):
    model, _ = tiny
    path = onnx_export.to_onnx(model, tmp_path / "tiny.onnx", opset=18)
    assert [o.version for o in onnx.load(str(path)).opset_import if o.domain == ""] == [18]
    images = np.random.default_rng(0).uniform(0, 255, (1, 9, 14, 3)).astype(np.float32)
    output = onnx_export.onnxruntime_runner(path)(images)
    expected = verification.keras_runner(model)(images)
    assert verification.agreement(output, expected)["psnr_db"] >= 60


def test_opset_19_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(base.ExportError, match="opset 19 is not supported.*17 or 18"):
        onnx_export.export_onnx("default", tmp_path / "m.onnx", opset=19)
    status = onnx_export.main(["--output", str(tmp_path / "m.onnx"), "--opset", "19"])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "opset 19" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cli(tiny, tmp_path, capsys):
    _, model_path = tiny
    output = tmp_path / "out" / "tiny.onnx"
    argv = ["--model", str(model_path), "--output", str(output), "--timing-runs", "1"]
    assert onnx_export.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {output}" in printed and "latency on 128x128" in printed
    assert output.is_file()
    assert json.loads(reporting.metadata_path(output).read_text())["model"]["n_feats"] == 4
    assert sorted(p.name for p in output.parent.iterdir()) == ["tiny.onnx", "tiny.onnx.json"]


def test_cli_scale_picks_the_packaged_model(tiny, tiny_x2, tmp_path, monkeypatch, capsys):
    from drn_tf import bundled

    monkeypatch.setattr(bundled, "DEFAULT_MODEL_PATHS", {2: tiny_x2, 4: tiny[1]})
    output = tmp_path / "x2.onnx"
    argv = ["--scale", "2", "--output", str(output), "--timing-runs", "0"]
    assert onnx_export.main(argv) == 0
    assert json.loads(reporting.metadata_path(output).read_text())["model"]["scale"] == 2
    assert onnx_export.main(["--model", str(tiny_x2), *argv]) == 2  # --scale goes with default only
    assert "--model default or fast only" in capsys.readouterr().err


def test_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    output = tmp_path / "m.onnx"
    output.write_bytes(b"old")
    assert onnx_export.main(["--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert output.read_bytes() == b"old"


def test_bad_models_are_one_line_errors(tmp_path, capsys):
    not_drn = tmp_path / "plain.keras"
    keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 3)]).save(not_drn)
    for model in (not_drn, tmp_path / "missing.keras"):
        assert onnx_export.main(["--model", str(model), "--output", str(tmp_path / "m.onnx")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(model) in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "m.onnx").exists()


def test_sort_topologically_orders_nodes_after_their_inputs():
    """A graph listed out of order (as the float16 converter leaves it: a Cast appended after
    its reader) is sorted, valid parts keeping their order; a cycle is an error."""
    helper = onnx.helper
    value = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Relu", ["c"], ["d"], name="reads_the_cast"),
        helper.make_node("Neg", ["x"], ["n"], name="independent"),
        helper.make_node("Cast", ["x"], ["c"], name="cast", to=onnx.TensorProto.FLOAT),
        helper.make_node("Add", ["d", "n"], ["y"], name="add"),
    ]
    float_ = onnx.TensorProto.FLOAT
    graph = helper.make_graph(nodes, "g", [value("x", float_, [2])], [value("y", float_, [2])])
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(helper.make_model(graph), full_check=True)
    onnx_export.sort_topologically(graph)
    assert [n.name for n in graph.node] == ["independent", "cast", "reads_the_cast", "add"]
    onnx.checker.check_model(helper.make_model(graph), full_check=True)
    cycle = helper.make_graph(
        [helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])],
        "cycle",
        [],
        [value("a", float_, [2])],
    )
    with pytest.raises(base.ExportError, match="cycle"):
        onnx_export.sort_topologically(cycle)


@pytest.fixture(scope="module")
def tiny_exports(tiny, tmp_path_factory):
    """The tiny model exported with a tensor format, once per format: ``tiny_exports(io,
    layout)`` → ``(report, path)``."""
    root = tmp_path_factory.mktemp("onnx_formats")
    source = onnx_export.load(tiny[1])
    done = {}

    def get(io: str, layout: str):
        if (io, layout) not in done:
            path = root / f"{io}_{layout}.onnx"
            report = onnx_export.export_onnx(source, path, io=io, layout=layout, timing_runs=0)
            done[io, layout] = report, path
        return done[io, layout]

    return get


def test_uint8_io_takes_and_returns_keras_pixels(tiny, tiny_exports):
    """``--io uint8``: onnxruntime takes uint8 pixels and returns the pixels of Keras's
    serving function (clipped, rounded half to even), within the fp32 floor; the exporter
    verified the same against Keras's pixels on every probe image."""
    report, path = tiny_exports("uint8", "nhwc")
    assert [r["floor_db"] for r in report.verification] == [60.0] * len(photo_sets.probe_images(4))
    assert all(r["psnr_db"] >= 60 for r in report.verification)
    images = photo_batch(33, 47)
    pixels = images.astype(np.uint8)
    np.testing.assert_array_equal(pixels, images)  # the photo is whole pixel values
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(["sr"], {"images": pixels})
    expected = serving.to_pixels(verification.keras_runner(tiny[0])(images)).numpy()
    assert output.dtype == np.uint8 and output.shape == expected.shape == (2, 132, 188, 3)
    assert verification.agreement(output, expected)["psnr_db"] >= base.FLOORS_DB["fp32"]
    assert np.mean(output != expected) < 1e-3  # at most a rare half-way pixel rounds apart


@pytest.mark.parametrize("io", [pytest.param("float32", marks=pytest.mark.slow), "uint8"])
def test_nchw_output_is_the_nhwc_output_transposed(tiny_exports, io):
    images = photo_batch(21, 30).astype(io)
    outputs = {}
    for layout in onnx_export.LAYOUTS:
        report, path = tiny_exports(io, layout)
        assert all(r["psnr_db"] >= 60 for r in report.verification)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        given = images.transpose(0, 3, 1, 2) if layout == "nchw" else images
        (outputs[layout],) = session.run(["sr"], {"images": np.ascontiguousarray(given)})
    assert outputs["nchw"].shape == (2, 3, 84, 120) and outputs["nchw"].dtype == io
    for layout, shape in (("nhwc", ["N", "H", "W", 3]), ("nchw", ["N", 3, "H", "W"])):
        tensor = reporting.read_metadata(tiny_exports(io, layout)[1])["io"]["input"]
        assert [tensor[k] for k in ("dtype", "layout", "shape")] == [io, layout.upper(), shape]
    transposed = outputs["nchw"].transpose(0, 2, 3, 1)
    assert verification.agreement(transposed, outputs["nhwc"])["psnr_db"] >= 60


def test_metadata_records_io_and_layout(tiny_exports):
    report, path = tiny_exports("uint8", "nchw")
    metadata = reporting.read_metadata(path)
    assert onnx_export.embedded_metadata(path) == metadata
    given, taken = metadata["io"]["input"], metadata["io"]["output"]
    assert (given["name"], taken["name"]) == ("images", "sr")
    assert given["dtype"] == taken["dtype"] == "uint8"
    assert given["layout"] == taken["layout"] == "NCHW"
    assert (given["shape"], taken["shape"]) == (["N", 3, "H", "W"], ["N", 3, "4H", "4W"])
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    for value, shape in ((graph_input, given["shape"]), (graph_output, taken["shape"])):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        assert [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim] == shape


@pytest.mark.parametrize("flag", ["--io", "--layout"])
def test_bad_io_or_layout_exits_2(tmp_path, capsys, flag):
    assert onnx_export.main(["--output", str(tmp_path / "m.onnx"), flag, "int16"]) == 2
    message = capsys.readouterr().err.splitlines()[0]
    assert flag in message and "int16" in message and "Traceback" not in message
    with pytest.raises(FlagError, match=f"^{flag} 'int16': use one of"):
        onnx_export.export_onnx("default", tmp_path / "m.onnx", **{flag[2:]: "int16"})
    assert not list(tmp_path.iterdir())
