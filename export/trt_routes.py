"""Which TensorRT route this machine has (see :mod:`export.trt`), probed without a GPU run.

1. **tf-trt** (:data:`TF_TRT`): the running TensorFlow was built with TensorRT and sees a GPU
   (:func:`tf_trt_available`);
2. **onnx-tensorrt** (:data:`ONNX_TENSORRT`): the ``tensorrt`` Python package (≥ 10) imports
   (:func:`tensorrt_version`) and a CUDA GPU is present (:func:`cuda_device_count`, through the
   CUDA runtime or ``nvidia-smi``, not through the import, which succeeds without a GPU).

:func:`choose_route` picks one or raises :class:`NoRoute` naming what is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import shutil
import subprocess
import sysconfig

TF_TRT, ONNX_TENSORRT = "tf-trt", "onnx-tensorrt"


class NoRoute(Exception):
    """Neither TensorRT route is possible here: exit status 2 with one line (not a
    ``ValueError``, so ``run_command`` does not turn it into status 1)."""


def tf_trt_available() -> bool:
    """Whether the running TensorFlow was built with TensorRT, has it enabled, and sees a GPU.

    Uses the build info and ``is_tensorrt_enabled`` only: TF 2.17's
    ``get_loaded_tensorrt_version`` aborts the process when the TensorRT libraries are absent.
    """
    try:
        import tensorflow as tf

        if not tf.sysconfig.get_build_info().get("is_tensorrt_build", False):
            return False
        from tensorflow.python.compiler.tensorrt import trt_convert

        return bool(trt_convert._pywrap_py_utils.is_tensorrt_enabled()) and bool(
            tf.config.list_physical_devices("GPU")
        )
    except Exception:  # noqa: BLE001 - any failure to probe means "not usable"
        return False


def tensorrt_version() -> str | None:
    """The version of the importable ``tensorrt`` package, or None."""
    try:
        import tensorrt
    except Exception:  # noqa: BLE001 - ImportError, or a broken install failing inside its import
        return None
    return str(getattr(tensorrt, "__version__", "0"))


def load_cudart() -> ctypes.CDLL | None:
    """The CUDA runtime library (a system install or the ``nvidia-cuda-runtime`` wheels), or
    None."""
    names = [ctypes.util.find_library("cudart"), "libcudart.so"]
    names += [f"libcudart.so.{v}" for v in (13, 12, 11.0)]
    site = sysconfig.get_paths()["purelib"]
    names += sorted(glob.glob(f"{site}/nvidia/*/lib/libcudart.so*"), reverse=True)
    names += sorted(glob.glob("/usr/local/cuda*/lib64/libcudart.so*"), reverse=True)
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def cuda_device_count() -> int:
    """How many CUDA GPUs this process can use: ``cudaGetDeviceCount`` when the CUDA runtime
    library loads, else the ``GPU n:`` lines of ``nvidia-smi -L``; 0 when neither finds one."""
    cudart = load_cudart()
    if cudart is not None:
        count = ctypes.c_int(0)
        return count.value if cudart.cudaGetDeviceCount(ctypes.byref(count)) == 0 else 0
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if listing.returncode != 0:
        return 0
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


def choose_route() -> str:
    """:data:`TF_TRT` or :data:`ONNX_TENSORRT` (see the module docstring); raises
    :class:`NoRoute` naming what is missing for each."""
    if tf_trt_available():
        return TF_TRT
    version = tensorrt_version()
    gpus = cuda_device_count()
    major = int(version.split(".")[0]) if version and version.split(".")[0].isdigit() else 0
    if version and major >= 10 and gpus > 0:
        return ONNX_TENSORRT
    missing = []
    if not version:
        missing.append("the tensorrt Python package (pip install tensorrt on a CUDA host)")
    elif major < 10:
        missing.append(f"tensorrt >= 10 (found {version}: pip install -U tensorrt)")
    if gpus == 0:
        missing.append("a CUDA GPU (none found by the CUDA runtime or nvidia-smi)")
    raise NoRoute(
        "no TensorRT route here: TF-TRT needs a TensorFlow built with TensorRT and a GPU "
        "(NVIDIA's TensorFlow containers; no TensorFlow >= 2.18 wheel has it); ONNX -> TensorRT "
        f"needs {' and '.join(missing)}; --onnx-only writes the TensorRT-ready ONNX without either"
    )
