"""Step directions: what an estimator writes into `.grad` for the optimizer (docs/directions.md).

    direction=sgd   the mini-batch gradient (the default; no hook)
    direction=svrg  SVRG's control variate  mu - g(w_snap, b) + g(w, b)
    direction=gc    gradient clustering's stratified, size-weighted estimate

Each `Direction` has a pure `direction(model, objective, batch, indices)` for measurement and trains
through `DirectionHook`, which calls the same code.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from optimlab.directions.base import (
    Costs,
    Direction,
    Gradient,
    Measurable,
    Objective,
    Schedule,
    side_effect_free,
)
from optimlab.directions.svrg import SVRG
from optimlab.errors import ConfigError


def build_direction(cfg: Any, model: nn.Module) -> Direction:
    """A direction from a `DirectionConfig` (or anything with its attributes)."""
    if cfg.name == "sgd":
        return Direction()
    if cfg.name == "svrg":
        return SVRG(model, cfg.snapshot_every, cfg.snapshot_mode)
    if cfg.name == "gc":
        from optimlab.directions.clustering import GradientClustering

        return GradientClustering(
            model, clusters=cfg.clusters, mode=cfg.gc_mode, citers=cfg.citers, snapshot_every=cfg.snapshot_every,
            online_every=cfg.online_every, beta=cfg.beta, min_size=cfg.min_size,
            size_weighting=cfg.size_weighting, allocation=cfg.allocation,
        )  # fmt: skip
    raise ConfigError(f"config key 'direction.name': unknown direction {cfg.name!r}")


__all__ = ["SVRG", "Costs", "Direction", "Gradient", "Measurable", "Objective", "Schedule", "build_direction", "side_effect_free"]
