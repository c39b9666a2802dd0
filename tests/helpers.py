"""Constants and helpers shared by test modules (fixtures live in conftest.py)."""

from pathlib import Path

import numpy as np
import pytest

#: The data and reference files beside the clone (``../shared``).
SHARED = Path(__file__).resolve().parents[2] / "shared"
SET5 = SHARED / "data" / "benchmark" / "Set5"
#: The authors' checkpoint format (random weights) with expected outputs, for parity tests.
REFERENCE = SHARED / "reference"
PRIMAL_PT = REFERENCE / "drn_s_x4.pt"
DUAL_PT = REFERENCE / "drn_s_x4_dual.pt"
IO_NPZ = REFERENCE / "drn_s_x4_io.npz"

needs_reference = pytest.mark.skipif(
    not (PRIMAL_PT.is_file() and DUAL_PT.is_file() and IO_NPZ.is_file()),
    reason=f"reference checkpoints not found under {REFERENCE}",
)


def photo_batch(height: int, width: int) -> np.ndarray:
    """Two different crops of the sample photo's ×4 LR: float32 ``(2, height, width, 3)`` on
    0..255."""
    from export import base

    _, lr = base.probe_images(4)[0]
    return np.concatenate([lr[:, :height, :width], lr[:, -height:, -width:]]).astype(np.float32)
