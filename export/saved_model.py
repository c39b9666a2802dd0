"""SavedModel for TF Serving: ``python -m export.saved_model --model M --output DIR [--version N]``.

Writes ``DIR/<N>/`` (TF Serving's layout: a model base folder holding numbered versions) with
three signatures, all computing :func:`drn_tf.serving.super_resolve` of the primal network:

- ``serving_default``: ``images`` float32 ``(N, H, W, 3)`` on 0..255 → ``sr`` float32
  ``(N, s·H, s·W, 3)``, not clipped (apply :func:`drn_tf.serving.to_pixels` for pixels);
- ``serving_uint8``: ``images`` uint8 ``(N, H, W, 3)`` → ``sr`` uint8 ``(N, s·H, s·W, 3)``,
  the pixels :func:`drn_tf.inference.upscale` gives;
- ``serving_bytes``: ``images_bytes`` string ``(N,)`` of encoded PNG/JPEG images, each its own
  size → ``sr_bytes`` string ``(N,)`` of PNG-encoded uint8 SR images (the same pixels).

Over REST, TF Serving base64-decodes ``{"b64": …}`` values before the graph sees them and
base64-encodes outputs whose name ends in ``_bytes``, hence the names. Built with Keras' own
``ExportArchive``, which saves the model's variables so that TF Serving's graph-mode loader
(and ``saved_model_cli run``) can restore them.

Each version holds TF Serving's warm-up file, ``assets.extra/tf_serving_warmup_requests``
(:data:`WARMUP_FILE`): a TFRecord of ``tensorflow.serving.PredictionLog`` protos, two real
photos per signature (:data:`WARMUP_SIZES`), which TF Serving replays when it loads the
version so that the first client request does not pay for graph optimisation and kernel
set-up. The protos are encoded here by hand (:func:`prediction_log`): the
``tensorflow-serving-api`` package pins a TensorFlow with CUDA.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from drn_tf.console import run_command
from drn_tf.flags import UsageError, setting
from export import base, photo_sets, reporting, staging, verification

PROG = "python -m export.saved_model"

#: TF Serving's warm-up file inside a version folder.
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
#: The LR sizes of the warm-up requests: a square crop and the sample photo (75 × 112 at ×4).
WARMUP_SIZES = ("a held-out 64x64 crop", "the sample photo's LR")

#: What each signature is, for the metadata (names, dtypes and shapes come from the artifact).
SIGNATURES = {
    "serving_default": "float32 NHWC 0..255 -> float32 NHWC (x scale), not clipped; pixels: "
    + base.PIXEL_STEP,
    "serving_uint8": "uint8 NHWC -> uint8 NHWC (x scale), the pixels of drn_tf.inference.upscale",
    "serving_bytes": 'encoded PNG/JPEG images, each its own size (REST: {"b64": ...}) -> '
    "PNG-encoded uint8 SR images (REST: base64, the output name ends in _bytes); decoded by "
    "tf.io.decode_image: alpha dropped, no EXIF rotation, JPEG pixels as TensorFlow decodes them",
}


def export_saved_model(
    model: str | os.PathLike | base.Source,
    output: str | os.PathLike,
    *,
    version: int = 1,
    overwrite: bool = False,
    timing_runs: int = 10,
    serving_config: bool = False,
) -> reporting.Report:
    """Exports ``model`` (``"default"``, a ``.keras`` path or a loaded :class:`base.Source`) to
    the TF Serving model base folder ``output`` as version ``version``: ``output/<version>/``.

    The version folder is written beside its final place and renamed in only when complete and
    verified (``serving_default`` loaded with ``tf.saved_model.load``, ≥ 60 dB against Keras).
    An existing version is an error unless ``overwrite``; it is then replaced by a rename, never
    rewritten in place, so no reader sees a half-written version. (A running TF Serving keeps
    a version number it has loaded: give a new model a higher ``version``.)

    ``serving_config``: also write TF Serving's configuration files beside the version
    folders (:func:`write_serving_config`).
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"--version: must be a whole number >= 1, got {version!r}")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise base.ExportError(f"{output}: not a folder (TF Serving's model base folder)")
    destination = output / str(version)
    if destination.exists() and not overwrite:
        raise base.ExportError(
            f"{destination}: version {version} already exists; pass a higher --version "
            f"(--version {_next_version(output)}) or --overwrite to replace it"
        )
    source = model if isinstance(model, base.Source) else base.load_source(model)
    notes = []
    if serving_config:
        files = ", ".join((MODELS_CONFIG, BATCHING_CONFIG, MONITORING_CONFIG))
        notes = [f"TF Serving configuration in {output}: {files}", serving_command(output)]
    report = _export(source, output, destination, version, overwrite, timing_runs, notes)
    if serving_config:
        write_serving_config(output, version)
    return report


def _export(
    source: base.Source,
    output: Path,
    destination: Path,
    version: int,
    overwrite: bool,
    timing_runs: int,
    notes: list[str],
) -> reporting.Report:
    """Writes, verifies and moves into place the version folder ``destination``."""
    import tensorflow as tf

    with staging.staged(destination, overwrite) as temp:
        base.progress("converting to a SavedModel (3 signatures)")
        _write(source.model, temp)
        requests = write_warmup(temp, output.name or "drn")
        loaded = tf.saved_model.load(str(temp))
        serving_default = loaded.signatures["serving_default"]

        def runner(images):
            return serving_default(images=tf.constant(images, tf.float32))["sr"].numpy()

        return verification.finish(
            format="saved_model",
            source=source,
            staged_path=temp,
            output=destination,
            runner=runner,
            precision="fp32",
            io={
                "layout": "NHWC",
                "value_range": "0..255",
                "dynamic_dims": ["batch", "height", "width"],
                "pixel_step": base.PIXEL_STEP,
                "model_base_path": str(output.resolve()),
                "version": version,
                "signatures": _signature_io(loaded),
                "warmup": f"{WARMUP_FILE}: {requests} PredictionLogs, "
                + f"{len(WARMUP_SIZES)} per signature ({', '.join(WARMUP_SIZES)})",
            },
            timing_runs=timing_runs,
            notes=[
                "TF Serving: --model_base_path=" + str(output.resolve()),
                "server-side batching joins serving_default/serving_uint8 requests only when "
                "their H×W are equal; serving_bytes requests batch whatever their sizes",
                *notes,
            ],
        )


#: TF Serving's configuration files (:func:`write_serving_config`), in the model base folder.
MODELS_CONFIG = "models.config"
BATCHING_CONFIG = "batching_parameters.txt"
MONITORING_CONFIG = "monitoring.config"
#: Where TF Serving's Docker image looks for models: the base folder is mounted at
#: ``/models/<its name>`` (:func:`serving_command`).
DOCKER_MODELS = "/models"


def write_serving_config(output: str | os.PathLike, stable: int) -> list[Path]:
    """Writes TF Serving's configuration files into the model base folder ``output`` (text
    protos, replaced atomically) and returns their paths:

    - :data:`MODELS_CONFIG` (``--model_config_file``): the model, named as the folder, at
      ``/models/<name>`` (the Docker layout), serving every version folder present, with the
      version label ``stable`` on version ``stable``;
    - :data:`BATCHING_CONFIG` (``--batching_parameters_file``): batches of up to 8 requests,
      waiting at most 5 ms (requests join a batch only when their H×W are equal);
    - :data:`MONITORING_CONFIG` (``--monitoring_config_file``): Prometheus metrics at
      ``/monitoring/prometheus/metrics`` on the REST port.
    """
    from drn_tf.files import atomic_path

    output = Path(output)
    versions = sorted(int(p.name) for p in output.iterdir() if p.is_dir() and p.name.isdigit())
    if stable not in versions:
        raise base.ExportError(f"{output}: no version {stable} to label stable")
    name = output.resolve().name
    policy = " ".join(f"versions: {v}" for v in versions)
    contents = {
        MODELS_CONFIG: f"""model_config_list {{
  config {{
    name: "{name}"
    base_path: "{DOCKER_MODELS}/{name}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ {policy} }} }}
    version_labels {{ key: "stable" value: {stable} }}
  }}
}}
""",
        BATCHING_CONFIG: f"""max_batch_size {{ value: 8 }}
batch_timeout_micros {{ value: 5000 }}
max_enqueued_batches {{ value: 100 }}
num_batch_threads {{ value: {os.cpu_count() or 1} }}
""",
        MONITORING_CONFIG: """prometheus_config {
  enable: true
  path: "/monitoring/prometheus/metrics"
}
""",
    }
    written = []
    for file_name, text in contents.items():
        with atomic_path(output / file_name) as temp:
            temp.write_text(text)
        written.append(output / file_name)
    return written


def serving_command(output: str | os.PathLike) -> str:
    """The ``docker run`` line that serves the model base folder ``output`` with the files of
    :func:`write_serving_config` (gRPC on 8500, REST on 8501)."""
    output = Path(output).resolve()
    mounted = f"{DOCKER_MODELS}/{output.name}"
    return (
        f"docker run -p 8500:8500 -p 8501:8501 -v {output}:{mounted} tensorflow/serving "
        f"--model_config_file={mounted}/{MODELS_CONFIG} --enable_batching "
        f"--batching_parameters_file={mounted}/{BATCHING_CONFIG} "
        f"--monitoring_config_file={mounted}/{MONITORING_CONFIG}"
    )


def _write(model: Any, folder: Path) -> None:
    """Writes the SavedModel of ``model``'s primal network with the three signatures."""
    import keras
    import tensorflow as tf

    from drn_tf import serving

    def sr_float(images):
        return {"sr": serving.super_resolve(model, images)}

    def sr_uint8(images):
        return {"sr": serving.super_resolve_uint8(model, images)}

    def sr_one_png(data):
        # expand_animations=False: a GIF gives its first frame, 3-D like every other format
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        return tf.io.encode_png(serving.super_resolve_uint8(model, image[None])[0])

    def sr_bytes(images_bytes):
        # one image at a time: every image in the batch may have its own size
        pngs = tf.map_fn(sr_one_png, images_bytes, fn_output_signature=tf.string)
        return {"sr_bytes": pngs}

    # No archive.track(model): add_endpoint already saves the variables the endpoints use,
    # and tracking the Keras model too stores every weight twice (measured: 1.9 MB, not 0.94).
    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", sr_float, [serving.FLOAT_SPEC])
    archive.add_endpoint("serving_uint8", sr_uint8, [serving.UINT8_SPEC])
    bytes_spec = tf.TensorSpec([None], tf.string, name="images_bytes")
    archive.add_endpoint("serving_bytes", sr_bytes, [bytes_spec])
    archive.write_out(str(folder), verbose=False)


def warmup_inputs() -> dict[str, list[dict[str, Any]]]:
    """The warm-up requests' inputs by signature: ``{signature: [{input name: array}]}``,
    real photos (:data:`WARMUP_SIZES`) as float32, uint8 and PNG bytes, batch 1."""
    import io

    from PIL import Image

    probes = photo_sets.probe_images(4)
    held_out = next(images for name, images in probes if name.startswith("held_out_"))
    photos = [held_out, probes[0][1]]
    inputs: dict[str, list[dict[str, Any]]] = {name: [] for name in SIGNATURES}
    for photo in photos:
        pixels = np.round(np.clip(photo, 0, 255)).astype(np.uint8)
        png = io.BytesIO()
        Image.fromarray(pixels[0]).save(png, format="PNG")
        inputs["serving_default"].append({"images": photo.astype(np.float32)})
        inputs["serving_uint8"].append({"images": pixels})
        inputs["serving_bytes"].append({"images_bytes": np.array([png.getvalue()], object)})
    return inputs


def write_warmup(folder: str | os.PathLike, model_name: str) -> int:
    """Writes :data:`WARMUP_FILE` in the version ``folder``: a PredictionLog per request of
    :func:`warmup_inputs`. Returns the number of requests."""
    import tensorflow as tf

    path = Path(folder) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, requests in warmup_inputs().items():
            for inputs in requests:
                tensors = {key: tf.make_tensor_proto(value) for key, value in inputs.items()}
                writer.write(prediction_log(model_name, signature, tensors))
                count += 1
    return count


def prediction_log(model_name: str, signature: str, inputs: dict[str, Any]) -> bytes:
    """A serialized ``tensorflow.serving.PredictionLog`` holding a ``PredictLog`` whose
    ``PredictRequest`` asks ``model_name``'s ``signature`` for ``inputs`` (name →
    ``tensorflow.TensorProto``), in protobuf's wire format, field numbers from
    ``tensorflow_serving/apis/{prediction_log,predict,model}.proto``:
    ``PredictionLog.predict_log = 6``; ``PredictLog.request = 1``; ``PredictRequest.model_spec
    = 1``, ``.inputs = 2`` (a map: entries of ``key = 1``, ``value = 2``); ``ModelSpec.name =
    1``, ``.signature_name = 3``."""
    spec = _field(1, model_name.encode()) + _field(3, signature.encode())
    entries = b"".join(
        _field(2, _field(1, key.encode()) + _field(2, tensor.SerializeToString()))
        for key, tensor in inputs.items()
    )
    return _field(6, _field(1, _field(1, spec) + entries))


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _signature_io(loaded: Any) -> dict[str, dict]:
    """Each signature's input and output names, dtypes and shapes (-1: dynamic), as written."""

    def spec(tensor) -> dict:
        return {
            "dtype": tensor.dtype.name,
            "shape": [-1 if d is None else d for d in tensor.shape.as_list()],
        }

    return {
        name: {
            "description": SIGNATURES.get(name, ""),
            "inputs": {k: spec(v) for k, v in function.structured_input_signature[1].items()},
            "outputs": {k: spec(v) for k, v in function.structured_outputs.items()},
        }
        for name, function in loaded.signatures.items()
    }


def _next_version(output: Path) -> int:
    versions = [int(p.name) for p in output.iterdir() if p.name.isdigit()]
    return max(versions, default=0) + 1


# --- command line --------------------------------------------------------------------------


@dataclasses.dataclass
class Flags:
    """Exports a DRN model as a SavedModel for TF Serving (OUTPUT/VERSION/, signatures
    serving_default, serving_uint8 and serving_bytes), verified against Keras and timed."""

    model: str = setting("default", base.MODEL_HELP)
    scale: int | None = setting(None, base.SCALE_HELP)
    output: str | None = setting(
        None, "TF Serving's model base folder (required); the model goes to OUTPUT/VERSION/."
    )
    version: int = setting(1, "The version number, i.e. the sub-folder of OUTPUT written.")
    overwrite: bool = setting(
        False, "Replace an existing OUTPUT/VERSION/ (renamed into place once complete)."
    )
    serving_config: bool = setting(
        False,
        "Also write TF Serving's models.config (every version, label 'stable' on this one), "
        "batching_parameters.txt and monitoring.config into OUTPUT.",
    )


def _cli(flags: Flags, extra: list[str]) -> None:
    if not flags.output:
        raise UsageError("--output is required (TF Serving's model base folder)")
    if flags.version < 1:
        raise UsageError(f"--version must be >= 1, got {flags.version}")
    model = base.packaged_or_path(flags.model, flags.scale)
    report = export_saved_model(
        model,
        flags.output,
        version=flags.version,
        overwrite=flags.overwrite,
        serving_config=flags.serving_config,
    )
    print(report.summary())


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """``python -m export.saved_model`` (also ``drn-tf export saved_model``); returns the exit
    status."""
    return run_command(prog, Flags, _cli, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
