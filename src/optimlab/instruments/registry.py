"""The instruments by name, and `build_instruments(cfg.instruments, ctx)` for the training loop.

A new instrument is one file (a subclass of `base.Instrument`) plus one line here.
"""

from __future__ import annotations

from typing import Any

from optimlab.instruments.base import Instrument
from optimlab.instruments.direction_variance import DirectionVariance
from optimlab.instruments.grad_stats import GradStats
from optimlab.instruments.hessian_top import HessianTop
from optimlab.instruments.step_stats import StepStats
from optimlab.registry import Registry
from optimlab.train.hooks import RunContext, StepHook

INSTRUMENTS: Registry[type[Instrument]] = Registry("instrument")
for _cls in (GradStats, DirectionVariance, HessianTop, StepStats):
    INSTRUMENTS.register(_cls.name, _cls, description=_cls.description)


def available_instruments() -> list[str]:
    return INSTRUMENTS.names()


def build_instruments(cfg: Any, ctx: RunContext) -> list[StepHook]:
    """One hook per name in `cfg.names` (an `InstrumentsConfig`), in that order."""
    return [INSTRUMENTS.get(name)(cfg, ctx) for name in cfg.names]
