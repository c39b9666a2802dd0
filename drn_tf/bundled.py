"""Where the files bundled with the package (``drn_tf/assets``) live: the sample photo and the
real photos exports are calibrated and verified on.

Paths only, no imports beyond the standard library: the exporters and benchmarks find the sample
photo here without importing the demo (and its TensorFlow).
"""

from __future__ import annotations

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
