"""Which precision to compute in: one rule for upscaling and for training.

``auto`` picks by what the hardware does fast, decided from its capabilities (no timing probe,
so the choice is instant and the same on every run):

* a GPU: ``mixed_float16`` for training (tensor cores, loss scaling in Keras); ``float32`` for
  upscaling, whose exact pixels are the reference (a GPU is fast enough in float32). Without
  a GPU, ``mixed_float16`` asked for by name is refused: CPUs emulate float16;
* a CPU that computes bf16 natively (:func:`drn_tf.cpu.native_bf16`: AMX, Intel Sapphire Rapids
  and later, or AVX-512 BF16, AMD Zen 4 and later): ``mixed_bfloat16``. With AMX it is 2-3×
  faster than float32, within 0.05 dB on Set5 ×4; on an AMD EPYC with AVX-512 BF16 upscaling is
  1.8-2.0× and a training step 1.3-2.0× faster (``docs/speed_epyc_avx512.md``);
* any other CPU: ``float32`` (bfloat16 without bf16 instructions is emulated and slower).

The names returned are Keras dtype policies (``keras.mixed_precision.set_global_policy``).
This module imports TensorFlow only to look for a GPU, and only when asked.
"""

from __future__ import annotations

from drn_tf.cpu import native_bf16

__all__ = [
    "TRAINING_PRECISIONS",
    "UPSCALE_PRECISIONS",
    "auto_policy",
    "resolve_precision",
]

#: What ``--precision`` takes for upscaling (``bfloat16`` means the Keras policy mixed_bfloat16).
UPSCALE_PRECISIONS = ("auto", "float32", "bfloat16")
#: What ``--precision`` takes for training: Keras policy names, or ``auto``.
TRAINING_PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def auto_policy(training: bool = False) -> str:
    """The Keras dtype policy ``auto`` stands for on this machine (see the module docstring)."""
    if _has_gpu():
        return "mixed_float16" if training else "float32"
    return "mixed_bfloat16" if native_bf16() else "float32"


def resolve_precision(precision: str, training: bool = False) -> str:
    """A ``--precision`` value → a Keras dtype policy name.

    Args:
        precision: for upscaling one of :data:`UPSCALE_PRECISIONS`; for training one of
            :data:`TRAINING_PRECISIONS`.
        training: which of the two it is for (``auto`` differs on a GPU).

    Returns:
        ``"float32"``, ``"mixed_bfloat16"`` or (training only) ``"mixed_float16"``.

    Raises:
        ValueError: an unknown name, e.g. ``"float16"`` or, for upscaling, ``"mixed_float16"``;
            or ``"mixed_float16"`` on a machine without a GPU, which would train several
            times slower than float32 (CPUs emulate float16: a DRN-S ×4 step took 8.5×
            float32's on a 2-core EPYC).
    """
    allowed = TRAINING_PRECISIONS if training else UPSCALE_PRECISIONS
    if precision not in allowed:
        raise ValueError(f"precision must be one of {', '.join(allowed)}, got {precision!r}")
    if precision == "auto":
        return auto_policy(training)
    if precision == "mixed_float16" and not _has_gpu():
        raise ValueError(
            "precision mixed_float16 needs a GPU, and this machine has none (CPUs emulate "
            "float16, several times slower than float32); use auto, float32 or mixed_bfloat16"
        )
    return "mixed_bfloat16" if precision == "bfloat16" else precision
