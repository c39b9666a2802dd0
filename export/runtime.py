"""The fastest runtime for upscaling on this CPU: a DRN as a float32 NHWC network function.

:func:`network` turns a loaded DRN into a runner ``float32 (N, H, W, 3) on 0..255 → float32
(N, s·H, s·W, 3)`` in OpenVINO, onnxruntime or LiteRT, built with the exporters' own
conversions (:mod:`export.openvino`, :mod:`export.onnx`, :mod:`export.tflite`).
:func:`drn_tf.inference.upscale` takes it as ``network=`` and replaces only the network call:
tiles, overlap, self-ensemble, alpha, 16-bit and gray go through the same code on every
runtime. :func:`upscale` (``drn_tf.upscale``) and ``drn-tf upscale --runtime`` do that.

``runtime="auto"`` picks by the CPU's capability flags (``/proc/cpuinfo``), the first row that
matches (:data:`AUTO_TABLE`): the fastest path that holds the export floors against Keras
(fp32 60, bf16 45, int8 35 dB), bf16 over int8 only where bf16 alone clears the target of
1.7× Keras with room. Measured with the packaged DRN-S ×4:

=========================  ==================  ===============================================
CPU flag                   auto picks          why (measurements)
=========================  ==================  ===============================================
``amx_bf16`` (Xeon AMX)    OpenVINO bf16       1000×750 photo ×4: bf16 3.5 s (54.7 dB vs
                                               Keras), int8 3.9 (50.6 dB), Keras
                                               mixed_bfloat16 9.4; 4000×3000: bf16 2.0×
                                               Keras (int8 is 1.7× bf16 on a 128² input
                                               alone, no faster on a photo)
``avx512_bf16`` (EPYC)     OpenVINO int8       1000×750 photo ×4, seconds on 2 cores: int8
``avx512_vnni``,                               11.4 (50.9 dB vs Keras), bf16 14.3 (54.4 dB),
``avx_vnni``                                   TFLite 19.4, OpenVINO fp32 31.0, ONNX Runtime
                                               42.0, Keras fp32 27.8 (benchmarks.
                                               upscale_runtimes); under other processes' load
                                               bf16 fell to 1.66× Keras, int8 kept 2.2-2.8×
``avx2``                   OpenVINO int8       128² input: int8 1.48, TFLite fp32 2.33, ONNX
                                               Runtime 2.71, OpenVINO fp32 2.78, Keras 3.95 s
anything else              Keras               not measured
=========================  ==================  ===============================================

``precision="float32"`` with ``auto`` takes LiteRT/XNNPACK fp32 (the fastest fp32 path on
both EPYCs); ``"bfloat16"`` takes OpenVINO bf16. Without the ``export`` extra, ``auto`` is
Keras, with one note.

Converted models are cached on disk (:func:`cache_root`: ``$DRN_TF_CACHE_DIR``, else
``$XDG_CACHE_HOME/drn-tf/runtimes``, else ``~/.cache/drn-tf/runtimes``), one folder per model
weights' SHA-256, runtime, precision and library versions. An entry is used only if its
metadata matches, every file's SHA-256 is the one recorded, and it loads and runs a probe to
the right shape and finite values; anything else is deleted and rebuilt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from drn_tf.cpu import cpu_flags
from drn_tf.files import remove_stale_temp_files
from drn_tf.settings import RUNTIMES  # what ``--runtime`` takes
from export import base, onnx, openvino, photo_sets, reporting, tflite

__all__ = [
    "AUTO_TABLE",
    "RUNTIMES",
    "Runtime",
    "cache_root",
    "choose",
    "network",
    "upscale",
]

#: ``auto``: the first row whose CPU flag is present → ``(runtime, precision)``.
AUTO_TABLE: tuple[tuple[str, str, tuple[str, str]], ...] = (
    ("amx_bf16", "AMX", ("openvino", "bf16")),
    ("avx512_bf16", "AVX-512 BF16", ("openvino", "int8")),
    ("avx512_vnni", "AVX-512 VNNI", ("openvino", "int8")),
    ("avx_vnni", "AVX-VNNI", ("openvino", "int8")),
    ("avx2", "AVX2", ("openvino", "int8")),
)

#: ``--precision`` (the Keras names) → the runtimes' names; ``auto`` follows the table.
_PRECISIONS = {"float32": "fp32", "bfloat16": "bf16"}
#: The precisions each runtime is built in; the first is taken for ``--precision auto``.
_RUNTIME_PRECISIONS = {
    "openvino": ("fp32", "bf16", "int8"),
    "onnxruntime": ("fp32",),
    "tflite": ("fp32",),
}
#: The Python modules each runtime needs (imported by the exporters when converting).
_MODULES = {
    "openvino": ("openvino",),
    "onnxruntime": ("tf2onnx", "onnx", "onnxruntime"),
    "tflite": ("ai_edge_litert",),
}
_PACKAGES = {
    "openvino": ("openvino",),
    "onnxruntime": onnx.PACKAGES,
    "tflite": tflite.PACKAGES,
}
_ARTIFACT = {"openvino": openvino.XML, "onnxruntime": "model.onnx", "tflite": "model.tflite"}
_ENTRY = "entry.json"
_FORMAT = 1  # the layout of a cache entry; bumping it makes every older entry stale

Runner = base.Runner


@dataclasses.dataclass(frozen=True)
class Runtime:
    """A resolved choice: ``name`` one of ``keras``, ``openvino``, ``onnxruntime``,
    ``tflite``; ``precision`` ``fp32``, ``bf16`` or ``int8`` (for Keras, its ``--precision``
    value); ``note`` one line for the user when ``auto`` could not take the table's pick."""

    name: str
    precision: str
    reason: str = ""
    note: str | None = None

    def describe(self) -> str:
        """``OpenVINO bf16 (auto: AVX-512 BF16)``, for progress lines."""
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.name} {self.precision}{why}"


def _installed(runtime: str) -> bool:
    return all(importlib.util.find_spec(module) for module in _MODULES[runtime])


def choose(
    runtime: str = "auto", precision: str = "auto", flags: set[str] | None = None
) -> Runtime:
    """The runtime and precision ``runtime`` and ``precision`` (the Keras ``--precision``
    names: ``auto``, ``float32``, ``bfloat16``) stand for on a CPU with ``flags`` (default:
    this one's). Raises ValueError for an unknown name or a precision the runtime lacks."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if precision not in ("auto", *_PRECISIONS):
        raise ValueError(
            f"precision must be one of auto, {', '.join(_PRECISIONS)}, got {precision!r}"
        )
    if runtime == "keras":
        return Runtime("keras", precision)
    flags = cpu_flags() if flags is None else flags
    row = next((row for row in AUTO_TABLE if row[0] in flags), None)
    if runtime == "auto":
        if precision == "float32":
            pick, reason = ("tflite", "fp32"), "auto: float32"
        elif precision == "bfloat16":
            pick, reason = ("openvino", "bf16"), "auto: bfloat16"
        elif row is None:
            return Runtime("keras", precision, "auto: no measured row for this CPU")
        else:
            pick, reason = row[2], f"auto: {row[1]}"
        if not _installed(pick[0]):
            note = (
                f"note: --runtime auto would use {pick[0]} {pick[1]} here, but the export "
                f"extra is not installed ({base.INSTALL_HINT}); upscaling with Keras"
            )
            return Runtime("keras", precision, "auto: no export extra", note)
        return Runtime(*pick, reason)
    allowed = _RUNTIME_PRECISIONS[runtime]
    if precision == "auto":
        table = row[2] if row else None
        return Runtime(runtime, table[1] if table and table[0] == runtime else allowed[0])
    if _PRECISIONS[precision] not in allowed:
        raise ValueError(f"--runtime {runtime} runs in {', '.join(allowed)}, not {precision}")
    return Runtime(runtime, _PRECISIONS[precision])


# --- the cache ------------------------------------------------------------------------------


def cache_root() -> Path:
    """Where converted models are kept: ``$DRN_TF_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/drn-tf/runtimes``, else ``~/.cache/drn-tf/runtimes``."""
    if os.environ.get("DRN_TF_CACHE_DIR"):
        return Path(os.environ["DRN_TF_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "drn-tf" / "runtimes"


def weights_sha256(model: Any) -> str:
    """SHA-256 of what the serving graph is made of: the primal network's configuration and
    weights (so an in-memory model has one too, and a re-saved file keeps its entry)."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(model.drn_config)).encode())
    for weight in model.primal.get_weights():
        digest.update(str((weight.dtype.str, weight.shape)).encode())
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def _identity(model: Any, choice: Runtime) -> dict[str, Any]:
    """What an entry must have been built from: any difference makes it stale."""
    packages = _PACKAGES[choice.name] + (("nncf",) if choice.precision == "int8" else ())
    return {
        "format": _FORMAT,
        "model_sha256": weights_sha256(model),
        "runtime": choice.name,
        "precision": choice.precision,
        "versions": reporting.library_versions(*packages),
    }


def _entry_key(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True)
    return (
        f"{identity['runtime']}-{identity['precision']}-"
        + hashlib.sha256(text.encode()).hexdigest()[:24]
    )


def _convert(model: Any, choice: Runtime, folder: Path) -> None:
    """Writes ``model`` for ``choice`` into ``folder`` with the exporters' conversions."""
    artifact = folder / _ARTIFACT[choice.name]
    if choice.name == "openvino":
        ov_model = openvino.to_openvino(model)
        if choice.precision == "int8":
            ov_model = openvino.quantize(ov_model, photo_sets.calibration_images([], model.scale))
        openvino.save(ov_model, folder, openvino.HINTS[choice.precision])
    elif choice.name == "onnxruntime":
        onnx.to_onnx(model, artifact)
    else:
        artifact.write_bytes(tflite.to_tflite(model))


def _load(choice: Runtime, folder: Path) -> Runner:
    artifact = folder / _ARTIFACT[choice.name]
    if choice.name == "openvino":
        return openvino.openvino_runner(folder)  # compile_artifact's default hint
    if choice.name == "onnxruntime":
        return onnx.onnxruntime_runner(artifact)
    return tflite.litert_runner(artifact)


def _files_sha256(folder: Path) -> dict[str, str]:
    return {
        path.name: base.sha256_of(path)
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != _ENTRY
    }


def _checked_runner(choice: Runtime, folder: Path, identity: dict, scale: int) -> Runner:
    """The runner of the entry in ``folder``; raises when anything about it is off."""
    recorded = json.loads((folder / _ENTRY).read_text())
    if recorded.get("identity") != identity:
        raise ValueError("built from another model or library versions")
    if recorded.get("files") != _files_sha256(folder):
        raise ValueError("files differ from those recorded")
    runner = _load(choice, folder)
    probe = np.linspace(0, 255, 2 * 9 * 11 * 3, dtype=np.float32).reshape(2, 9, 11, 3)
    output = np.asarray(runner(probe))
    if output.shape != (2, 9 * scale, 11 * scale, 3) or not np.isfinite(output).all():
        raise ValueError(f"its probe output is {output.shape}, or not finite")
    return runner


def _build(model: Any, choice: Runtime, root: Path, key: str, identity: dict) -> Path:
    """Converts into a hidden folder beside the entry, then renames it into place (a
    concurrent build that got there first wins; ours is dropped)."""
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(root, folders=True)  # builds of killed processes
    temp = root / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        _convert(model, choice, temp)
        entry = {"identity": identity, "files": _files_sha256(temp)}
        (temp / _ENTRY).write_text(json.dumps(entry, indent=1))
        with contextlib.suppress(OSError):  # fails if another process renamed its build in
            os.rename(temp, root / key)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return root / key


# One runner per model and runtime in this process (weak keys: never keeps a model alive).
_RUNNERS: weakref.WeakKeyDictionary[Any, dict[Runtime, Runner]] = weakref.WeakKeyDictionary()


def network(
    model: Any,
    choice: Runtime,
    *,
    cache: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> Runner | None:
    """``model`` (a :class:`drn_tf.models.DRN`) in the runtime of ``choice`` (:func:`choose`)
    as a runner: float32 NHWC ``(N, H, W, 3)`` on 0..255 → float32 ``(N, s·H, s·W, 3)``,
    about 0..255, not clipped. ``None`` for Keras (the caller's own path).

    The conversion is cached under ``cache`` (default :func:`cache_root`); ``progress`` is
    told (one line) when a conversion starts. Raises :class:`base.MissingDependency` when
    the runtime is not installed.
    """
    if choice.name == "keras":
        return None
    known = _RUNNERS.setdefault(model, {})
    if choice in known:
        return known[choice]
    for module in _MODULES[choice.name]:
        base.require(module, purpose=f"--runtime {choice.name}")
    if choice.precision == "int8":
        base.require("nncf", purpose="--runtime openvino int8")
    root = Path(cache) if cache is not None else cache_root()
    identity = _identity(model, choice)
    key = _entry_key(identity)
    folder = root / key
    runner = None
    if folder.exists():
        try:
            runner = _checked_runner(choice, folder, identity, model.scale)
        except Exception:  # noqa: BLE001 - stale, corrupt or unloadable: rebuilt below
            shutil.rmtree(folder, ignore_errors=True)
    if runner is None:
        if progress:
            progress(f"converting the model to {choice.describe()} once; cached in {root}")
        folder = _build(model, choice, root, key, identity)
        runner = _checked_runner(choice, folder, identity, model.scale)
    known[choice] = _one_line_errors(runner, choice)
    return known[choice]


def _one_line_errors(runner: Runner, choice: Runtime) -> Runner:
    """``runner`` raising what :func:`drn_tf.upscale_files.upscale_files` reports per file: a
    runtime's out-of-memory as MemoryError (the message then suggests a smaller tile), its
    other failures as ValueError, instead of their C++ RuntimeErrors."""

    def run(images: np.ndarray) -> np.ndarray:
        try:
            return runner(images)
        except RuntimeError as error:
            text = " ".join(str(error).split())[:300]
            if "bad_alloc" in text or "memory" in text.lower():
                raise MemoryError(text) from error
            raise ValueError(f"{choice.name} failed at {images.shape}: {text}") from error

    return run


# --- the public entry -----------------------------------------------------------------------

_NOTED: set[str] = set()


def upscale(
    image: Any,
    model: Any = "default",
    *,
    runtime: str = "keras",
    precision: str = "auto",
    **options: Any,
) -> np.ndarray | list[np.ndarray]:
    """:func:`drn_tf.inference.upscale` (same arguments, same results on every runtime up to
    the runtime's agreement with Keras) with the network run in ``runtime``: one of
    :data:`RUNTIMES`; ``keras`` (the default) gives the reference pixels; ``auto`` the
    fastest on this CPU (module docstring). The first call for a model converts it (seconds
    to a minute; cached on disk).

    Args:
        image, model, options: as :func:`drn_tf.inference.upscale` (``tile``,
            ``tile_overlap``, ``self_ensemble``, ``progress``).
        runtime: ``auto``, ``keras``, ``openvino``, ``onnxruntime`` or ``tflite``.
        precision: ``auto``, ``float32`` or ``bfloat16``; for ``openvino`` ``auto`` is the
            table's precision on this CPU (int8 or bf16), for the others fp32.

    Raises:
        ValueError: a bad runtime, precision or argument of ``drn_tf.inference.upscale``.
        export.base.MissingDependency: a runtime named explicitly is not installed.
    """
    from drn_tf import inference

    choice = choose(runtime, precision)
    if choice.note and choice.note not in _NOTED:
        _NOTED.add(choice.note)
        print(choice.note, file=sys.stderr)
    model = inference._resolve_model(model)  # loaded once per file, as upscale does
    if choice.name == "keras" or isinstance(model, inference.Bicubic):
        return inference.upscale(image, model, precision=precision, **options)
    return inference.upscale(image, model, network=network(model, choice), **options)
