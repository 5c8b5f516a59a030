r"""Aggregation: how the memory and the current gradient combine into the step direction.

Let :math:`d` be the current (offered) gradient, :math:`B` the memory with :math:`n \ge 1` filled slots,
:math:`S = \sum B` its running sum and :math:`\kappa` the ``kappa`` factor. With the default order the
memory is taken as it was *before* the current gradient is offered.

=====================================  =================================  ===============================
``aggr`` (original name / alias)       direction                          ``update='buffer_only'``
=====================================  =================================  ===============================
``'sum'`` / ``'add_mean'``             :math:`d + \kappa S/n`             :math:`\kappa S/n`
``'mid'`` / ``'half_add_mean'``        :math:`\tfrac12 (d + \kappa S/n)`  :math:`\tfrac12 \kappa S/n`
``'mean'`` / ``'mean_with_current'``   :math:`(d + \kappa S)/(n+1)`       :math:`\kappa S/n`
``'min'``, ``'median'``, ``'max'``     :math:`d + \kappa B_{sel}`         :math:`\kappa B_{sel}`
``'min-mean'``, ``'median-mean'``,     :math:`\tfrac12 (d + \kappa        :math:`\tfrac12 \kappa B_{sel}`
``'max-mean'``                         B_{sel})`
=====================================  =================================  ===============================

:math:`B_{sel}` is the stored gradient with the smallest / median / largest priority. Note that the
original's ``'sum'`` adds the *mean* of the memory; the name is kept for compatibility. Every formula
costs O(|p|) whatever ``topC`` is, because :math:`S` is maintained incrementally.
"""

from __future__ import annotations

import torch
from torch import Tensor

AGGREGATORS = ("sum", "mid", "mean", "min", "median", "max", "min-mean", "median-mean", "max-mean")
_ALIASES = {"add_mean": "sum", "half_add_mean": "mid", "mean_with_current": "mean"}


def resolve_aggr(aggr: str) -> str:
    """The original's name for an `aggr` value or alias; ValueError naming the value if unknown."""
    name = _ALIASES.get(aggr, aggr)
    if name not in AGGREGATORS:
        choices = ", ".join(AGGREGATORS + tuple(_ALIASES))
        raise ValueError(f"invalid aggr {aggr!r}: choose from {choices}")
    return name


def selection(aggr: str) -> str | None:
    """'min', 'median' or 'max' for the aggregators that use one stored item, else None."""
    name = aggr.removesuffix("-mean")
    return name if name in ("min", "median", "max") else None


def aggregate(
    d: Tensor,
    total: Tensor,
    filled: int,
    selected: Tensor | None,
    *,
    aggr: str,
    kappa: float,
    with_current: bool = True,
) -> Tensor:
    """The direction for one tensor (a new tensor; the inputs are not modified).

    Args:
        d: the current gradient, as offered to the memory.
        total: the running sum of the memory's filled slots.
        filled: the number of filled slots (at least 1).
        selected: the stored item picked by `selection(aggr)`, or None for the mean-based aggregators.
        aggr: a canonical name from `AGGREGATORS`.
        kappa: weight of the memory's contribution.
        with_current: False for ``update='buffer_only'`` (the current gradient's term is dropped).
    """
    if selected is not None:
        out = torch.add(d, selected, alpha=kappa) if with_current else torch.mul(selected, kappa)
        return out.mul_(0.5) if aggr.endswith("-mean") else out
    if aggr == "mean" and with_current:
        return torch.add(d, total, alpha=kappa).div_(filled + 1)
    out = torch.add(d, total, alpha=kappa / filled) if with_current else torch.mul(total, kappa / filled)
    return out.mul_(0.5) if aggr == "mid" else out


#: The aggregators whose direction is a weighted sum of the current gradient and the running sum.
LINEAR = ("sum", "mid", "mean")


def linear_weights(aggr: str, kappa: float, filled: int, with_current: bool = True) -> tuple[float, float]:
    """``(w_d, w_S)`` with direction ``= w_d * d + w_S * S`` for an aggregator in `LINEAR`.

    `filled` = 0 (an empty memory, the first step) gives the plain gradient, as `memory.py` does.
    """
    if aggr not in LINEAR:
        raise ValueError(f"aggr {aggr!r} is not a weighted sum; choose from {', '.join(LINEAR)}")
    if filled == 0:
        return 1.0, 0.0
    if aggr == "mean" and with_current:
        return 1.0 / (filled + 1), kappa / (filled + 1)
    scale = 0.5 if aggr == "mid" else 1.0
    return (scale if with_current else 0.0), scale * kappa / filled


def aggregate_foreach(
    ds: list[Tensor],
    totals: list[Tensor],
    filled: list[int],
    selected: list[Tensor] | None,
    *,
    aggr: str,
    kappa: float,
    with_current: bool = True,
) -> list[Tensor]:
    """`aggregate` for many tensors at once, one `torch._foreach_*` call per distinct fill count."""
    if selected is not None:
        if with_current:
            out = list(torch._foreach_add(ds, selected, alpha=kappa))
        else:
            out = list(torch._foreach_mul(selected, kappa))
        if aggr.endswith("-mean"):
            torch._foreach_mul_(out, 0.5)
        return out
    out: list[Tensor] = [None] * len(ds)  # type: ignore[list-item]
    for n, index in _buckets(filled).items():
        d_n = [ds[i] for i in index]
        s_n = [totals[i] for i in index]
        if aggr == "mean" and with_current:
            part = torch._foreach_add(d_n, s_n, alpha=kappa)
            torch._foreach_div_(part, n + 1)
        elif with_current:
            part = torch._foreach_add(d_n, s_n, alpha=kappa / n)
        else:
            part = torch._foreach_mul(s_n, kappa / n)
        for i, tensor in zip(index, part):
            out[i] = tensor
    if aggr == "mid":
        torch._foreach_mul_(out, 0.5)
    return out


def _buckets(values: list[int]) -> dict[int, list[int]]:
    buckets: dict[int, list[int]] = {}
    for i, value in enumerate(values):
        buckets.setdefault(value, []).append(i)
    return buckets
