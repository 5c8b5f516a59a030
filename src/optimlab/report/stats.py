"""Statistics over seeds: mean, standard deviation, a t confidence interval, Welch's t-test, and Holm's
correction of a family of p-values for multiple comparisons.

Pure functions of lists of floats; the rules are stated in docs/reports.md.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _stats

ALPHA = 0.05  # significance level of the comparison against the baseline, and 1 - confidence of the CI


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof=1), n and the 95 % t confidence interval of the mean."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    @property
    def ci_half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def summarize(values: Sequence[float], confidence: float = 1 - ALPHA) -> Summary:
    """Summary of the finite values; std and CI are nan below two values.

    The interval is mean +- t_{(1+confidence)/2, n-1} * std / sqrt(n) (Student's t, unknown variance).
    """
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(_stats.t.ppf((1 + confidence) / 2, df=n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances) between the finite values of a and b.

    nan when either side has fewer than two values, or when both have zero variance (no test is possible).
    """
    x = [v for v in a if math.isfinite(v)]
    y = [v for v in b if math.isfinite(v)]
    if len(x) < 2 or len(y) < 2:
        return math.nan
    if np.var(x) == 0 and np.var(y) == 0:
        return math.nan
    with warnings.catch_warnings():  # near-identical values warn of precision loss; the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(_stats.ttest_ind(x, y, equal_var=False).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (Holm 1979), in the order given; nan entries stay nan and do not
    count as comparisons.

    With the m finite p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted values are
    q_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j)). Rejecting every hypothesis with q < alpha is Holm's
    step-down procedure: it controls the family-wise error rate at alpha, with no assumption on how the
    tests depend on each other, and is never less powerful than Bonferroni (m * p).
    """
    finite = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(finite)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))  # monotone: a smaller p never gets a larger q
        adjusted[i] = running
    return adjusted


def selection_key(values: Sequence[float], higher_is_better: bool) -> tuple[float, float]:
    """Sort key (smaller is better) of a configuration from its runs' validation values.

    A non-finite value (a diverged run, or a missing metric) counts as the worst possible result, so any
    configuration with fewer such runs ranks first; ties are broken by the mean of the finite values.
    """
    if not values:
        return (math.inf, math.inf)
    finite = [v for v in values if math.isfinite(v)]
    bad = (len(values) - len(finite)) / len(values)
    if not finite:
        return (bad, math.inf)
    mean = float(np.mean(finite))
    return (bad, -mean if higher_is_better else mean)


def better(a: float, b: float, higher_is_better: bool) -> bool:
    return a > b if higher_is_better else a < b
