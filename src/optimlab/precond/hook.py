"""`precond=kfac` in the trainer: a step hook that preconditions `.grad` after the backward (and after any
direction hook has written its direction), before the optimizer step. Its factors, eigenpairs, step counter
and label-sampling generator are the hook's checkpointed state."""

from __future__ import annotations

from typing import Any

from optimlab.directions.base import Objective
from optimlab.directions.hook import check_single_process_plain_gradient, register_estimator
from optimlab.errors import ConfigError
from optimlab.precond.kfac import KFAC
from optimlab.train.hooks import RunContext, StepHook, StepInfo

_LABEL_SEED = 104729  # offset of the true Fisher's label generator from the run seed


class PrecondHook(StepHook):
    name = "precond"
    prefix = "precond"

    def __init__(self, kfac: KFAC, apply: bool = True):
        self.kfac = kfac
        self.apply = apply  # False: factors and inverses on schedule, `.grad` left alone

    def after_backward(self, step: StepInfo) -> None:
        if self.apply:
            self.kfac.step(step.batch)
        else:
            self.kfac.update(step.batch)

    def stats(self) -> dict[str, float]:
        return self.kfac.stats()

    def state_dict(self) -> dict[str, Any]:
        return self.kfac.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kfac.load_state_dict(state)


def build_precond_hooks(cfg: Any, ctx: RunContext) -> list[StepHook]:
    """The hook for a trainer config's `precond` group (none for `precond=none`)."""
    p = cfg.precond
    if p.name == "none":
        return []
    check_single_process_plain_gradient(cfg, ctx, f"precond={p.name}")
    if p.fisher == "true" and ctx.task.train.tensors[-1].is_floating_point():
        raise ConfigError(f"precond.fisher=true samples class labels; task {ctx.task.name!r} has real targets: use precond.fisher=empirical")
    kfac = KFAC(
        ctx.model, ctx.optimizer, objective=Objective.of(ctx.task), t_cov=p.t_cov, t_inv=p.t_inv,
        damping=p.damping, decay=p.decay, kl_clip=p.kl_clip, fisher=p.fisher, seed=ctx.seed * 7919 + _LABEL_SEED,
    )  # fmt: skip
    if not kfac.layers:
        raise ConfigError(f"precond=kfac: the model of task {ctx.task.name!r} has no Linear/Conv1d/Conv2d layer")
    register_estimator(ctx.model, "precond", kfac)
    return [PrecondHook(kfac, p.apply)]
