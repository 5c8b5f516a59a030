"""direction_variance: the study's repeated-draw estimator for the optimizer's own step direction.

When the run keeps a direction or K-FAC up to date (`direction=...`, `precond=kfac`, applied or only
observed with `apply=false`; docs/directions.md), each draw is that estimator's direction on a batch it
draws itself (stratified for gradient clustering) and then the optimizer's step for it; the `sgd_`
statistics stay those of the plain mini-batch gradient on the instrument's own batches.

At a measured step, T gradients on independent batches of size g (from the instrument's own sampler over
the training split; the training stream is never advanced) are turned into the direction the optimizer
would take (`peek_direction`: the live optimizer state, nothing modified). The study's var, nvar, snr,
gnorm (statistics.py) of that direction, and its `bias` against the SGD direction (the mini-batch mean
gradient, from the same batches), per layer and overall; the same statistics of the SGD direction itself
under `sgd_<stat>`. `compat='study'` uses the original's two-phase, biased form (2T draws).

Cost: T (or 2T) gradient evaluations and as many copies of the optimizer's step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlab.directions.base import Objective
from optimlab.directions.hook import observed_estimator
from optimlab.instruments.base import Instrument, step_generator
from optimlab.instruments.direction import peek_direction
from optimlab.isolation import isolated
from optimlab.instruments.statistics import (
    layer_statistics,
    study_estimate,
    unbiased_estimate,
)
from optimlab.train.hooks import RunContext, StepInfo

SAMPLER_OFFSET = 104_729  # separates this sampler's seed from the training sampler's


class _Sums:
    """Running sum_t x and sum_t x^2 (and sum_t (x - e)^2 against a fixed mean e) per parameter."""

    def __init__(self, center: dict[str, Tensor] | None = None) -> None:
        self.total: dict[str, Tensor] = {}
        self.squares: dict[str, Tensor] = {}
        self.deviations: dict[str, Tensor] = {}
        self.center = center

    def add(self, values: dict[str, Tensor]) -> None:
        for name, x in values.items():
            x = x.double()
            if name not in self.total:
                self.total[name], self.squares[name] = torch.zeros_like(x), torch.zeros_like(x)
                self.deviations[name] = torch.zeros_like(x)
            self.total[name] += x
            self.squares[name] += x.square()
            if self.center is not None:
                self.deviations[name] += (x - self.center[name]).square()


class DirectionVariance(Instrument):
    name = "direction_variance"
    description = "the study's var, nvar, snr, gnorm, bias of the optimizer's direction from T independent draws"
    needs = ("independent_batches",)

    def __init__(self, cfg: Any, ctx: RunContext) -> None:
        super().__init__(cfg, ctx)
        if cfg.compat not in ("unbiased", "study"):
            raise ValueError(f"compat must be 'unbiased' or 'study', got {cfg.compat!r}")
        if cfg.draws < 2:
            raise ValueError(f"draws must be at least 2, got {cfg.draws}")
        self.sampler = ctx.sampler(ctx.task.train, SAMPLER_OFFSET, cfg.draw_batch_size or ctx.batch_size)
        # The parameters the optimizer moves (a trainable parameter left out of it has no direction).
        owned = {id(p) for group in ctx.optimizer.param_groups for p in group["params"]}
        self._optimized = [(name, p) for name, p in self.named_trainable() if id(p) in owned]

    def _draw(self, step: int, index: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(SGD direction, optimizer direction) on one fresh batch."""
        batch = self.ctx.to_device(self.ctx.task.train.batch(self.sampler.next()))
        if self.ctx.task.augment is not None:
            batch = self.ctx.task.augment(batch, step_generator(self.ctx.seed, step, 1000 + index))
        named = self._optimized
        params = [p for _, p in named]
        loss_sum, count = self.loss_fn(self.model, batch)
        grads = torch.autograd.grad(loss_sum / count, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]
        self.cost["grad_evals"] += 1
        names = [name for name, _ in named]
        estimator = observed_estimator(self.model)
        if estimator is not None:
            grads_of = self._estimator_direction(estimator, step, index, batch)
            directions = peek_direction(self.ctx.optimizer, params, [grads_of[name] for name in names])
        else:
            directions = peek_direction(self.ctx.optimizer, params, grads)
        return dict(zip(names, grads)), dict(zip(names, directions))

    def _estimator_direction(self, estimator, step: int, index: int, batch: tuple) -> dict[str, Tensor]:
        """The estimator's direction on a batch it draws (a uniform-batch preconditioner: this draw's batch)."""
        indices = None
        if hasattr(estimator, "sample"):
            size = self.cfg.draw_batch_size or self.ctx.batch_size
            indices = estimator.sample(step_generator(self.ctx.seed, step, 5000 + index), size)
            batch = self.ctx.to_device(estimator.train_split.batch(indices))
            if self.ctx.task.augment is not None:
                batch = self.ctx.task.augment(batch, step_generator(self.ctx.seed, step, 6000 + index))
        self.cost["grad_evals"] += estimator.measure_grad_evals
        return estimator.direction(self.model, Objective.of(self.ctx.task), batch, indices)

    def after_backward(self, step: StepInfo) -> None:
        if not self.schedule.due(step.step):
            return
        draws = self.cfg.draws
        with self.timed(), isolated(self.model):
            if self.cfg.compat == "unbiased":
                sgd, ours = _Sums(), _Sums()
                for t in range(draws):
                    g, d = self._draw(step.step, t)
                    sgd.add(g)
                    ours.add(d)
                sgd_est = {n: unbiased_estimate(sgd.total[n], sgd.squares[n], draws) for n in sgd.total}
                our_est = {n: unbiased_estimate(ours.total[n], ours.squares[n], draws) for n in ours.total}
            else:
                first_sgd, first = _Sums(), _Sums()
                for t in range(draws):
                    g, d = self._draw(step.step, t)
                    first_sgd.add(g)
                    first.add(d)
                sgd_mean = {n: v / draws for n, v in first_sgd.total.items()}
                our_mean = {n: v / draws for n, v in first.total.items()}
                sgd, ours = _Sums(sgd_mean), _Sums(our_mean)
                for t in range(draws):
                    g, d = self._draw(step.step, draws + t)
                    sgd.add(g)
                    ours.add(d)
                sgd_est = {n: study_estimate(sgd_mean[n], sgd.squares[n], sgd.deviations[n], draws) for n in sgd_mean}
                our_est = {n: study_estimate(our_mean[n], ours.squares[n], ours.deviations[n], draws) for n in our_mean}
            values = layer_statistics(our_est, {n: e.mean for n, e in sgd_est.items()})
            values.update(layer_statistics(sgd_est, prefix="sgd_"))
        self.publish(step.step, values)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "sampler" in state:
            self.sampler.load_state_dict(state["sampler"])
