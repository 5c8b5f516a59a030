"""Marthe's checkpoint: a dataclass of scalars plus the tangents, in the version-1 layout."""

from __future__ import annotations

import dataclasses
import io

import torch

from optimlab.hyper import Marthe
from optimlab.hyper.marthe import MartheState

# The version-1 keys, in order: checkpoints written before MartheState existed have exactly these.
VERSION_1_KEYS = ["version", "step", "lr", "hyper_lr", "mu", "c", "adapt_mu", "h_prev", "last_hypergradient",
                  "ratios", "z_zero", "restarts", "events", "tangent", "aux"]  # fmt: skip


def _trained(seed: int = 0, steps: int = 3) -> tuple[torch.nn.Module, Marthe]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1).double()
    hyper = Marthe(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), hyper_lr=1e-3)
    x = torch.randn(8, 3, dtype=torch.float64)
    for _ in range(steps):
        hyper.step(model(x).pow(2).mean(), lambda: model(x).pow(2).mean())
    return model, hyper


def test_state_dict_keeps_the_version_1_layout_and_loads_weights_only():
    _, hyper = _trained()
    state = hyper.state_dict()
    assert list(state) == VERSION_1_KEYS
    stream = io.BytesIO()
    torch.save(state, stream)
    stream.seek(0)
    loaded = torch.load(stream, weights_only=True)
    _, other = _trained(seed=1, steps=1)
    other.load_state_dict(loaded)
    assert dataclasses.asdict(other._state) == dataclasses.asdict(hyper._state)
    assert other.lr == hyper.lr and other.steps == 3 and other.optimizer.param_groups[0]["lr"] == hyper.lr


def test_an_older_checkpoint_without_a_later_field_loads_with_its_default():
    _, hyper = _trained()
    state = hyper.state_dict()
    del state["events"], state["restarts"]
    _, other = _trained(seed=1, steps=1)
    other.load_state_dict(state)
    assert other.restarts == MartheState().restarts == 0 and other.events == []
    assert other.mu == hyper.mu and other.last_hypergradient == hyper.last_hypergradient
