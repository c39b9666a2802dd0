"""drn-tf: Dual Regression Networks (Guo et al., CVPR 2020) for super-resolution in Keras 3.

``import drn_tf`` is instant: TensorFlow loads on first use of an export below
(``drn_tf.build_drn``), so the command line can print ``--help`` and silence TensorFlow's logs
before it loads. Keras still finds drn-tf's classes: they are registered as soon as Keras is
loaded, so ``keras.saving.load_model`` opens every file drn-tf writes.

Upscaling in two lines::

    model = drn_tf.load_model("default")        # or a .keras path
    sr = drn_tf.upscale(photo, model)           # uint8/uint16 (H, W[, C]) -> (4H, 4W[, C])
"""

from __future__ import annotations

import importlib
import sys

__version__ = "0.1.0"

# name -> module that defines it; imported on first access (PEP 562).
_EXPORTS = {
    "DRN": "drn_tf.models",
    "DRNConfig": "drn_tf.models",
    "build_drn": "drn_tf.models",
    "build_drn_bundle": "drn_tf.models",
    "build_duals": "drn_tf.models",
    "DualRegressionModel": "drn_tf.dual_regression",
    "load_model": "drn_tf.loading",
    # drn_tf.inference.upscale with a choice of runtime (keras by default); it lives with the
    # exporters whose conversions it runs (they import drn_tf.inference, not the reverse).
    "upscale": "export.runtime",
    "upscale_video": "drn_tf.video",
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
    "upscale_video",
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
        from drn_tf.console import NEEDS_TENSORFLOW

        raise ImportError(NEEDS_TENSORFLOW) from error
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


# --- registering the Keras classes ----------------------------------------------------------
# The modules whose classes a saved file names (their layers come with them).
_SAVED_CLASSES = (_EXPORTS["DRN"], _EXPORTS["DualRegressionModel"])


def _watched(name: str) -> bool:
    """Modules after whose import registering may become possible."""
    return name in ("keras", "tensorflow") or name.startswith("drn_tf.")


class _RegisterOnceKerasLoads:  # a meta path finder (importlib.abc costs 30 ms to import)
    """Imports :data:`_SAVED_CLASSES` as soon as Keras has loaded and neither TensorFlow, Keras
    nor a drn_tf module is half-way through its import (registering would re-enter it), then
    steps aside. Imports of other modules pass untouched."""

    def find_spec(self, name, path=None, target=None):
        if not _watched(name):
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    if spec.loader is not None:
                        spec.loader = _ThenRegister(spec.loader, self)
                    return spec
        return None

    def register_if_ready(self, imported: object) -> None:
        """Registers unless something still loading needs to finish first; ``imported`` has
        just finished (its import machinery clears its loading mark only after this call)."""
        loading = [
            module
            for name, module in list(sys.modules.items())
            if _watched(name)
            and module is not imported
            and getattr(getattr(module, "__spec__", None), "_initializing", False)
        ]
        if "keras" in sys.modules and not loading and self in sys.meta_path:
            sys.meta_path.remove(self)
            for module in _SAVED_CLASSES:
                importlib.import_module(module)


class _ThenRegister:  # a loader
    """A module's own loader, then :meth:`_RegisterOnceKerasLoads.register_if_ready`."""

    def __init__(self, loader, registrar: _RegisterOnceKerasLoads):
        self.loader, self.registrar = loader, registrar

    def __getattr__(self, name: str):  # get_source, get_resource_reader, … of the real loader
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        self.registrar.register_if_ready(module)


if "keras" in sys.modules:  # loaded already: registering costs only drn-tf's own modules
    for _module in _SAVED_CLASSES:
        importlib.import_module(_module)
else:
    sys.meta_path.insert(0, _RegisterOnceKerasLoads())
