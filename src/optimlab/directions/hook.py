"""The training side of a direction: a step hook that writes the direction into `.grad`.

Before each step the hook runs the direction's scheduled updates that are due (a snapshot, a clustering, an
EM step); after the backward it replaces `.grad` (the training batch's mean gradient) by the direction the
same code computes for measurement (`Direction.combine` / `training_direction`), so the optimizer, whatever
it is, consumes the direction. The direction's state is the hook's checkpointed state. With `apply=False`
(`direction.apply=false`) the hook only keeps the direction up to date: training follows the plain gradient,
bit for bit, and the direction can be measured along that trajectory.
"""

from __future__ import annotations

import weakref
from typing import Any

from torch import Tensor, nn

from optimlab.directions.base import Batch, Direction, Gradient, Measurable, Objective, read_grads, write_grads
from optimlab.errors import ConfigError
from optimlab.tasks import Split
from optimlab.train.hooks import RunContext, StepHook, StepInfo


class DirectionHook(StepHook):
    name = "direction"
    prefix = "direction"

    def __init__(self, direction: Direction, ctx: RunContext, apply: bool = True):
        self.direction = direction
        self.ctx = ctx
        self.apply = apply  # False: scheduled updates only, `.grad` left alone (the direction is observed)
        self.objective = Objective.of(ctx.task)
        self.updates_at_draw = False  # True: the training sampler runs the updates when it draws the batch

    def reserve(self, train: Split) -> Split:
        self.direction.bind(train, device=self.ctx.device, batch_size=self.ctx.batch_size, seed=self.ctx.seed)
        return train

    def update(self, step: int) -> None:
        """The direction's scheduled updates due before step `step`."""
        frequent, infrequent = self.direction.due(step)
        if infrequent:
            self.direction.infrequent(step, self.ctx.model, self.objective)
        if frequent:
            self.direction.frequent(step, self.ctx.model, self.objective)

    def before_backward(self, step: StepInfo) -> None:
        if not self.updates_at_draw:
            self.update(step.step)

    def after_backward(self, step: StepInfo) -> None:
        if not self.apply or not self.direction.ready:
            return
        model = self.ctx.model
        gradient = read_grads(model)
        direction = self.direction.training_direction(model, self.objective, step.batch, step.indices, gradient)
        if direction is not gradient:
            write_grads(model, direction)
        self.direction.costs.add(grad_evals=self.direction.step_grad_evals)

    def stats(self) -> dict[str, float]:
        return self.direction.stats()

    def state_dict(self) -> dict[str, Any]:
        return self.direction.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.direction.load_state_dict(state)


# The estimators a run keeps up to date, by the model they follow: gradient instruments measure them
# (instruments/direction_variance.py). Weak keys: a run's entry goes with its model.
_ESTIMATORS: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()


def register_estimator(model: nn.Module, kind: str, estimator: Any) -> None:
    """Record the run's direction (`kind="direction"`) or preconditioner (`kind="precond"`) of `model`."""
    _ESTIMATORS.setdefault(model, {})[kind] = estimator


class Preconditioned:
    """A direction preconditioned by K-FAC: what `direction=... precond=kfac` trains with."""

    def __init__(self, inner: Direction, kfac: Any):
        self.inner, self.kfac = inner, kfac
        self.measure_grad_evals = inner.measure_grad_evals

    @property
    def train_split(self):
        return self.inner.train_split

    def sample(self, generator, batch_size: int) -> Tensor:
        return self.inner.sample(generator, batch_size)

    def direction(self, model: nn.Module, objective: Objective, batch: Batch, indices: Tensor | None = None) -> Gradient:
        return self.kfac.precondition(self.inner.direction(model, objective, batch, indices))


def observed_estimator(model: nn.Module) -> Measurable | None:
    """The estimator a run keeps for `model` (its direction, K-FAC, or both composed), or None."""
    entry = _ESTIMATORS.get(model, {})
    direction, kfac = entry.get("direction"), entry.get("precond")
    if direction is not None and kfac is not None:
        return Preconditioned(direction, kfac)
    return direction if direction is not None else kfac


def check_single_process_plain_gradient(cfg: Any, ctx: RunContext, what: str) -> None:
    """Directions and preconditioners rewrite `.grad` with unscaled values computed in one process: refuse
    what would make that wrong (fp16 loss scaling, several ranks, the hypergradient's own graph)."""
    conflicts = {
        "train.amp=fp16": cfg.train.amp == "fp16",
        "distributed training": ctx.world_size > 1,
        f"hyper={cfg.hyper.name}": cfg.hyper.name != "none",
    }
    for key, conflict in conflicts.items():
        if conflict:
            raise ConfigError(f"{what} does not combine with {key}")


def build_direction_hooks(cfg: Any, ctx: RunContext) -> list[StepHook]:
    """The hook for a trainer config's `direction` group (none for `direction=sgd`)."""
    from optimlab.directions import build_direction

    if cfg.direction.name == "sgd":
        return []
    check_single_process_plain_gradient(cfg, ctx, f"direction={cfg.direction.name}")
    if cfg.direction.name == "gc" and cfg.direction.apply and cfg.train.clip_grad_norm is not None:
        raise ConfigError("direction=gc replaces the clipped gradient and does not combine with train.clip_grad_norm")
    direction = build_direction(cfg.direction, ctx.model)
    register_estimator(ctx.model, "direction", direction)
    return [DirectionHook(direction, ctx, cfg.direction.apply)]
