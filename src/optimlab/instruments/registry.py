"""The instruments by name, and `build_instruments(cfg.instruments, ctx)` for the training loop.

A new instrument is one file (a subclass of `base.Instrument`) plus one line here.
"""

from __future__ import annotations

from typing import Any

from optimlab.errors import unknown_name
from optimlab.instruments.base import Instrument
from optimlab.instruments.direction_variance import DirectionVariance
from optimlab.instruments.grad_stats import GradStats
from optimlab.instruments.hessian_top import HessianTop
from optimlab.instruments.step_stats import StepStats
from optimlab.train.hooks import RunContext, StepHook

INSTRUMENTS: dict[str, type[Instrument]] = {
    cls.name: cls for cls in (GradStats, DirectionVariance, HessianTop, StepStats)
}


def available_instruments() -> list[str]:
    return list(INSTRUMENTS)


def describe(name: str) -> str:
    return INSTRUMENTS[name].description


def build_instruments(cfg: Any, ctx: RunContext) -> list[StepHook]:
    """One hook per name in `cfg.names` (an `InstrumentsConfig`), in that order."""
    hooks: list[StepHook] = []
    for name in cfg.names:
        if name not in INSTRUMENTS:
            raise unknown_name("instrument", name, INSTRUMENTS)
        hooks.append(INSTRUMENTS[name](cfg, ctx))
    return hooks
