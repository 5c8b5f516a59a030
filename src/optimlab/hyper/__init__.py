"""Hypergradient learning-rate control: MARTHE, RTHO and HD-like tuning around torch optimizers.

    from optimlab.hyper import Marthe
    hyper = Marthe(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), hyper_lr=1e-3, mu=-1)
    hyper.step(train_loss, val_closure)      # instead of train_loss.backward(); optimizer.step()

Baydin et al.'s training-gradient HD optimizers are `optimlab.optim.SGDHD` and `AdamHD`.
See docs/hypergradients.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from optimlab.errors import ConfigError
from optimlab.hyper.dynamics import AdamDynamics, Dynamics, SGDDynamics, make_dynamics
from optimlab.hyper.heuristics import VARIANTS
from optimlab.hyper.marthe import Marthe, rtho
from optimlab.registry import Registry

__all__ = ["Marthe", "rtho", "build_hyper", "CONTROLLERS", "Dynamics", "SGDDynamics", "AdamDynamics", "make_dynamics", "VARIANTS"]


# name -> builder (HyperConfig, optimizer) -> controller. `none` builds no controller: the optimizer's lr
# follows the schedule.
CONTROLLERS: Registry[Callable[[Any, torch.optim.Optimizer], Marthe | None]] = Registry("hyper.name")


@CONTROLLERS.register("none", description="no controller: the lr follows the schedule")
def _none(cfg: Any, optimizer: torch.optim.Optimizer) -> None:
    return None


@CONTROLLERS.register("marthe", description="MARTHE (Donini et al. 2020): hypergradient of the lr, mu = hyper.mu")
def _marthe(cfg: Any, optimizer: torch.optim.Optimizer) -> Marthe:
    return _controller(cfg, optimizer, mu=cfg.mu)


@CONTROLLERS.register("rtho", description="RTHO (Franceschi et al. 2017): MARTHE with mu = 1")
def _rtho(cfg: Any, optimizer: torch.optim.Optimizer) -> Marthe:
    return _controller(cfg, optimizer, mu=1.0)


def _controller(cfg: Any, optimizer: torch.optim.Optimizer, mu: float) -> Marthe:
    return Marthe(
        optimizer,
        cfg.hyper_lr,
        mu=mu,
        alpha=cfg.alpha,
        first_order=cfg.first_order,
        lr_bounds=(cfg.lr_min, cfg.lr_max),
        variant=cfg.variant,
        val_every=cfg.val_every,
    )


def build_hyper(cfg: Any, optimizer: torch.optim.Optimizer) -> Marthe | None:
    """The controller a trainer's `HyperConfig` asks for (`name`: none | marthe | rtho), or None.

    `marthe` uses `cfg.mu` (negative: adaptive); `rtho` fixes `mu = 1` and ignores `cfg.mu`.
    `holdout_fraction` is the trainer's business (it builds `val_closure` from the held-out split).
    """
    build = CONTROLLERS.get(cfg.name)
    try:
        return build(cfg, optimizer)
    except ValueError as error:
        raise ConfigError(f"hyper={cfg.name}: {error}") from None
