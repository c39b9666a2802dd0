"""What an export reports and where: the :class:`Report` (model, I/O contract, precision,
source SHA-256, library versions, verification, timing and the CPU it was verified on), written
as a strict JSON side-car beside the artifact (:func:`metadata_path`, :func:`strict_json`) and
embedded in the artifact where its format has a place for it (:func:`embedded_fields`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

from drn_tf import cpu
from export import base


def metadata_path(artifact: str | os.PathLike) -> Path:
    """Where the metadata JSON of ``artifact`` lives: ``F.onnx`` → ``F.onnx.json``; a folder
    artifact holds it as ``export.json``."""
    artifact = Path(artifact)
    return artifact / "export.json" if artifact.is_dir() else Path(f"{artifact}.json")


def read_metadata(artifact: str | os.PathLike) -> dict[str, Any]:
    """The metadata JSON of ``artifact`` (:func:`metadata_path`), parsed strictly: a
    non-standard ``NaN`` or ``Infinity`` is an :class:`base.ExportError`, as in other languages."""

    def refuse(constant: str) -> Any:
        raise base.ExportError(f"{metadata_path(artifact)}: {constant} is not JSON")

    return json.loads(metadata_path(artifact).read_text(), parse_constant=refuse)


def library_versions(*packages: str) -> dict[str, str]:
    """Installed versions of ``packages`` and of the TensorFlow stack."""
    names = ("tensorflow", "tensorflow-cpu", "keras", "numpy", *packages)
    versions = {}
    for name in names:
        with suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    versions["python"] = sys.version.split()[0]
    return versions


@dataclasses.dataclass
class Report:
    """What an export wrote and how it checked out; saved as the artifact's metadata JSON."""

    format: str
    artifact: str
    precision: str
    model: dict
    io: dict
    verification: list[dict]
    timing: dict | None
    versions: dict
    notes: list[str] = dataclasses.field(default_factory=list)
    verified_on: dict = dataclasses.field(default_factory=lambda: {"cpu": host_cpu()})

    def to_json(self) -> str:
        """The report as strict JSON (:func:`strict_json`)."""
        return strict_json(dataclasses.asdict(self), indent=2) + "\n"

    def summary(self) -> str:
        """A few lines for the terminal: agreement per probe image and latency."""
        lines = [f"wrote {self.artifact} ({self.format}, {self.precision})"]
        for record in self.verification:
            lines.append(
                f"  agreement with Keras on {record['input']}: {record['psnr_db']:.1f} dB "
                f"(floor {record['floor_db']:.0f}), max abs {record['max_abs']:.3g}"
            )
        if self.timing:
            size = "x".join(str(s) for s in self.timing["input_shape"][1:3])
            lines.append(
                f"  latency on {size}: {self.timing['artifact_ms']:.1f} ms "
                f"(Keras {self.timing['keras_ms']:.1f} ms), median of {self.timing['runs']}"
            )
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(f"  metadata: {metadata_path(self.artifact)}")
        return "\n".join(lines)


def strict_json(value: Any, indent: int | None = None) -> str:
    """``value`` as strict JSON (RFC 8259, which JavaScript's ``JSON.parse`` and ``jq`` read):
    an infinite or NaN float becomes ``null``; a ``psnr_db`` of ``null`` thus means outputs
    identical to Keras's (infinite PSNR). numpy scalars are numbers, paths strings."""

    def finite(item: Any) -> Any:
        if isinstance(item, dict):
            return {key: finite(v) for key, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(v) for v in item]
        if isinstance(item, (np.floating, np.integer)):
            item = item.item()
        if isinstance(item, float) and not math.isfinite(item):
            return None
        return item

    return json.dumps(finite(value), indent=indent, default=jsonable, allow_nan=False)


def host_cpu() -> dict[str, Any]:
    """This machine's CPU: ``{"model": ..., "features": [...]}``, the
    :data:`drn_tf.cpu.FEATURES` it has (:func:`drn_tf.cpu.cpu_flags`), and
    ``onednn_max_cpu_isa`` when oneDNN is held below them."""
    flags = cpu.cpu_flags()
    found = {"model": cpu.cpu_model(), "features": [f for f in cpu.FEATURES if f in flags]}
    return found | ({"onednn_max_cpu_isa": cpu.isa_cap()} if cpu.isa_cap() else {})


def jsonable(value: Any) -> Any:
    """``json.dumps`` default: numpy scalars as numbers, paths as strings."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def embedded_fields(report: Report) -> dict[str, str]:
    """The side-car's top-level fields as strings to embed in an artifact (ONNX
    ``metadata_props``, OpenVINO ``rt_info``): each value strict JSON (:func:`strict_json`),
    keys as in the side-car."""
    return {key: strict_json(value) for key, value in dataclasses.asdict(report).items()}
