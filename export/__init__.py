"""Exporters of DRN models for deployment, one ``python -m export.<format>`` each:

- ``saved_model``: SavedModel for TF Serving (``DIR/<version>/``; float32, uint8 and encoded-image
  signatures);
- ``trt``: TensorRT (TF-TRT SavedModel, or an engine built from ONNX);
- ``tflite``: TFLite / LiteRT (none, float16, dynamic-range or int8 quantization);
- ``onnx``: ONNX through tf2onnx;
- ``openvino``: OpenVINO IR (fp32, bf16 hint, or NNCF int8).

:mod:`export.base` holds what they share: loading, staged writing, verification, timing and
metadata.
"""
