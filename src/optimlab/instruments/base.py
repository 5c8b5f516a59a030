"""The instrument step hook: a schedule, a cost account, and statistics handed to the loop once each.

An instrument measures at the steps its `Schedule` marks (in `after_backward`: the parameters are those of
the training gradient, before the optimizer moves them), inside `isolated(model)`, and keeps the values
until the loop asks for `stats()` at its next log time. Each measurement's values come with the step they
were taken at (`step`) and the instrument's running cost: `cost/grad_evals` (forward+backward passes on a
batch beyond training's own), `cost/hvps` (Hessian-vector products) and `cost/seconds`.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from optimlab.instruments.schedule import Schedule
from optimlab.train.hooks import RunContext, StepHook


class Instrument(StepHook):
    """Subclasses set `name`, `description`, `needs` and implement `measure(step)` (returning flat stats)."""

    name = "instrument"
    description = ""
    # What it uses: "training_batch", "training_gradient", "independent_batches", "hvp", "update".
    needs: tuple[str, ...] = ()

    def __init__(self, cfg: Any, ctx: RunContext) -> None:
        self.prefix = f"instr/{self.name}"
        self.cfg = cfg
        self.ctx = ctx
        self.schedule = Schedule(cfg.every, cfg.start, cfg.log_spaced)
        self.cost = {"grad_evals": 0, "hvps": 0, "seconds": 0.0}
        self.pending: dict[str, float] = {}

    # ---- the model and loss the instrument measures

    @property
    def model(self) -> nn.Module:
        return self.ctx.model

    def named_trainable(self) -> list[tuple[str, Tensor]]:
        return [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]

    def loss_fn(self, model: nn.Module, batch: tuple) -> tuple[Tensor, Tensor | int]:
        return self.ctx.loss(batch, model)

    # ---- bookkeeping

    def timed(self) -> _Timer:
        return _Timer(self.cost)

    def publish(self, step: int, values: dict[str, float]) -> None:
        self.pending = {
            **values,
            "step": float(step),
            **{f"cost/{key}": float(value) for key, value in self.cost.items()},
        }

    def stats(self) -> dict[str, float]:
        out, self.pending = self.pending, {}
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"cost": dict(self.cost), "pending": dict(self.pending)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cost.update(state.get("cost", {}))
        self.pending = dict(state.get("pending", {}))


class _Timer:
    def __init__(self, cost: dict) -> None:
        self.cost = cost

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.cost["seconds"] += time.perf_counter() - self.started


def step_generator(seed: int, step: int, salt: int) -> torch.Generator:
    """A generator that depends only on (run seed, step, salt): measurements resume exactly."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 9973 + salt)
