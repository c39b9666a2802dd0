"""drn-tf: Dual Regression Networks (Guo et al., CVPR 2020) for super-resolution in Keras 3.

``import drn_tf`` is instant: TensorFlow loads on first use of an export below
(``drn_tf.build_drn``), so the command line can print ``--help`` and silence TensorFlow's logs
before it loads.

Upscaling in two lines::

    model = drn_tf.load_model("default")        # or a .keras path
    sr = drn_tf.upscale(photo, model)           # uint8/uint16 (H, W[, C]) -> (4H, 4W[, C])
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it; imported on first access (PEP 562).
_EXPORTS = {
    "DRN": "drn_tf.models",
    "DRNConfig": "drn_tf.models",
    "build_drn": "drn_tf.models",
    "build_drn_bundle": "drn_tf.models",
    "build_duals": "drn_tf.models",
    "DualRegressionModel": "drn_tf.training",
    "load_model": "drn_tf.inference",
    "upscale": "drn_tf.inference",
}

__all__ = [
    "DRN",
    "DRNConfig",
    "DualRegressionModel",
    "build_drn",
    "build_drn_bundle",
    "build_duals",
    "load_model",
    "upscale",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'drn_tf' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as error:  # pragma: no cover - depends on the install
        if error.name not in ("tensorflow", "keras"):
            raise
        raise ImportError(
            "drn-tf needs TensorFlow: install it with `pip install 'drn-tf[cpu]'` "
            "(or `'drn-tf[gpu]'` on a CUDA machine)"
        ) from error
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
