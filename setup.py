"""drn-tf: Dual Regression Networks for super-resolution in TensorFlow/Keras.

Versions are pinned to the set measured to co-install (see BUILD_NOTES.md). TensorFlow comes
from an extra so that CPU and GPU installs do not fight over the same ``tensorflow/`` files:
``pip install .[cpu]`` or ``pip install .[gpu]``.
"""

from setuptools import find_packages, setup

setup(
    name="drn-tf",
    version="0.1.0",
    description="Dual Regression Networks (DRN, CVPR 2020) for super-resolution in Keras",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["drn_tf", "drn_tf.*", "export", "export.*"]),
    package_data={"drn_tf": ["weights/*.keras", "assets/*"]},
    install_requires=[
        "keras==3.15.1",
        "numpy==2.4.6",
        "pillow==13.0.0",
        "protobuf==7.36.2",
        "ml_dtypes==0.6.0",
        "h5py==3.14.0",
        "tqdm==4.70.1",
        "matplotlib==3.11.2",
        "tensorboard==2.21.0",  # TF 2.21 no longer pulls it in; tf.summary needs it
    ],
    extras_require={
        "cpu": ["tensorflow-cpu==2.21.0"],
        "gpu": ["tensorflow[and-cuda]==2.21.0"],
        # nbformat/nbclient/ipykernel: tests/test_notebooks.py runs examples/*.ipynb.
        "test": [
            "pytest==9.2.0",
            "ruff==0.17.6",
            "nbformat==5.11.1",
            "nbclient==0.11.0",
            "ipykernel==7.4.0",
        ],
        # Exporters (python -m export.<format>): co-install with TF 2.21, protobuf 7, numpy 2.4.
        # TensorRT is never required: export.trt uses it only where it is already installed.
        "export": [
            "tf2onnx==1.17.0",
            "onnx==1.23.2",
            "onnxruntime==1.32.0",
            "ai-edge-litert==2.3.0",
            "openvino==2026.4.1",
            "nncf==3.4.0",
        ],
        # The authors' architecture in PyTorch, for benchmarks/ (latency side by side, GEMM
        # peaks). Not needed to read their checkpoints: drn_tf.convert reads .pt without torch.
        "compare": ["torch==2.13.0"],
    },
    entry_points={"console_scripts": ["drn-tf=drn_tf.cli:run"]},
)
