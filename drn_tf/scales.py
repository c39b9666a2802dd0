"""The scale rule: which upscaling factors DRN and the SR protocol accept.

DRN upscales in ``log2(scale)`` ×2 phases, each with its own dual network (Guo et al., CVPR
2020; ``docs/drn-reference.md`` §2.1), so a model's scale is a power of two. Bicubic baselines
and evaluation also accept other integer factors (×3 is a standard benchmark column). Plain
Python, so models and data code alike import it without TensorFlow.
"""

from __future__ import annotations

import numbers

__all__ = ["check_scale"]


def check_scale(scale: int, power_of_two: bool = True) -> int:
    """Returns ``scale`` as an int after checking it is an upscaling factor.

    Args:
        scale: the factor; an integral float such as ``4.0`` or a numpy integer is accepted, a bool
            is not.
        power_of_two: require a power of two ``>= 2`` (any DRN model, training pyramids);
            otherwise any integer ``>= 2`` (evaluation, bicubic).

    Raises:
        ValueError: ``scale`` breaks the rule; the message says which one.
    """
    # numbers.Real admits numpy scalars; is_integer() rejects 2.5, inf and NaN without raising.
    valid = (
        isinstance(scale, numbers.Real)
        and not isinstance(scale, bool)
        and float(scale).is_integer()
    )
    if power_of_two:
        if not valid or scale < 2 or int(scale) & (int(scale) - 1):
            raise ValueError(f"scale must be a power of two (2, 4, 8, ...), got {scale!r}")
    elif not valid or scale < 2:
        raise ValueError(f"scale must be an integer of at least 2, got {scale!r}")
    return int(scale)
