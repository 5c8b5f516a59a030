"""The step hook that carries a model's recurrent state across training batches and checkpoints it.

Models with a `carried` attribute (`optimlab.tasks.carried_state.CarriedState`: the word-level language
models) keep the hidden state at the end of each training window for the window that follows it. This hook
makes the last step's writes readable before each backward (`commit`) and puts the table into the run's
checkpoint under `hooks/carried_state`, so a resumed run starts its next batch from the same hidden state.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from optimlab.tasks.carried_state import CarriedState
from optimlab.train.hooks import RunContext, StepHook, StepInfo


class CarriedStateHook(StepHook):
    name = "carried_state"
    prefix = "carried"

    def __init__(self, stores: dict[str, CarriedState]):
        self.stores = stores

    def before_backward(self, step: StepInfo) -> None:
        for store in self.stores.values():
            store.commit()

    def state_dict(self) -> dict[str, Any]:
        return {name: store.state_dict() for name, store in self.stores.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, store in self.stores.items():
            if name in state:
                store.load_state_dict(state[name])


def carried_stores(model: nn.Module) -> dict[str, CarriedState]:
    """Every module's carried state, by module name ('' for the model itself)."""
    return {
        name: m.carried for name, m in model.named_modules() if isinstance(getattr(m, "carried", None), CarriedState)
    }


def build_carried_state_hook(cfg: Any, ctx: RunContext) -> list[StepHook]:
    stores = carried_stores(ctx.model)
    return [CarriedStateHook(stores)] if stores else []
