"""Hypergradient learning-rate control: MARTHE, RTHO and HD-like tuning around torch optimizers.

    from optimlab.hyper import Marthe
    hyper = Marthe(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), hyper_lr=1e-3, mu=-1)
    hyper.step(train_loss, val_closure)      # instead of train_loss.backward(); optimizer.step()

Baydin et al.'s training-gradient HD optimizers are `optimlab.optim.SGDHD` and `AdamHD`.
See docs/hypergradients.md.
"""

from __future__ import annotations

from typing import Any

import torch

from optimlab.errors import ConfigError
from optimlab.hyper.dynamics import AdamDynamics, Dynamics, SGDDynamics, make_dynamics
from optimlab.hyper.heuristics import VARIANTS
from optimlab.hyper.marthe import Marthe, rtho

__all__ = ["Marthe", "rtho", "build_hyper", "Dynamics", "SGDDynamics", "AdamDynamics", "make_dynamics", "VARIANTS"]


def build_hyper(cfg: Any, optimizer: torch.optim.Optimizer) -> Marthe | None:
    """The controller a trainer's `HyperConfig` asks for (`name`: none | marthe | rtho), or None.

    `marthe` uses `cfg.mu` (negative: adaptive); `rtho` fixes `mu = 1` and ignores `cfg.mu`.
    `holdout_fraction` is the trainer's business (it builds `val_closure` from the held-out split).
    """
    name = cfg.name
    if name == "none":
        return None
    if name not in ("marthe", "rtho"):
        raise ConfigError(f"unknown hyper.name {name!r}; choose from none, marthe, rtho")
    try:
        return Marthe(
            optimizer,
            cfg.hyper_lr,
            mu=1.0 if name == "rtho" else cfg.mu,
            alpha=cfg.alpha,
            first_order=cfg.first_order,
            lr_bounds=(cfg.lr_min, cfg.lr_max),
            variant=cfg.variant,
            val_every=cfg.val_every,
        )
    except ValueError as error:
        raise ConfigError(f"hyper={name}: {error}") from None
