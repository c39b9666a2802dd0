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
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from drn_tf.config import UsageError, run_command, setting
from export import base

PROG = "python -m export.saved_model"

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
) -> base.Report:
    """Exports ``model`` (``"default"``, a ``.keras`` path or a loaded :class:`base.Source`) to
    the TF Serving model base folder ``output`` as version ``version``: ``output/<version>/``.

    The version folder is written beside its final place and renamed in only when complete and
    verified (``serving_default`` loaded with ``tf.saved_model.load``, ≥ 60 dB against Keras).
    An existing version is an error unless ``overwrite``; it is then replaced by a rename, never
    rewritten in place, so no reader sees a half-written version. (A running TF Serving keeps
    a version number it has loaded: give a new model a higher ``version``.)
    """
    import tensorflow as tf

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

    with base.staged(destination, overwrite) as temp:
        _write(source.model, temp)
        loaded = tf.saved_model.load(str(temp))
        serving_default = loaded.signatures["serving_default"]

        def runner(images):
            return serving_default(images=tf.constant(images, tf.float32))["sr"].numpy()

        return base.finish(
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
            },
            timing_runs=timing_runs,
            notes=[
                "TF Serving: --model_base_path=" + str(output.resolve()),
                "server-side batching joins serving_default/serving_uint8 requests only when "
                "their H×W are equal; serving_bytes requests batch whatever their sizes",
            ],
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


def _cli(flags: Flags, extra: list[str]) -> None:
    if not flags.output:
        raise UsageError("--output is required (TF Serving's model base folder)")
    if flags.version < 1:
        raise UsageError(f"--version must be >= 1, got {flags.version}")
    model = base.packaged_or_path(flags.model, flags.scale)
    report = export_saved_model(
        model, flags.output, version=flags.version, overwrite=flags.overwrite
    )
    print(report.summary())


def main(argv: list[str] | None = None) -> int:
    """``python -m export.saved_model``; returns the exit status."""
    return run_command(PROG, Flags, _cli, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
