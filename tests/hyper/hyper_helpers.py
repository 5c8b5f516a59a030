"""Shared fixtures for the hypergradient tests: a tiny float64 model and a fixed data stream."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, unused: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
        if unused:
            self.unused = nn.Linear(2, 2)  # in the optimizer, never in the loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def make_model(seed: int = 0, unused: bool = False, frozen: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    model = MLP(unused).double()
    if frozen:
        model.body[0].bias.requires_grad_(False)
    return model


def make_conv_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 3 * 3, 3),
    ).double()


def batches(n: int, seed: int = 1, shape=(8, 4)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(*shape, generator=g, dtype=torch.float64), torch.randint(0, 3, (shape[0],), generator=g))
            for _ in range(n)]


def loss_fn(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def params_vector(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])
