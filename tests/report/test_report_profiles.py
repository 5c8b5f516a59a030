"""Performance-profile numbers against hand computations."""

import math

import numpy as np
import pytest

from optimlab.report import profiles

inf = math.inf
# 3 tasks x 3 optimizers; task 2 is solved by nobody
TIMES = np.array([[10.0, 20.0, inf], [30.0, 15.0, 60.0], [inf, inf, inf]])


def test_ratios_by_hand():
    expected = np.array([[1.0, 2.0, inf], [2.0, 1.0, 4.0], [inf, inf, inf]])
    np.testing.assert_array_equal(profiles.ratios(TIMES), expected)


def test_profile_by_hand():
    rho = profiles.profile(profiles.ratios(TIMES), [1.0, 1.5, 2.0, 4.0, 100.0])
    expected = np.array(
        [
            [1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3],  # best on task 0; 2x on task 1
            [1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3],  # best on task 1; 2x on task 0
            [0, 0, 0, 1 / 3, 1 / 3],  # 4x on task 1 only
        ]
    )
    np.testing.assert_allclose(rho, expected)


def test_algoperf_score_by_hand_and_by_integration():
    r = profiles.ratios(TIMES)
    # optimizer 0: task 0 adds (4-1)/3 = 1, task 1 adds (4-2)/3 = 2/3, over 3 tasks: 5/9
    np.testing.assert_allclose(profiles.score(r), [5 / 9, 5 / 9, 0.0])
    taus = np.linspace(1, 4, 300001)
    rho = profiles.profile(r, taus)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
    numeric = trapezoid(rho, taus, axis=1) / 3
    np.testing.assert_allclose(profiles.score(r), numeric, atol=1e-4)


def test_zero_time_is_best_and_others_infinite():
    np.testing.assert_array_equal(profiles.ratios(np.array([[0.0, 5.0, inf]])), [[1.0, inf, inf]])


def test_relaxed_target():
    assert profiles.relaxed_target(0.9, 0.1, 0.05, True) == pytest.approx(0.86)
    assert profiles.relaxed_target(0.1, 2.3, 0.05, False) == pytest.approx(0.21)
    assert profiles.relaxed_target(0.9, 0.1, 0.0, True) == 0.9
    assert profiles.relaxed_target(0.9, math.nan, 0.05, True) == 0.9  # start unknown: the best itself
    assert profiles.relaxed_target(0.1, 0.2, 0.05, True) == 0.1  # no improvement: the best itself
    assert math.isnan(profiles.relaxed_target(math.nan, 0.1, 0.05, True))


def test_time_to_target_first_evaluation_reaching_it():
    steps, times = [0, 10, 20, 30], [0.0, 1.5, 3.0, 4.5]
    assert profiles.time_to_target(steps, times, [0.1, 0.5, 0.9, 0.95], 0.5, True) == (10, 1.5)
    assert profiles.time_to_target(steps, times, [2.0, 1.0, 0.4, 0.3], 0.4, False) == (20, 3.0)
    assert profiles.time_to_target(steps, times, [0.1, math.nan, 0.2, 0.3], 0.5, True) == (inf, inf)


def test_median_time_needs_a_majority():
    assert profiles.median_time([10, inf, 20]) == 20
    assert profiles.median_time([10, inf]) == inf
    assert profiles.median_time([10, inf, inf]) == inf
    assert profiles.median_time([]) == inf
