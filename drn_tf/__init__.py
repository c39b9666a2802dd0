"""drn-tf: Dual Regression Networks (Guo et al., CVPR 2020) for super-resolution in Keras 3."""

try:
    import tensorflow  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(
        "drn-tf needs TensorFlow: install it with `pip install 'drn-tf[cpu]'` "
        "(or `'drn-tf[gpu]'` on a CUDA machine)"
    ) from error

from drn_tf.models import DRN, DRNConfig, build_drn, build_drn_bundle, build_duals
from drn_tf.training import DualRegressionModel  # registered, so trained files load anywhere

__all__ = [
    "DRN",
    "DRNConfig",
    "DualRegressionModel",
    "build_drn",
    "build_drn_bundle",
    "build_duals",
]
__version__ = "0.1.0"
