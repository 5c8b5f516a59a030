import math

import numpy as np
import pytest
from scipy import stats

from optimlab.report.stats import selection_key, summarize, welch_p_value


def test_summarize_matches_scipy():
    x = [0.84, 0.86, 0.83, 0.9]
    s = summarize(x)
    assert s.n == 4
    assert s.mean == pytest.approx(np.mean(x))
    assert s.std == pytest.approx(np.std(x, ddof=1))
    low, high = stats.t.interval(0.95, df=3, loc=np.mean(x), scale=stats.sem(x))
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high))


def test_summarize_skips_non_finite_and_handles_small_n():
    assert summarize([1.0, math.nan, math.inf, 3.0]).mean == 2.0
    one = summarize([0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert summarize([]).n == 0 and math.isnan(summarize([]).mean)


def test_welch_matches_scipy():
    a, b = [0.88, 0.87, 0.89], [0.84, 0.86, 0.83, 0.85]
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert welch_p_value(a, b) == pytest.approx(expected)
    assert welch_p_value(a, b) == pytest.approx(welch_p_value(b, a))


def test_welch_undefined_cases_are_nan():
    assert math.isnan(welch_p_value([0.8], [0.7, 0.71]))
    assert math.isnan(welch_p_value([0.8, 0.8], [0.7, 0.7]))
    assert math.isnan(welch_p_value([0.8, math.nan], [0.7, 0.71]))


def test_selection_key_counts_non_finite_as_worst():
    good = selection_key([0.80, 0.82], higher_is_better=True)
    partly_diverged = selection_key([math.nan, 0.95, 0.96], higher_is_better=True)
    assert good < partly_diverged  # one diverged seed outweighs any mean
    assert selection_key([0.9], True) < selection_key([0.8], True)
    assert selection_key([0.1], False) < selection_key([0.2], False)
    assert selection_key([math.nan], True) > partly_diverged
