"""The run's stateful pieces, declared once: one table drives both checkpoint save and restore.

Each piece is a name and a pair of functions (save, load). A checkpoint is `{name: save()}` for every
piece; restoring calls `load(checkpoint[name])` for the pieces the checkpoint holds, so a piece added in a
later version of optimlab keeps its fresh default when an older checkpoint is loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


@dataclasses.dataclass
class Progress:
    """The loop's own state: where it is, how long it has run, the best and last evaluations."""

    step: int = 0
    time: float = 0.0  # seconds of training before this process started (resumed runs)
    best: dict | None = None  # the best validation record so far, with its step
    last_eval: dict = dataclasses.field(default_factory=dict)
    last_train_loss: float | None = None
    diverged_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for field in dataclasses.fields(self):
            if field.name in state:
                setattr(self, field.name, state[field.name])


@dataclasses.dataclass(frozen=True)
class Piece:
    save: Callable[[], Any]
    load: Callable[[Any], None] | None  # None: recorded for inspection or read by the caller, not restored


class RunState:
    """Named pieces of state that make up a checkpoint."""

    def __init__(self) -> None:
        self._pieces: dict[str, Piece] = {}

    def add(self, name: str, save: Callable[[], Any], load: Callable[[Any], None] | None = None) -> None:
        if name in self._pieces:
            raise ValueError(f"run state piece {name!r} is declared twice")
        self._pieces[name] = Piece(save, load)

    def add_stateful(self, name: str, obj: Any) -> None:
        """A piece with torch's `state_dict()` / `load_state_dict()` protocol (model, optimizer, ...)."""
        self.add(name, obj.state_dict, obj.load_state_dict)

    def state_dict(self) -> dict[str, Any]:
        return {name: piece.save() for name, piece in self._pieces.items()}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Restore every piece the checkpoint holds; if one does not fit, restore what was there and raise."""
        before = copy.deepcopy(self.state_dict())
        try:
            self._load(checkpoint)
        except Exception:
            self._load(before)
            raise

    def _load(self, checkpoint: dict[str, Any]) -> None:
        for name, piece in self._pieces.items():
            if name in checkpoint and piece.load is not None:
                piece.load(checkpoint[name])


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states in weights_only-loadable types."""
    version, mt_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
