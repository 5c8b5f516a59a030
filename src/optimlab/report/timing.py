"""How noisy wall-clock time to target is, and whether differences between optimizers stand out from it.

Steps to target are exact: the same seed reaches the target at the same step. Wall seconds are not: on a
shared machine two identical runs can differ by tens of percent, enough to reorder optimizers whose costs
per step are close and to swing a performance-profile score across its whole range. The report therefore
shows seconds to target with their spread over seeds, and keeps seconds-based scores out of its summary
unless the differences exceed that spread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimeSpread:
    """The seeds that reached the target: their count, mean time, 2 standard errors and CV (std / mean)."""

    n: int  # seeds that reached the target
    total: int  # seeds
    mean: float
    two_se: float  # 2 * std(ddof=1) / sqrt(n); nan below two seeds
    cv: float  # std(ddof=1) / mean; nan below two seeds or for a zero mean

    @property
    def low(self) -> float:
        return self.mean - self.two_se

    @property
    def high(self) -> float:
        return self.mean + self.two_se


def spread(times: Sequence[float]) -> TimeSpread:
    """Spread of the finite `times` (a seed that never reached the target has inf and is left out)."""
    x = np.asarray([t for t in times if math.isfinite(t)], dtype=float)
    n = len(x)
    if n == 0:
        return TimeSpread(0, len(times), math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return TimeSpread(1, len(times), mean, math.nan, math.nan)
    std = float(x.std(ddof=1))
    cv = std / mean if mean > 0 else math.nan
    return TimeSpread(n, len(times), mean, 2 * std / math.sqrt(n), cv)


def resolved(spreads: Sequence[TimeSpread]) -> bool:
    """Whether every pair of these times is told apart by its noise: the intervals mean +- 2 SE of no two
    overlap. Fewer than two times are trivially resolved; a time from fewer than two seeds has no known
    noise, so nothing is resolved then."""
    if len(spreads) < 2:
        return True
    if any(s.n < 2 for s in spreads):
        return False
    ordered = sorted(spreads, key=lambda s: s.mean)
    return all(a.high < b.low for a, b in zip(ordered, ordered[1:]))
