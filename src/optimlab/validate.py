"""Argument checks for constructors (optimizers, hypergradient controllers): a ValueError naming the argument.

    check_number("lr", lr, low=0)                               # a finite number >= 0
    check_number("betas[0]", beta1, low=0, high=1, high_inclusive=False)
    check_number("topC", topC, low=1, integer=True)
    check_choice("aggr", aggr, AGGREGATES)
    check_flag("amsgrad", amsgrad)

Every message reads `invalid NAME=VALUE: must be ...`, so a caller (or the config layer, which wraps it in a
ConfigError) can always tell which argument was wrong. Torch-free; a one-element tensor counts as a number
(an lr may be a tensor, as in torch.optim).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def check(condition: bool, name: str, value: Any, requirement: str) -> None:
    """ValueError `invalid name=value: requirement` unless `condition` holds (for checks of several values)."""
    if not condition:
        raise ValueError(f"invalid {name}={value!r}: {requirement}")


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    finite: bool = True,
    integer: bool = False,
) -> None:
    """`value` is a number (not a bool; an int when `integer`) in the given bounds, finite unless told not."""
    check(_in_range(value, low, high, low_inclusive, high_inclusive, finite, integer), name, value,
          "must be " + _requirement(low, high, low_inclusive, high_inclusive, finite, integer))  # fmt: skip


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    check(value in choices, name, value, f"choose from {', '.join(map(str, choices))}")


def check_flag(name: str, value: Any, *, allow_none: bool = False) -> None:
    """`value` is True or False (or None when `allow_none`)."""
    ok = isinstance(value, bool) or (allow_none and value is None)
    check(ok, name, value, "must be None, True or False" if allow_none else "must be True or False")


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if type(value).__name__ == "Tensor" and value.numel() == 1 and not value.dtype.is_complex:
        return value.item()
    return None


def _in_range(value, low, high, low_inclusive, high_inclusive, finite, integer) -> bool:
    number = _as_number(value)
    if number is None or (integer and not isinstance(number, int)) or math.isnan(number):
        return False
    if finite and not math.isfinite(number):
        return False
    if low is not None and not (number >= low if low_inclusive else number > low):
        return False
    return high is None or (number <= high if high_inclusive else number < high)


def _requirement(low, high, low_inclusive, high_inclusive, finite, integer) -> str:
    kind = "an integer" if integer else "a finite number" if finite else "a number"
    if low is not None and high is not None:
        return f"{kind} in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
    if low is not None:
        return f"{kind} {'>=' if low_inclusive else '>'} {low}"
    if high is not None:
        return f"{kind} {'<=' if high_inclusive else '<'} {high}"
    return kind
