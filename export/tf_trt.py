"""Route 1 of :mod:`export.trt`: a TF-TRT SavedModel, for a TensorFlow built with TensorRT
(NVIDIA's TensorFlow containers; no TensorFlow ≥ 2.18 wheel is) that sees a GPU.

``TrtGraphConverterV2`` converts the serving function (signature ``serving_default``: float32
NHWC ``images`` on 0..255 → ``sr``) with dynamic shapes over the profile; TF Serving loads the
folder it writes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from export import base
from export import onnx as onnx_export


def tf_trt_saved_model(source, folder: Path, precision, batches, shapes) -> base.Runner:
    """Writes a TF-TRT SavedModel of the serving function to ``folder``; returns its runner.

    Not run on any machine of this project (no TensorFlow with TensorRT was available).
    """
    import keras
    import tensorflow as tf
    from tensorflow.python.compiler.tensorrt import trt_convert as tftrt

    from drn_tf import serving

    model = source.model
    with tempfile.TemporaryDirectory() as saved:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serving_default",
            lambda images: {onnx_export.OUTPUT_NAME: serving.super_resolve(model, images)},
            input_signature=[serving.FLOAT_SPEC],
        )
        archive.write_out(saved, verbose=False)
        mode = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}[precision]
        converter = tftrt.TrtGraphConverterV2(
            input_saved_model_dir=saved,
            conversion_params=tftrt.TrtConversionParams(
                precision_mode=mode, use_calibration=precision == "int8"
            ),
            use_dynamic_shape=True,
            dynamic_shape_profile_strategy="Range",
        )
        if precision == "int8":
            converter.convert(calibration_input_fn=lambda: ((b["images"],) for b in batches))
        else:
            converter.convert()
        converter.build(input_fn=lambda: ((np.zeros(s, np.float32),) for s in shapes))
        converter.save(str(folder))
    loaded = tf.saved_model.load(str(folder))
    signature = loaded.signatures["serving_default"]

    def run(images, _keep=loaded):
        return signature(images=tf.constant(images, tf.float32))[onnx_export.OUTPUT_NAME].numpy()

    return run
