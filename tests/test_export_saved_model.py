"""Tests for export/saved_model.py: the SavedModel for TF Serving, its three signatures (through
``saved_model_cli``, TF Serving's graph-mode loader, and ``tf.saved_model.load``), the REST
request bodies, the version layout and the command line."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from drn_tf.inference import upscale
from export import base, photo_sets, reporting, verification
from export import saved_model as sm

SIGNATURES = ("serving_default", "serving_uint8", "serving_bytes")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The packaged model exported once: (report, version folder, loaded SavedModel, model)."""
    root = tmp_path_factory.mktemp("serving") / "drn"
    source = base.load_source("default")
    report = sm.export_saved_model(source, root, timing_runs=1)
    folder = root / "1"
    return report, folder, tf.saved_model.load(str(folder)), source.model


@pytest.fixture(scope="module")
def lr() -> np.ndarray:
    """The sample photo's LR (uint8, 75 × 112 × 3), as the probes of the verification."""
    _, images = photo_sets.probe_images(4)[0]
    return np.round(np.clip(images[0], 0, 255)).astype(np.uint8)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


# --- the export ------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_layout_report_and_metadata(exported):
    report, folder, _, model = exported
    assert sorted(p.name for p in folder.parent.iterdir()) == ["1"]  # no temporaries left
    assert (folder / "saved_model.pb").is_file() and (folder / "variables").is_dir()
    assert all(r["psnr_db"] >= 60 for r in report.verification)
    assert len(report.verification) == len(photo_sets.probe_images(4))
    assert report.timing and report.timing["artifact_ms"] > 0
    metadata = reporting.read_metadata(folder)  # strict: no Infinity/NaN
    assert metadata["verified_on"] == {"cpu": reporting.host_cpu()}
    assert metadata["format"] == "saved_model" and metadata["precision"] == "fp32"
    assert metadata["model"]["scale"] == model.scale == 4
    assert metadata["model"]["source_sha256"] == base.sha256_of(base.load_source("default").path)
    signatures = metadata["io"]["signatures"]
    assert sorted(signatures) == sorted(SIGNATURES)
    assert signatures["serving_bytes"]["inputs"] == {
        "images_bytes": {"dtype": "string", "shape": [-1]}
    }
    assert signatures["serving_bytes"]["outputs"] == {
        "sr_bytes": {"dtype": "string", "shape": [-1]}
    }
    assert signatures["serving_uint8"]["outputs"]["sr"] == {
        "dtype": "uint8",
        "shape": [-1] * 3 + [3],
    }


@pytest.mark.slow
def test_variables_hold_each_weight_once(exported):
    _, folder, _, model = exported
    reader = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
    shapes = reader.get_variable_to_shape_map()
    sizes = [int(np.prod(shape)) for name, shape in shapes.items() if "VARIABLE_VALUE" in name]
    # Neither the dual networks nor the tails of the levels below the top are exported.
    top = f"tail_{model.scale.bit_length() - 1}"
    lower_tails = [
        layer
        for layer in model.primal.layers
        if layer.name.startswith("tail_") and layer.name != top
    ]
    assert len(lower_tails) == model.scale.bit_length() - 1
    assert sum(sizes) == model.primal.count_params() - sum(t.count_params() for t in lower_tails)


@pytest.mark.slow
def test_graph_has_only_builtin_ops(exported):
    """Every op in the graph and its functions is registered in stock TensorFlow (so TF
    Serving's standard build runs it): no custom op, no ResizeBicubic, no py_func."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((exported[1] / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    functions = {f.signature.name for f in graph.library.function}
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    ops -= functions
    assert {"Conv2D", "DepthToSpace", "DecodeImage", "EncodePng"} <= ops  # the list is real
    assert not ops & {"ResizeBicubic", "PyFunc", "PyFuncStateless", "EagerPyFunc"}
    assert [op for op in sorted(ops) if op_def_registry.get(op) is None] == []


# --- saved_model_cli: the graph-mode (TF1 session) loader that TF Serving uses ---------------


def _saved_model_cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_saved_model_cli_show_lists_the_signatures(exported):
    text = _saved_model_cli("show", "--dir", str(exported[1]), "--all")
    expected = {
        "serving_default": ("images", "DT_FLOAT", "(-1, -1, -1, 3)", "sr", "DT_FLOAT"),
        "serving_uint8": ("images", "DT_UINT8", "(-1, -1, -1, 3)", "sr", "DT_UINT8"),
        "serving_bytes": ("images_bytes", "DT_STRING", "(-1)", "sr_bytes", "DT_STRING"),
    }
    for name, (key, dtype, shape, out_key, out_dtype) in expected.items():
        block = re.search(rf"signature_def\['{name}'\]:(.*?)Method name", text, re.S)
        assert block, f"{name} missing from saved_model_cli show"
        block = block.group(1)
        assert re.search(
            rf"inputs\['{key}'\].*?dtype: {dtype}\s+shape: {re.escape(shape)}", block, re.S
        )
        assert re.search(
            rf"outputs\['{out_key}'\].*?dtype: {out_dtype}\s+shape: {re.escape(shape)}", block, re.S
        )


@pytest.mark.slow
def test_saved_model_cli_run(exported, lr, tmp_path):
    _, folder, _, model = exported
    batch = np.stack([lr[:37, :52], lr[20:57, 40:92]])  # 2 × 37 × 52: odd, non-square
    np.save(tmp_path / "float.npy", batch.astype(np.float32))
    np.save(tmp_path / "uint8.npy", lr[None])
    for signature, name in (("serving_default", "float"), ("serving_uint8", "uint8")):
        out = tmp_path / name
        _saved_model_cli(
            "run", "--dir", str(folder), "--tag_set", "serve", "--signature_def", signature,
            "--inputs", f"images={tmp_path / name}.npy", "--outdir", str(out),
        )  # fmt: skip
        (out / "sr.npy").rename(tmp_path / f"{name}_sr.npy")
    sr = np.load(tmp_path / "float_sr.npy")
    expected = verification.keras_runner(model)(batch.astype(np.float32))
    assert sr.dtype == np.float32 and verification.agreement(sr, expected)["psnr_db"] >= 60
    sr8 = np.load(tmp_path / "uint8_sr.npy")
    assert sr8.dtype == np.uint8
    np.testing.assert_array_equal(sr8[0], upscale(model, lr))


# --- tf.saved_model.load ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("size", [(37, 52), (30, 45)])  # odd/even, non-square, batch 2
def test_dynamic_batch_and_size(exported, lr, size):
    _, _, loaded, model = exported
    h, w = size
    batch = np.stack([lr[:h, :w], lr[-h:, -w:]])
    sr = loaded.signatures["serving_default"](images=tf.constant(batch, tf.float32))["sr"]
    assert sr.shape == (2, 4 * h, 4 * w, 3)
    expected = verification.keras_runner(model)(batch.astype(np.float32))
    assert verification.agreement(sr.numpy(), expected)["psnr_db"] >= 60
    sr8 = loaded.signatures["serving_uint8"](images=tf.constant(batch))["sr"].numpy()
    for got, image in zip(sr8, batch, strict=True):
        np.testing.assert_array_equal(got, upscale(model, image))


@pytest.mark.slow
def test_serving_bytes_batch_of_sizes_and_formats(exported, lr):
    """One request, three images of their own sizes, PNG and JPEG: PNGs of upscale's pixels.

    A JPEG's pixels are TensorFlow's decoding of it (PIL's differs by a few levels)."""
    _, _, loaded, model = exported
    images = [lr, lr[3:40, 5:57], lr[10:40, 20:65]]
    encoded = [_png(images[0]), _png(images[1]), _jpeg(images[2])]
    inputs = [images[0], images[1], tf.io.decode_jpeg(encoded[2]).numpy()]
    out = loaded.signatures["serving_bytes"](images_bytes=tf.constant(encoded))["sr_bytes"]
    assert out.shape == (3,)
    for data, image in zip(out.numpy(), inputs, strict=True):
        assert data.startswith(b"\x89PNG")
        np.testing.assert_array_equal(_decode(data), upscale(model, image))


@pytest.mark.slow
def test_serving_bytes_rejects_what_is_not_an_image(exported):
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
        exported[2].signatures["serving_bytes"](images_bytes=tf.constant([b"not an image"]))


# --- REST: the JSON bodies of predict requests, as TF Serving handles them --------------------


def _tf_serving_predict(loaded, body: str) -> str:
    """What TF Serving's REST ``:predict`` does with a row-format (``"instances"``) body on a
    one-input, one-output signature: decode ``{"b64": …}`` values, build the input tensor, run
    the signature, and answer ``{"predictions": […]}`` with outputs named ``*_bytes`` in base64
    (tensorflow/serving api_rest.md)."""
    request = json.loads(body)
    signature = loaded.signatures[request.get("signature_name", "serving_default")]
    ((name, spec),) = signature.structured_input_signature[1].items()
    rows = [
        base64.b64decode(row["b64"]) if isinstance(row, dict) and set(row) == {"b64"} else row
        for row in request["instances"]
    ]
    ((out_name, out),) = signature(**{name: tf.constant(rows, spec.dtype)}).items()
    values = out.numpy().tolist()
    if out_name.endswith("_bytes"):
        values = [{"b64": base64.b64encode(v).decode("ascii")} for v in values]
    return json.dumps({"predictions": values})


@pytest.mark.slow
def test_rest_request_serving_bytes(exported, lr):
    _, _, loaded, model = exported
    images = [lr, lr[3:40, 5:57]]
    body = json.dumps(
        {
            "signature_name": "serving_bytes",
            "instances": [{"b64": base64.b64encode(_png(i)).decode("ascii")} for i in images],
        }
    )
    response = json.loads(_tf_serving_predict(loaded, body))
    assert len(response["predictions"]) == 2
    for prediction, image in zip(response["predictions"], images, strict=True):
        np.testing.assert_array_equal(
            _decode(base64.b64decode(prediction["b64"])), upscale(model, image)
        )


@pytest.mark.slow
def test_rest_request_serving_uint8(exported, lr):
    _, _, loaded, model = exported
    image = lr[:37, :52]
    body = json.dumps({"signature_name": "serving_uint8", "instances": [image.tolist()]})
    response = json.loads(_tf_serving_predict(loaded, body))
    np.testing.assert_array_equal(
        np.array(response["predictions"], np.uint8)[0], upscale(model, image)
    )


# --- versions, failures and the command line (tiny model) -------------------------------------


@pytest.mark.slow
def test_failed_verification_leaves_no_version(tiny, tmp_path, monkeypatch):
    keras_runner = verification.keras_runner
    monkeypatch.setattr(
        verification, "keras_runner", lambda m, *pixels: lambda x: keras_runner(m, *pixels)(x) + 1.0
    )
    with pytest.raises(base.ExportError, match=r"sample_lr_.*48\.1 dB.*60 dB floor"):
        sm.export_saved_model(tiny[1], tmp_path / "drn", timing_runs=0)
    assert not (tmp_path / "drn").exists()  # the folders made for it are removed too


def test_existing_version_needs_a_higher_version(tmp_path):
    (tmp_path / "drn" / "3").mkdir(parents=True)
    with pytest.raises(base.ExportError, match=r"drn/3: version 3 already exists.*--version 4"):
        sm.export_saved_model("no-such.keras", tmp_path / "drn", version=3)
    with pytest.raises(ValueError, match="--version: must be a whole number >= 1"):
        sm.export_saved_model("default", tmp_path / "drn", version=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(base.ExportError, match="file: not a folder"):
        sm.export_saved_model("default", tmp_path / "file")


@pytest.mark.slow
def test_cli(tiny, tmp_path, capsys):
    root = tmp_path / "drn"
    assert sm.main(["--model", str(tiny[1]), "--output", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {root / '1'} (saved_model, fp32)" in out and "latency on 128x128" in out
    assert (root / "1" / "saved_model.pb").is_file()
    assert json.loads((root / "1" / "export.json").read_text())["io"]["version"] == 1

    marker = root / "1" / "marker"
    marker.write_text("old")
    assert sm.main(["--model", str(tiny[1]), "--output", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--version 2" in err and "--overwrite" in err
    assert marker.read_text() == "old"

    argv = ["--model", str(tiny[1]), "--output", str(root), "--overwrite"]
    assert sm.main(argv) == 0
    assert not marker.exists() and (root / "1" / "saved_model.pb").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["1"]


@pytest.mark.parametrize(
    "argv, status, message",
    [
        (
            ["--model", "missing.keras", "--output", "{out}"],
            1,
            "missing.keras: model file does not",
        ),
        (["--model", "{seq}", "--output", "{out}"], 1, "not a DRN model"),
        (["--model", "default"], 2, "--output is required"),
        (["--output", "{out}", "--version", "0"], 2, "--version must be >= 1"),
    ],
)
def test_cli_errors(tmp_path, capsys, argv, status, message):
    seq = tmp_path / "seq.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(seq)
    argv = [a.format(out=tmp_path / "drn", seq=seq) for a in argv]
    assert sm.main(argv) == status
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.startswith("python -m export.saved_model: ")
    assert not (tmp_path / "drn").exists()


# --- TF Serving's warm-up file ---------------------------------------------------------------


def _wire_fields(data: bytes) -> list[tuple[int, bytes]]:
    """The ``(field number, payload)`` pairs of a protobuf message whose fields are all
    length-delimited (wire type 2), read from the wire format independently of the exporter."""

    def varint(at: int) -> tuple[int, int]:
        value, shift = 0, 0
        while True:
            byte = data[at]
            value |= (byte & 0x7F) << shift
            at, shift = at + 1, shift + 7
            if byte < 0x80:
                return value, at

    fields, at = [], 0
    while at < len(data):
        tag, at = varint(at)
        assert tag & 7 == 2, f"field {tag >> 3} has wire type {tag & 7}"
        size, at = varint(at)
        fields.append((tag >> 3, data[at : at + size]))
        at += size
    assert at == len(data)
    return fields


def _predict_request(record: bytes) -> tuple[str, str, dict[str, np.ndarray]]:
    """(model name, signature, inputs) of a serialized PredictionLog: predict_log = 6 →
    request = 1 → model_spec = 1 (name = 1, signature_name = 3), inputs = 2 (map entries)."""
    from tensorflow.core.framework import tensor_pb2

    ((number, predict_log),) = _wire_fields(record)
    assert number == 6
    ((number, request),) = _wire_fields(predict_log)
    assert number == 1
    spec, inputs = {}, {}
    for number, payload in _wire_fields(request):
        if number == 1:
            spec = dict(_wire_fields(payload))
        else:
            assert number == 2
            entry = dict(_wire_fields(payload))
            tensor = tensor_pb2.TensorProto.FromString(entry[2])
            inputs[entry[1].decode()] = tf.make_ndarray(tensor)
    return spec[1].decode(), spec[3].decode(), inputs


@pytest.mark.slow
def test_warmup_file_replays_through_every_signature(exported):
    """TF Serving's warm-up file: a TFRecord of PredictionLogs, two real photos per
    signature, each of which the loaded signature runs, giving Keras's pixels."""
    report, folder, loaded, model = exported
    path = folder / sm.WARMUP_FILE
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    requests = [_predict_request(record) for record in records]
    signatures = [signature for _, signature, _ in requests]
    assert sorted(signatures) == sorted(SIGNATURES * 2)
    assert {name for name, _, _ in requests} == {"drn"}  # the model base folder's name
    assert f"{sm.WARMUP_FILE}: 6 PredictionLogs" in report.to_json()
    keras_float = verification.keras_runner(model)
    sizes = set()
    for _, signature, inputs in requests:
        outputs = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        if signature == "serving_bytes":
            (images,) = inputs["images_bytes"]
            lr = _decode(images)[None]
            sr = _decode(outputs["sr_bytes"].numpy()[0])[None]
        else:
            lr, sr = inputs["images"], outputs["sr"].numpy()
        assert lr.shape[0] == 1 and sr.shape == (1, 4 * lr.shape[1], 4 * lr.shape[2], 3)
        sizes.add(lr.shape[1:3])
        expected = keras_float(lr.astype(np.float32))
        if signature == "serving_default":
            assert verification.agreement(sr, expected)["psnr_db"] >= 60
        else:  # uint8 pixels: Keras's rounded, within one level where float error tips it
            assert np.abs(sr.astype(int) - np.clip(np.round(expected), 0, 255)).max() <= 1
    assert sizes == {(64, 64), (75, 112)}


@pytest.mark.slow
def test_serving_config_files_beside_the_versions(tiny, tmp_path, capsys):
    """--serving-config writes models.config (every version, 'stable' on the one just
    written), batching and monitoring configs into the model base folder."""
    root = tmp_path / "drn_tiny"
    common = ["--model", str(tiny[1]), "--output", str(root), "--serving-config"]
    assert sm.main([*common, "--version", "1"]) == 0
    assert sm.main([*common, "--version", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"-v {root.resolve()}:/models/drn_tiny tensorflow/serving" in printed
    names = sorted(p.name for p in root.iterdir())
    assert names == ["1", "3", sm.BATCHING_CONFIG, sm.MODELS_CONFIG, sm.MONITORING_CONFIG]
    models = (root / sm.MODELS_CONFIG).read_text()
    assert 'name: "drn_tiny"' in models and 'base_path: "/models/drn_tiny"' in models
    assert "specific { versions: 1 versions: 3 }" in models
    assert 'version_labels { key: "stable" value: 3 }' in models
    assert models.count("{") == models.count("}")
    batching = (root / sm.BATCHING_CONFIG).read_text()
    assert "max_batch_size { value: 8 }" in batching and "batch_timeout_micros" in batching
    assert "prometheus_config" in (root / sm.MONITORING_CONFIG).read_text()
    notes = reporting.read_metadata(root / "3")["notes"]
    assert any(sm.MODELS_CONFIG in note for note in notes)
    assert (root / "3" / sm.WARMUP_FILE).is_file()
