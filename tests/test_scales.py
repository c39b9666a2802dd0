"""Tests for drn_tf.scales: the one scale rule, shared by models and data code."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drn_tf.models import DRNConfig
from drn_tf.scales import check_scale
from drn_tf.training_images import pyramid_factors


def test_power_of_two_rule():
    for scale in (2, 4, 8, 16, 4.0, np.int64(8)):
        assert check_scale(scale) == int(scale) and type(check_scale(scale)) is int
    for bad in (1, 3, 6, 12, 0, -4, True, 2.5, math.inf, math.nan, "4", None):
        with pytest.raises(ValueError, match=r"power of two \(2, 4, 8, \.\.\.\), got"):
            check_scale(bad)


def test_integer_rule_for_evaluation():
    assert check_scale(3, power_of_two=False) == 3
    assert check_scale(np.int32(6), power_of_two=False) == 6
    for bad in (1, 0, -2, 2.5, True, math.inf, "3"):
        with pytest.raises(ValueError, match="integer of at least 2"):
            check_scale(bad, power_of_two=False)


@pytest.mark.parametrize("bad", [3, 6, 1])
def test_models_and_pyramids_apply_the_same_rule(bad):
    with pytest.raises(ValueError) as expected:
        check_scale(bad)
    for build in (lambda: DRNConfig("drn-s", bad), lambda: pyramid_factors(bad)):
        with pytest.raises(ValueError) as info:
            build()
        assert str(info.value) == str(expected.value)
