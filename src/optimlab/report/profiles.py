"""Performance profiles (Dolan & More 2002) of time to a target, as AlgoPerf (Dahl et al. 2023) uses them.

For tasks p and optimizers s with time-to-target t[p, s] (inf if never reached):

    r[p, s]  = t[p, s] / min_s' t[p, s']             the performance ratio (inf on a task nobody solved)
    rho_s(tau) = |{p : r[p, s] <= tau}| / |P|        the fraction of tasks solved within tau x the fastest
    score_s  = 1/(r_max - 1) * int_1^r_max rho_s(tau) dtau    AlgoPerf's benchmark score, r_max = 4

The target of a task is defined in `relaxed_target`; docs/reports.md states every rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

R_MAX = 4.0  # AlgoPerf integrates the profile over tau in [1, 4]


def relaxed_target(best: float, initial: float, tolerance: float, higher_is_better: bool) -> float:
    """The target value: `best` moved back towards `initial` by `tolerance` of the way.

    target = best - tolerance * (best - initial), i.e. reaching (1 - tolerance) of the best improvement
    over the value at initialisation. Works for either direction (accuracy up, loss down). If the start
    is unknown or `best` is no improvement on it, the target is `best` itself.
    """
    if not math.isfinite(best):
        return math.nan
    improvement = (best - initial) if higher_is_better else (initial - best)
    if not math.isfinite(initial) or improvement <= 0:
        return best
    return best - tolerance * (best - initial)


def reached(value: float, target: float, higher_is_better: bool) -> bool:
    if not math.isfinite(value):
        return False
    return value >= target if higher_is_better else value <= target


def time_to_target(
    steps: Sequence[float],
    times: Sequence[float],
    values: Sequence[float],
    target: float,
    higher_is_better: bool,
) -> tuple[float, float]:
    """(step, wall seconds) of the first evaluation that reaches `target`; (inf, inf) if none does."""
    for step, time, value in zip(steps, times, values):
        if reached(value, target, higher_is_better):
            return float(step), float(time) if math.isfinite(time) else math.inf
    return math.inf, math.inf


def median_time(times: Sequence[float]) -> float:
    """Median over seeds with inf kept for seeds that never reached the target.

    So a configuration reaches the target only if at least half of its seeds do (with an even number of
    seeds, more than half), which is AlgoPerf's rule in spirit (a majority of trials must reach it).
    """
    if len(times) == 0:
        return math.inf
    return float(np.median(np.asarray(times, dtype=float)))


def ratios(times: np.ndarray) -> np.ndarray:
    """Performance ratios r[p, s] = t[p, s] / min_s t[p, s] of a [tasks, optimizers] array of times.

    A task no optimizer solved gives inf for all. If the fastest time is 0 (target met at initialisation),
    the optimizers with time 0 get ratio 1 and all others inf.
    """
    t = np.asarray(times, dtype=float)
    if t.ndim != 2:
        raise ValueError(f"times must be a [tasks, optimizers] array, got shape {t.shape}")
    r = np.full_like(t, math.inf)
    for p, row in enumerate(t):
        finite = row[np.isfinite(row)]
        if finite.size == 0:
            continue
        best = finite.min()
        if best <= 0:
            r[p] = np.where(row <= 0, 1.0, math.inf)
        else:
            r[p] = np.where(np.isfinite(row), row / best, math.inf)
    return r


def profile(r: np.ndarray, taus: Sequence[float]) -> np.ndarray:
    """rho[s, k] = fraction of tasks p with r[p, s] <= taus[k]; shape [optimizers, len(taus)]."""
    r = np.asarray(r, dtype=float)
    taus = np.asarray(taus, dtype=float)
    return (r[:, :, None] <= taus[None, None, :]).mean(axis=0)


def score(r: np.ndarray, r_max: float = R_MAX) -> np.ndarray:
    """AlgoPerf's score per optimizer: the profile's integral over [1, r_max], divided by r_max - 1.

    rho_s is a step function, so the integral is exact: each task with ratio r <= r_max adds
    (r_max - r) / (r_max - 1) / |P|.
    """
    r = np.asarray(r, dtype=float)
    gain = np.where(r <= r_max, (r_max - np.maximum(r, 1.0)) / (r_max - 1.0), 0.0)
    return gain.mean(axis=0)


def tau_grid(r: np.ndarray, r_max: float = R_MAX, points: int = 400) -> np.ndarray:
    """A log-spaced grid of tau from 1 past the largest finite ratio (at least r_max), with every ratio on it."""
    r = np.asarray(r, dtype=float)
    finite = r[np.isfinite(r)]
    top = max(r_max, float(finite.max()) * 1.25 if finite.size else r_max)
    grid = np.geomspace(1.0, top, points)
    return np.unique(np.concatenate([grid, finite, [1.0]]))
