"""grad_stats: the study's statistics of the training batch's gradient from per-example moments.

With per-example gradients g_i of the batch of n examples, the mini-batch gradient's per-coordinate
moments are estimated without repeated draws (Faghri et al. 2020, section on per-example estimators):
m = mean_i g_i, v = Var_i(g_i) / n (the unbiased per-example variance over the batch size), and
s = m^2 (whose expectation is mu^2 + sigma^2/n = E[g_batch^2]). The study's var, nvar, snr and gnorm
follow (statistics.py), per layer and overall, plus `example_var`: the mean per-example variance.

Two ways to get the moments:

- by-product (`byproduct` = 1): layer hooks attached in `before_backward` read the training backward's own
  layer inputs and output gradients (per_example.py), at the cost of the hooks only. This needs the loop to
  say what it seeded the backward with: `StepInfo.grad_scale` (the recorded gradients are grad_scale x the
  gradients of the per-example summands; 1/count for a backward of the mean loss, 1 for microbatched sums),
  set after the backward. Parameters without a layer rule (LSTM, ...) get their moments by torch.func on
  the same batch.
- recomputed (`byproduct` = 0): one more forward+backward pass on the training batch, in isolation; used
  when the loop gives no `grad_scale` (then hooks are no longer attached) or under batch norm in training
  mode. Batch norm in training mode couples the examples, so this instrument computes per-example
  gradients with those layers in eval mode (running statistics, not updated): the documented policy,
  reported as `bn_eval` = 1.
"""

from __future__ import annotations

from typing import Any

import torch

from optimlab.instruments.base import Instrument
from optimlab.instruments.fallback import per_example_grads
from optimlab.isolation import isolated
from optimlab.instruments.per_example import (
    MomentRecorder,
    Moments,
    per_example_moments,
    plan_layers,
    train_mode_batch_norms,
)
from optimlab.instruments.statistics import Estimate, layer_statistics
from optimlab.train.hooks import RunContext, StepInfo


class GradStats(Instrument):
    name = "grad_stats"
    description = "var, nvar, snr, gnorm of the training batch's gradient from per-example moments (by-product)"
    needs = ("training_batch", "training_backward")

    def __init__(self, cfg: Any, ctx: RunContext) -> None:
        super().__init__(cfg, ctx)
        self._recorder: MomentRecorder | None = None
        self._root_calls = 0
        self._root_handle = None
        self._byproduct_possible = True  # until a step shows the loop gives no grad_scale

    def before_backward(self, step: StepInfo) -> None:
        if self._byproduct_possible and self.schedule.due(step.step) and not train_mode_batch_norms(self.model):
            self._recorder = MomentRecorder(plan_layers(self.model))
            self._recorder.attach()
            self._root_calls = 0
            self._root_handle = self.model.register_forward_hook(self._count_root_call)

    def _count_root_call(self, *_: Any) -> None:
        self._root_calls += 1

    def after_backward(self, step: StepInfo) -> None:
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            recorder.detach()
            self._root_handle.remove()
        if not self.schedule.due(step.step) or len(step.batch[0]) < 2:
            return
        scale = getattr(step, "grad_scale", None)
        if recorder is not None and (scale is None or self._root_calls == 0):
            self._byproduct_possible = False  # the loop gives no scale, or runs its forward before the hook
            recorder = None
        if recorder is not None and any(count > self._root_calls for count in recorder.calls.values()):
            recorder = None  # a layer applied twice per forward: its per-example gradient sums both uses
        with self.timed(), isolated(self.model):
            if recorder is not None:
                moments = self._byproduct(recorder, float(scale), step)
            else:
                moments = self._recompute(step)
            values = self._statistics(moments)
            values["byproduct"] = float(recorder is not None)
        self.publish(step.step, values)

    def _byproduct(self, recorder: MomentRecorder, scale: float, step: StepInfo) -> dict[str, Moments]:
        n = len(step.batch[0])
        recorder.grad_scale = 1.0
        for name in recorder.sums:  # rescale the raw sums to the per-example summands' gradients
            recorder.sums[name] = recorder.sums[name] / scale
            recorder.squares[name] = recorder.squares[name] / (scale * scale)
        params = dict(self.model.named_parameters())
        for name in recorder.plan.ruled:
            if name not in recorder.sums:
                recorder.add(name, torch.zeros_like(params[name]), torch.zeros_like(params[name]))
        if recorder.plan.fallback:
            grads = per_example_grads(self.model, self.loss_fn, step.batch, recorder.plan.fallback)
            self.cost["grad_evals"] += 1
            for name, g in grads.items():
                recorder.add(name, g.sum(0), g.square().sum(0))
        moments = recorder.moments(n)
        return {name: moments[name] for name in params if name in moments}

    def _recompute(self, step: StepInfo) -> dict[str, Moments]:
        moments = per_example_moments(
            self.model,
            self.loss_fn,
            step.batch,
            microbatch_size=self.cfg.microbatch_size,
            batch_norm="eval" if train_mode_batch_norms(self.model) else "error",
        )
        self.cost["grad_evals"] += 1
        return moments

    def _statistics(self, moments: dict[str, Moments]) -> dict[str, float]:
        n = next(iter(moments.values())).count
        estimates = {name: Estimate(m.mean, m.mean.square(), m.variance / n) for name, m in moments.items()}
        values = layer_statistics(estimates)
        size = sum(m.variance.numel() for m in moments.values())
        values["example_var"] = float(sum(m.variance.double().sum() for m in moments.values())) / size
        values["bn_eval"] = float(bool(train_mode_batch_norms(self.model)))
        return values
