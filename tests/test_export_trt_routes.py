"""TensorRT route probing (export/trt_routes.py): which route is chosen, what a missing one
names, and the TF-TRT, tensorrt and GPU probes.

No GPU and no tensorrt exist here or in CI: the probes are faked where a test needs them.
"""

import stat
import sys
import types
from pathlib import Path

import pytest

from export import trt_routes


def fake_probes(monkeypatch, tf_trt=False, tensorrt=None, gpus=0):
    monkeypatch.setattr(trt_routes, "tf_trt_available", lambda: tf_trt)
    monkeypatch.setattr(trt_routes, "tensorrt_version", lambda: tensorrt)
    monkeypatch.setattr(trt_routes, "cuda_device_count", lambda: gpus)


# --- routes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tf_trt, tensorrt, gpus, route",
    [
        (True, None, 0, trt_routes.TF_TRT),  # TF-TRT probes GPUs through TensorFlow itself
        (True, "10.8.0", 1, trt_routes.TF_TRT),
        (False, "10.8.0.43", 1, trt_routes.ONNX_TENSORRT),
        (False, "11.4.0.106", 2, trt_routes.ONNX_TENSORRT),
    ],
)
def test_route_selection(monkeypatch, tf_trt, tensorrt, gpus, route):
    fake_probes(monkeypatch, tf_trt, tensorrt, gpus)
    assert trt_routes.choose_route() == route


@pytest.mark.parametrize(
    "tensorrt, gpus, named, not_named",
    [
        (None, 1, "the tensorrt Python package", "CUDA GPU"),
        ("10.8.0", 0, "a CUDA GPU", "tensorrt Python package"),
        ("8.6.1", 1, "tensorrt >= 10 (found 8.6.1", "CUDA GPU"),
        (None, 0, "tensorrt Python package (pip install tensorrt", "nothing"),
    ],
)
def test_no_route_names_what_is_missing(monkeypatch, tensorrt, gpus, named, not_named):
    fake_probes(monkeypatch, False, tensorrt, gpus)
    with pytest.raises(trt_routes.NoRoute) as raised:
        trt_routes.choose_route()
    message = str(raised.value)
    assert named in message and not_named not in message and "TF-TRT" in message
    if tensorrt is None and gpus == 0:
        assert "a CUDA GPU" in message


def test_tf_trt_probe_follows_the_build_info():
    import tensorflow as tf

    if not tf.sysconfig.get_build_info().get("is_tensorrt_build", False):
        assert trt_routes.tf_trt_available() is False  # tensorflow-cpu 2.21 here and in CI


def test_tensorrt_probe(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    assert trt_routes.tensorrt_version() is None
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.9.0.34"))
    assert trt_routes.tensorrt_version() == "10.9.0.34"


class FakeCudart:
    def __init__(self, status, count):
        self.status, self.count = status, count

    def cudaGetDeviceCount(self, pointer):
        pointer._obj.value = self.count
        return self.status


def test_gpu_probe_uses_the_cuda_runtime(monkeypatch):
    monkeypatch.setattr(trt_routes, "load_cudart", lambda: FakeCudart(0, 3))
    assert trt_routes.cuda_device_count() == 3
    # cudaErrorNoDevice (100), e.g. a driver without a GPU: no device, whatever count says.
    monkeypatch.setattr(trt_routes, "load_cudart", lambda: FakeCudart(100, 7))
    assert trt_routes.cuda_device_count() == 0


def fake_nvidia_smi(folder: Path, output: str, status: int = 0) -> None:
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '{output}'\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_gpu_probe_falls_back_to_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.setattr(trt_routes, "load_cudart", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert trt_routes.cuda_device_count() == 0  # no nvidia-smi
    fake_nvidia_smi(
        tmp_path, "GPU 0: NVIDIA H100 (UUID: GPU-1)\\nGPU 1: NVIDIA H100 (UUID: GPU-2)\\n"
    )
    assert trt_routes.cuda_device_count() == 2
    fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed: no driver\\n", status=9)
    assert trt_routes.cuda_device_count() == 0
