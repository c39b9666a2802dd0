"""drn-tf: Dual Regression Networks for super-resolution in TensorFlow/Keras.

Requirements are compatible ranges, so drn-tf can join an existing environment; the exact set
it was tested with is ``constraints.txt`` (``make`` and CI install with ``-c constraints.txt``).
TensorFlow comes from an extra so that CPU and GPU installs do not fight over the same
``tensorflow/`` files: ``pip install .[cpu]`` or ``pip install .[gpu]``.
"""

from setuptools import find_packages, setup

setup(
    name="drn-tf",
    version="0.1.0",
    description="Dual Regression Networks (DRN, CVPR 2020) for super-resolution in Keras",
    license="Apache-2.0",
    # Keras 3.15 needs >= 3.11; TensorFlow 2.21 ships wheels for 3.10 to 3.13.
    python_requires=">=3.11,<3.14",
    packages=find_packages(include=["drn_tf", "drn_tf.*", "export", "export.*"]),
    package_data={
        "drn_tf": ["weights/*.keras", "assets/*", "assets/calibration/*", "assets/held_out/*"],
        "export": ["tensorrt_onnx_ops.txt"],
    },
    install_requires=[
        "keras>=3.15,<4",
        "numpy>=2.0,<3",
        "pillow>=11.0,<14",
        "tqdm>=4.66,<5",
        "av>=18,<20",  # PyAV (FFmpeg in-process) for videos; 18 writes rotation (display matrix)
        "matplotlib>=3.10,<4",
        "tensorboard>=2.20,<3",  # TF 2.21 no longer pulls it in; tf.summary needs it
    ],
    extras_require={
        "cpu": ["tensorflow-cpu>=2.21,<2.22"],
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
        # nbformat/nbclient/ipykernel: tests/test_notebooks.py runs examples/*.ipynb.
        "test": [
            "pytest>=9.0,<10",
            "ruff>=0.17,<0.18",  # `ruff format --check` differs between minor versions
            "packaging>=24.0",
            "nbformat>=5.10,<6",
            "nbclient>=0.11,<0.12",
            "ipykernel>=7.0,<8",
        ],
        # Exporters (python -m export.<format>), from the versions they were tested with: their
        # graph and quantization APIs move between minor releases. TensorRT is never required:
        # export.trt uses it only where it is already installed.
        "export": [
            "tf2onnx>=1.17,<2",
            "onnx>=1.23,<2",
            "onnxruntime>=1.32,<2",
            "ai-edge-litert>=2.3,<3",
            "openvino>=2026.4,<2027",
            "nncf>=3.4,<4",
        ],
        # The authors' architecture in PyTorch, for benchmarks/ (latency side by side, GEMM
        # peaks). Not needed to read their checkpoints: drn_tf.torch_checkpoints reads .pt without
        # torch.
        "compare": ["torch>=2.13,<3"],
    },
    entry_points={"console_scripts": ["drn-tf=drn_tf.cli:run"]},
)
