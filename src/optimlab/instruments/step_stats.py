"""step_stats: Cockpit-style cheap statistics (Schneider, Dangel & Hennig, NeurIPS 2021), per layer and overall.

- `grad_norm`: the norm of the training gradient the optimizer receives (after clipping);
- `update_size`: ||w_{t+1} - w_t|| of the step;
- `update_ratio`: ||w_{t+1} - w_t|| / ||w_t||;
- `distance`: ||w_{t+1} - w_0|| from the parameters at the start of the run (kept in the checkpoint).

No extra gradient evaluation: a copy of the parameters at measured steps and a few norms.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlab.instruments.base import Instrument
from optimlab.train.hooks import RunContext, StepInfo


def _norms(values: dict[str, Tensor], key: str) -> dict[str, float]:
    squares = {name: float(v.detach().double().square().sum()) for name, v in values.items()}
    out = {f"{key}/{name}": s**0.5 for name, s in squares.items()}
    out[key] = sum(squares.values()) ** 0.5
    return out


class StepStats(Instrument):
    name = "step_stats"
    description = "gradient norm, update size, update/parameter ratio, distance from initialisation (per layer)"
    needs = ("training_gradient", "update")

    def __init__(self, cfg: Any, ctx: RunContext) -> None:
        super().__init__(cfg, ctx)
        self.initial = {name: p.detach().clone() for name, p in self.named_trainable()}
        self._before: dict[str, Tensor] | None = None
        self._values: dict[str, float] = {}

    def after_backward(self, step: StepInfo) -> None:
        if not self.schedule.due(step.step):
            return
        with self.timed():
            grads = {name: p.grad for name, p in self.named_trainable() if p.grad is not None}
            self._values = _norms(grads, "grad_norm") if grads else {}
            self._before = {name: p.detach().clone() for name, p in self.named_trainable()}

    def after_step(self, step: StepInfo) -> None:
        if self._before is None:
            return
        with self.timed(), torch.no_grad():
            now = dict(self.named_trainable())
            moves = {name: now[name].detach() - before for name, before in self._before.items()}
            values = {**self._values, **_norms(moves, "update_size")}
            sizes = _norms(self._before, "weight_norm")
            for key in [k for k in values if k.startswith("update_size")]:
                weight = sizes[key.replace("update_size", "weight_norm", 1)]
                values[key.replace("update_size", "update_ratio", 1)] = values[key] / weight if weight else 0.0
            values.update(_norms({n: now[n].detach() - w0 for n, w0 in self.initial.items()}, "distance"))
            self._before = None
        self.publish(step.step, values)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "initial": {k: v.clone() for k, v in self.initial.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "initial" in state:
            self.initial = {k: v.to(self.initial[k].device) for k, v in state["initial"].items() if k in self.initial}
