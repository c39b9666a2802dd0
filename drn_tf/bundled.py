"""Where the files bundled with the package live: the packaged models (``drn_tf/weights``),
the sample photo and the real photos exports are calibrated and verified on (``drn_tf/assets``).

Paths only, no imports beyond the standard library: the exporters and benchmarks find the sample
photo here without importing the demo (and its TensorFlow).
"""

from __future__ import annotations

import os
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"

#: The demo's photo (``ATTRIBUTION.md`` beside it): RGB uint8 PNG, the ground truth the demo
#: downscales; exports are verified on its LR too.
SAMPLE_IMAGE = ASSETS / "chelsea.png"

#: Bundled photos for int8 (sources in ``calibration/SOURCE.md``): LR crops (MATLAB bicubic
#: ×1/4 of T91 and BSD200 photos) to calibrate on, and crops of other BSD200 photos, never
#: calibrated on, that verification checks every artifact's floor on.
CALIBRATION_SET = ASSETS / "calibration"
HELD_OUT_SET = ASSETS / "held_out"

WEIGHTS = Path(__file__).parent / "weights"

#: The packaged models, one per scale: ``load_model("default", scale=s)``.
DEFAULT_MODEL_PATHS = {s: WEIGHTS / f"drn_x{s}.keras" for s in (2, 4, 8)}
#: The packaged ×4 model, ``load_model("default")``.
DEFAULT_MODEL_PATH = DEFAULT_MODEL_PATHS[4]
#: The fast tier, ×4 only: ``load_model("fast")``, about 1/16 of the default ×4 model's
#: multiply-accumulates (for video), at lower quality.
FAST_MODEL_PATHS = {4: WEIGHTS / "drn_fast_x4.keras"}

#: The names ``--model`` and :func:`model_path` take for packaged models.
PACKAGED_NAMES = ("default", "fast")


def is_packaged(name_or_path: str | os.PathLike[str]) -> bool:
    """Whether ``name_or_path`` names packaged models (``"default"``, ``"fast"``), not a file."""
    return str(name_or_path) in PACKAGED_NAMES


def model_path(name_or_path: str | os.PathLike[str] = "default", scale: int | None = None) -> Path:
    """The file ``name_or_path`` names: for ``"default"`` the packaged model of ``scale``
    (:data:`DEFAULT_MODEL_PATHS`; 4 when ``None``), for ``"fast"`` the fast tier's
    (:data:`FAST_MODEL_PATHS`, ×4 only), otherwise the path itself (unchecked).

    Raises:
        ValueError: no model of that name is packaged for ``scale``.
        FileNotFoundError: the packaged model's file is missing from this installation.
    """
    if not is_packaged(name_or_path):
        return Path(name_or_path)
    # Looked up on each call, not bound at import: tests put their own files in place.
    fast = str(name_or_path) == "fast"
    paths = FAST_MODEL_PATHS if fast else DEFAULT_MODEL_PATHS
    kind = "fast " if fast else ""
    scale = 4 if scale is None else scale
    if scale not in paths:
        packaged = ", ".join(f"×{s}" for s in paths)
        raise ValueError(
            f"no packaged {kind}×{scale} model (packaged: {packaged}); "
            "pass the path of a .keras model"
        )
    path = paths[scale]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the packaged {kind}×{scale} model is not installed; "
            "pass the path of a .keras model instead"
        )
    return path
