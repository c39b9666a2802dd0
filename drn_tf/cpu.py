"""What this machine's CPU can run: its model name and the feature flags that decide which
kernels float32, bf16 and int8 use, read from ``/proc/cpuinfo`` here and nowhere else.

oneDNN, under TensorFlow, OpenVINO and PyTorch alike, can be held below the CPU's own ISA with
``ONEDNN_MAX_CPU_ISA``. The flags above that cap are left out of :func:`cpu_flags`, so every
decision (``--precision auto``, ``--runtime auto``, OpenVINO's bf16) and every label matches the
kernels that can run: a run with ``ONEDNN_MAX_CPU_ISA=AVX2`` behaves as on an AVX2-only CPU.

Standard library only: the CLI and the exporters read it before TensorFlow loads.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "BF16_FEATURES",
    "CPUINFO",
    "FEATURES",
    "cpu_flags",
    "cpu_model",
    "describe_cpu",
    "isa_cap",
    "native_bf16",
]

#: Where the CPU is described (Linux); elsewhere the CPU has no known flags.
CPUINFO = Path("/proc/cpuinfo")

#: The flags that decide which kernels run: float32 (AVX2/FMA, AVX-512), int8 (VNNI, AMX-INT8)
#: and bf16 (AVX-512 BF16, AMX-BF16).
FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)

#: A CPU with any of these computes bf16 natively (AVX-512 BF16, AMX); elsewhere bf16 tensors
#: are converted to float32 op by op (TensorFlow, PyTorch) or compiled float32 (OpenVINO).
BF16_FEATURES = ("avx512_bf16", "amx_bf16")

# oneDNN's ISA levels (the values ONEDNN_MAX_CPU_ISA takes, lowest first) and the flags each
# adds; a cap keeps the flags of its level and those below it.
_ISA_LEVELS = (
    (("SSE41", "AVX"), ()),
    (("AVX2",), ("avx2", "fma")),
    (("AVX2_VNNI", "AVX2_VNNI_2"), ("avx_vnni",)),
    (("AVX512_CORE",), ("avx512f", "avx512bw")),
    (("AVX512_CORE_VNNI",), ("avx512_vnni",)),
    (("AVX512_CORE_BF16",), ("avx512_bf16",)),
    (("AVX512_CORE_FP16", "AVX10_1_512"), ("avx512_fp16",)),
    (
        ("AVX512_CORE_AMX", "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16"),
        ("amx_tile", "amx_int8", "amx_bf16"),
    ),
)


def _cpuinfo_fields(cpuinfo: str | os.PathLike[str] | None) -> dict[str, str]:
    """The first CPU's ``key: value`` lines; empty when the file cannot be read."""
    try:
        text = Path(CPUINFO if cpuinfo is None else cpuinfo).read_text(errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first CPU's block ends at the first blank line
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def isa_cap() -> str | None:
    """``ONEDNN_MAX_CPU_ISA`` in upper case when it caps oneDNN; ``None`` when unset, ``ALL``
    or ``DEFAULT``."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return None if cap in ("", "ALL", "DEFAULT") else cap


def _allowed_by_cap(cap: str) -> set[str] | None:
    """The :data:`FEATURES` oneDNN may use when held to ``cap``; ``None`` for a name oneDNN
    does not know (oneDNN ignores it too)."""
    allowed: set[str] = set()
    for names, flags in _ISA_LEVELS:
        allowed.update(flags)
        if cap in names:
            return allowed
    return None


def cpu_flags(cpuinfo: str | os.PathLike[str] | None = None) -> frozenset[str]:
    """The first CPU's ``flags`` in ``cpuinfo`` (default :data:`CPUINFO`), less the
    :data:`FEATURES` above ``ONEDNN_MAX_CPU_ISA`` when that is set; empty when unreadable."""
    flags = set(_cpuinfo_fields(cpuinfo).get("flags", "").split())
    cap = isa_cap()
    allowed = _allowed_by_cap(cap) if cap else None
    if allowed is not None:
        flags -= set(FEATURES) - allowed
    return frozenset(flags)


def native_bf16(flags: Iterable[str] | None = None) -> bool:
    """Whether a CPU with ``flags`` (default: this one's, :func:`cpu_flags`) computes bf16
    natively: any of :data:`BF16_FEATURES`."""
    return bool(set(BF16_FEATURES) & set(cpu_flags() if flags is None else flags))


def cpu_model(cpuinfo: str | os.PathLike[str] | None = None) -> str:
    """The CPU's model name (``AMD EPYC``); elsewhere than Linux, the platform's."""
    return (
        _cpuinfo_fields(cpuinfo).get("model name")
        or platform.processor()
        or platform.machine()
        or "unknown CPU"
    )


def describe_cpu(cpuinfo: str | os.PathLike[str] | None = None) -> str:
    """``AMD EPYC (avx2, fma, avx512f, …; oneDNN held to AVX2)``: the model and the
    :data:`FEATURES` it has, for reports."""
    flags = cpu_flags(cpuinfo)
    features = ", ".join(f for f in FEATURES if f in flags) or "none of " + ", ".join(FEATURES)
    cap = isa_cap()
    held = f"; oneDNN held to {cap}" if cap else ""
    return f"{cpu_model(cpuinfo)} ({features}{held})"
