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

#: The packaged models, one per scale: ``load_model("default", scale=s)``.
DEFAULT_MODEL_PATHS = {s: Path(__file__).parent / "weights" / f"drn_x{s}.keras" for s in (2, 4, 8)}
#: The packaged ×4 model, ``load_model("default")``.
DEFAULT_MODEL_PATH = DEFAULT_MODEL_PATHS[4]


def model_path(name_or_path: str | os.PathLike[str] = "default", scale: int | None = None) -> Path:
    """The file ``name_or_path`` names: for ``"default"`` the packaged model of ``scale``
    (:data:`DEFAULT_MODEL_PATHS`; 4 when ``None``), otherwise the path itself (unchecked).

    Raises:
        ValueError: no model is packaged for ``scale``.
        FileNotFoundError: the packaged model's file is missing from this installation.
    """
    if str(name_or_path) != "default":
        return Path(name_or_path)
    scale = 4 if scale is None else scale
    if scale not in DEFAULT_MODEL_PATHS:
        packaged = ", ".join(f"×{s}" for s in DEFAULT_MODEL_PATHS)
        raise ValueError(
            f"no packaged ×{scale} model (packaged: {packaged}); pass the path of a .keras model"
        )
    path = DEFAULT_MODEL_PATHS[scale]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the packaged ×{scale} model is not installed; "
            "pass the path of a .keras model instead"
        )
    return path
