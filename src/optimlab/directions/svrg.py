"""SVRG (Johnson & Zhang 2013, "Accelerating stochastic gradient descent using predictive variance reduction").

The direction is the control-variate estimate `mu - g(w_snap, b) + g(w, b)`: the mean gradient `mu` over the
whole training split at a snapshot `w_snap` of the weights, minus the snapshot's gradient on the batch,
plus the live gradient on the same batch. It is unbiased for the full gradient at `w` and feeds any base
optimizer (SGD, momentum, Adam). The snapshot (a copy of the weights and one pass over the training split)
is the infrequent update, every `snapshot_every` steps, taken before that step's direction.

The snapshot gradients are computed in eval mode by default (batch-norm running statistics, no dropout), so
`mu` and `g(w_snap, b)` are the same deterministic function and the control variate has mean zero exactly;
`snapshot_mode="train"` is the original code's choice (fartashf/gvar_code), where dropout masks and
batch statistics differ between the two passes. Either way snapshots leave the live model's buffers and the
RNG untouched.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn

from optimlab.directions.base import (
    Batch,
    Direction,
    Gradient,
    Objective,
    Schedule,
    batch_gradient,
    full_gradient,
    side_effect_free,
)


class SVRG(Direction):
    name = "svrg"
    step_grad_evals = 1.0  # the snapshot's gradient on each training batch
    measure_grad_evals = 2.0  # live and snapshot gradients

    def __init__(self, model: nn.Module, snapshot_every: int = 1000, snapshot_mode: str = "eval"):
        super().__init__()
        if snapshot_mode not in ("eval", "train"):
            raise ValueError(f"snapshot_mode must be 'eval' or 'train', got {snapshot_mode!r}")
        self.schedule = Schedule(snapshot_every)
        self.snapshot_mode = snapshot_mode
        self.snapshot = copy.deepcopy(model)
        for p in self.snapshot.parameters():
            p.grad = None
        self.mu: Gradient | None = None
        self.snapshot_step = -1

    @property
    def ready(self) -> bool:
        return self.mu is not None

    def due(self, step: int) -> tuple[bool, bool]:
        return False, self.schedule.due(step)

    def infrequent(self, step: int, model: nn.Module, objective: Objective) -> None:
        """Copy the live weights and buffers into the snapshot and take the mean gradient over the split."""
        self.snapshot.load_state_dict(model.state_dict())
        self.mu, examples = full_gradient(
            self.snapshot, objective, self.train_split, self.batch_size, self.device,
            train_mode=self.snapshot_mode == "train",
        )  # fmt: skip
        self.snapshot_step = step
        self.costs.add(full_passes=1.0, examples=examples)

    def combine(
        self, model: nn.Module, objective: Objective, batch: Batch, indices: Tensor | None, gradient: Gradient
    ) -> Gradient:
        if self.mu is None:
            return gradient  # before the first snapshot: the plain gradient
        with side_effect_free(self.snapshot):
            self.snapshot.train(self.snapshot_mode == "train")
            old = batch_gradient(self.snapshot, objective, batch)
        return {name: self.mu[name] - old[name] + g for name, g in gradient.items()}

    def stats(self) -> dict[str, float]:
        return {**super().stats(), "snapshot_step": float(self.snapshot_step)}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "snapshot": self.snapshot.state_dict(),
            "mu": None if self.mu is None else dict(self.mu),
            "snapshot_step": self.snapshot_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.snapshot.load_state_dict(state["snapshot"])
        self.mu = None if state["mu"] is None else {k: v.to(self.device) for k, v in state["mu"].items()}
        self.snapshot_step = int(state["snapshot_step"])


__all__ = ["SVRG"]
