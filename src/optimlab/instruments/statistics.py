"""The gradient-variance study's statistics of a step direction, per layer and overall.

From per-coordinate estimates of the direction's mean m_j, second moment s_j = E[d_j^2] and variance v_j
over a set of D coordinates (one layer, or all):

    var   = (1/D) sum_j v_j                                     mean variance per coordinate
    nvar  = (1/D) sum_j v_j / (s_j + 1e-7)                      mean normalized variance (= 1/(1+GSNR_j) exactly)
    snr   = (1/D) sum_j log(s_j + 1e-10) - log(v_j + 1e-10)     mean log(E[d^2] / Var)
    gnorm = (1/D) sum_j s_j                                     mean second moment (E||d||^2 / D)
    bias  = (1/D) sum_j |m_j - m_sgd_j|                         against the SGD direction at the same parameters
    nvar_global = sum_j v_j / sum_j s_j  (= var / gnorm)        a ratio of means, not a mean of ratios

(Faghri, Duvenaud, Fleet & Ba, "A Study of Gradient Variance in Deep Learning", arXiv 2007.04532; the
statistics of its code, fartashf/gvar_code `get_Ege_var`, now also per layer.) Two ways to estimate
(m, s, v) from repeated draws d^(t):

- `unbiased` (default): T draws; m = mean, s = (1/T) sum_t d^2, v = (1/(T-1)) sum_t (d - m)^2.
- `study` (compat='study'): the original's two phases. T draws give the mean e; T fresh draws give
  S_j = sum_t d_j^2 and V_j = sum_t (d_j - e_j)^2, and s = S/T, v = V/T. Because e comes from independent
  draws, E[V/T] = sigma^2 (1 + 1/T): the variance is biased up and nvar can exceed 1.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

NVAR_EPS = 1e-7
LOG_EPS = 1e-10
COMPAT = ("unbiased", "study")


@dataclasses.dataclass
class Estimate:
    """Per-coordinate estimates of one parameter's direction: mean, second moment, variance."""

    mean: Tensor
    second_moment: Tensor
    variance: Tensor


def unbiased_estimate(total: Tensor, squares: Tensor, draws: int) -> Estimate:
    """From sum_t d and sum_t d^2 over `draws` >= 2 draws."""
    mean = total / draws
    variance = ((squares - total * mean) / (draws - 1)).clamp_min(0.0)
    return Estimate(mean, squares / draws, variance)


def study_estimate(phase1_mean: Tensor, squares: Tensor, deviations: Tensor, draws: int) -> Estimate:
    """The original's form: S = `squares`, V = `deviations` (sum over phase-2 draws of (d - e)^2), e = phase-1 mean."""
    return Estimate(phase1_mean, squares / draws, deviations / draws)


def coordinate_sums(estimate: Estimate, sgd_mean: Tensor | None = None) -> dict[str, Tensor]:
    """Sums over the coordinates of one parameter, to be divided by the total count of coordinates."""
    v, s = estimate.variance.double(), estimate.second_moment.double()
    sums = {
        "var": v.sum(),
        "nvar": (v / (s + NVAR_EPS)).sum(),
        "snr": (torch.log(s + LOG_EPS) - torch.log(v + LOG_EPS)).sum(),
        "gnorm": s.sum(),
    }
    if sgd_mean is not None:
        sums["bias"] = (estimate.mean.double() - sgd_mean.double()).abs().sum()
    return sums


def layer_statistics(
    estimates: dict[str, Estimate], sgd_means: dict[str, Tensor] | None = None, prefix: str = ""
) -> dict[str, float]:
    """Flat keys: `<prefix><stat>` over all coordinates and `<prefix><stat>/<layer>` per parameter."""
    out: dict[str, float] = {}
    totals: dict[str, Tensor] = {}
    count = 0
    for name, estimate in estimates.items():
        sums = coordinate_sums(estimate, None if sgd_means is None else sgd_means[name])
        size = estimate.mean.numel()
        for stat, value in sums.items():
            out[f"{prefix}{stat}/{name}"] = float(value) / size
            totals[stat] = totals.get(stat, 0.0) + value
        count += size
    for stat, value in totals.items():
        out[f"{prefix}{stat}"] = float(value) / count
    # The ratio of means, sum_j v_j / sum_j s_j: stable where nvar's per-coordinate ratios are heavy-tailed
    # (a single-batch s_j = m_j^2 near 0).
    for key in [k for k in out if k.startswith(f"{prefix}var")]:
        gnorm = out[f"{prefix}gnorm" + key[len(f"{prefix}var") :]]
        out[f"{prefix}nvar_global" + key[len(f"{prefix}var") :]] = out[key] / gnorm if gnorm > 0 else 0.0
    return out
