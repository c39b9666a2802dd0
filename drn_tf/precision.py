"""Which precision to compute in: one rule for upscaling and for training.

``auto`` picks by what the hardware does fast, decided from its capabilities (no timing probe,
so the choice is instant and the same on every run):

* a GPU: ``mixed_float16`` for training (tensor cores, loss scaling in Keras); ``float32`` for
  upscaling, whose exact pixels are the reference (a GPU is fast enough in float32);
* a CPU with AMX (``amx_bf16`` among the ``/proc/cpuinfo`` flags, Intel Sapphire Rapids and
  later): ``mixed_bfloat16``, 2-3× faster than float32 there, within 0.05 dB on Set5 ×4;
* any other CPU: ``float32`` (bfloat16 without AMX is emulated and several times slower).

The names returned are Keras dtype policies (``keras.mixed_precision.set_global_policy``).
This module imports TensorFlow only to look for a GPU, and only when asked.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "TRAINING_PRECISIONS",
    "UPSCALE_PRECISIONS",
    "auto_policy",
    "cpu_has_amx_bf16",
    "resolve_precision",
]

#: What ``--precision`` takes for upscaling (``bfloat16`` means the Keras policy mixed_bfloat16).
UPSCALE_PRECISIONS = ("auto", "float32", "bfloat16")
#: What ``--precision`` takes for training: Keras policy names, or ``auto``.
TRAINING_PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")

#: Where the CPU's feature flags are read (Linux); a missing file means "no AMX".
CPUINFO = Path("/proc/cpuinfo")


def cpu_has_amx_bf16(cpuinfo: str | os.PathLike[str] | None = None) -> bool:
    """True when the ``flags`` line of ``cpuinfo`` (default :data:`CPUINFO`) lists ``amx_bf16``
    (bfloat16 tile matrix multiply). False when the file is missing or unreadable (macOS,
    Windows)."""
    try:
        text = Path(CPUINFO if cpuinfo is None else cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and "amx_bf16" in value.split():
            return True
    return False


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def auto_policy(training: bool = False) -> str:
    """The Keras dtype policy ``auto`` stands for on this machine (see the module docstring)."""
    if _has_gpu():
        return "mixed_float16" if training else "float32"
    return "mixed_bfloat16" if cpu_has_amx_bf16() else "float32"


def resolve_precision(precision: str, training: bool = False) -> str:
    """A ``--precision`` value → a Keras dtype policy name.

    Args:
        precision: for upscaling one of :data:`UPSCALE_PRECISIONS`; for training one of
            :data:`TRAINING_PRECISIONS`.
        training: which of the two it is for (``auto`` differs on a GPU).

    Returns:
        ``"float32"``, ``"mixed_bfloat16"`` or (training only) ``"mixed_float16"``.

    Raises:
        ValueError: an unknown name, e.g. ``"float16"`` or, for upscaling, ``"mixed_float16"``.
    """
    allowed = TRAINING_PRECISIONS if training else UPSCALE_PRECISIONS
    if precision not in allowed:
        raise ValueError(f"precision must be one of {', '.join(allowed)}, got {precision!r}")
    if precision == "auto":
        return auto_policy(training)
    return "mixed_bfloat16" if precision == "bfloat16" else precision
