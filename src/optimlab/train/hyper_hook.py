"""MARTHE / RTHO as a step hook of the trainer (`hyper=marthe` or `hyper=rtho`).

The hook holds part of the training split out for the validation gradient (never the test split), keeps
the training gradient's graph when the tangent needs `H z`, and wraps the optimizer step:
`before_optimizer_step` after the backward, `after_optimizer_step` (tangent, validation gradient, lr update)
after it. The validation loss is a held-out batch with the model in eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlab.errors import ConfigError
from optimlab.hyper import build_hyper
from optimlab.tasks import Split
from optimlab.train.hooks import RunContext, StepHook, StepInfo
from optimlab.train.sampler import BatchSampler

_HOLDOUT_SEED = 12345  # the held-out examples are the same for every seed of a configuration


class HypergradientHook(StepHook):
    name = "hyper"
    prefix = "hyper"

    def __init__(self, cfg: Any, ctx: RunContext):
        self.ctx = ctx
        self.holdout_fraction = cfg.holdout_fraction
        self.controller = build_hyper(cfg, ctx.optimizer)
        self.holdout: Split | None = None
        self.sampler: BatchSampler | None = None

    @property
    def needs_graph(self) -> bool:  # type: ignore[override]
        return self.controller.needs_graph

    def reserve(self, train: Split) -> Split:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(_HOLDOUT_SEED))
        held = max(1, int(round(len(train) * self.holdout_fraction)))
        self.holdout = train.subset(order[:held])
        self.sampler = BatchSampler(held, min(self.ctx.batch_size, held), self.ctx.seed + 1)
        return train.subset(order[held:])

    def after_backward(self, step: StepInfo) -> None:
        self.controller.before_optimizer_step([p.grad for p in self.controller.params])

    def after_step(self, step: StepInfo) -> None:
        self.controller.after_optimizer_step(self._validation_loss)

    def _validation_loss(self) -> Tensor:
        batch = self.ctx.to_device(self.holdout.batch(self.sampler.next()))
        model = self.ctx.model
        model.eval()
        try:
            loss_sum, count = self.ctx.loss(batch)
        finally:
            model.train()
        return loss_sum / count

    def stats(self) -> dict[str, float]:
        c = self.controller
        return {"hypergradient": c.last_hypergradient, "hyper_lr": c.hyper_lr, "mu": c.mu}

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict(), "sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.sampler.load_state_dict(state["sampler"])


def build_hypergradient_hook(cfg: Any, ctx: RunContext) -> HypergradientHook | None:
    """The hook for a trainer config's `hyper` group (None for `hyper=none`).

    The controller sets the lr itself from an exact tangent of plain full-batch steps, so it refuses what
    would make that tangent wrong: microbatches, AMP, clipping, an lr schedule, distributed training.
    """
    if cfg.hyper.name == "none":
        return None
    conflicts = {
        "train.microbatch_size": cfg.train.microbatch_size is not None,
        "train.amp": cfg.train.amp != "none",
        "train.clip_grad_norm": cfg.train.clip_grad_norm is not None,
        "schedule.name": cfg.schedule.name != "constant" or cfg.schedule.warmup_steps > 0,
        "distributed training": ctx.world_size > 1,
    }
    for key, conflict in conflicts.items():
        if conflict:
            raise ConfigError(f"hyper={cfg.hyper.name} controls the lr itself and does not combine with {key}")
    return HypergradientHook(cfg.hyper, ctx)
