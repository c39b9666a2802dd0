"""Exporters of DRN models for deployment, one ``python -m export.<format>`` each:

- ``saved_model``: SavedModel for TF Serving (``DIR/<version>/``; float32, uint8 and encoded-image
  signatures);
- ``trt``: TensorRT (TF-TRT SavedModel, or an engine built from ONNX);
- ``tflite``: TFLite / LiteRT (none, float16, dynamic-range or int8 quantization);
- ``onnx``: ONNX through tf2onnx;
- ``openvino``: OpenVINO IR (fp32, bf16 hint, or NNCF int8).

What they share: :mod:`export.base` (errors, loading, stage lines, the command line),
:mod:`export.staging` (atomic writing), :mod:`export.photo_sets` (calibration and verification
photos), :mod:`export.verification` (against Keras, timing) and :mod:`export.reporting` (the
metadata JSON).
"""
