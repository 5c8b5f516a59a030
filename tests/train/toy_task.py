"""A tiny synthetic task for trainer tests: fast, with dropout (exercises RNG restore) and a dtype option."""

import time
from dataclasses import dataclass

import torch
from torch import nn

from optimlab.tasks import Split, Task, register_task
from optimlab.tasks.registry import _TASKS


@dataclass
class ToyOptions:
    samples: int = 256
    features: int = 8
    classes: int = 3
    dropout: float = 0.1
    dtype: str = "float32"
    delay: float = 0.0  # seconds of sleep per forward, so subprocess tests can signal a run mid-way


class Slow(nn.Module):
    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    def forward(self, x):
        if self.delay and self.training:
            time.sleep(self.delay)
        return x


def _split(x, y, lo, hi):
    return Split((x[lo:hi], y[lo:hi]))


def build_toy(options: ToyOptions, data_dir) -> Task:
    dtype = getattr(torch, options.dtype)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(options.samples, options.features, generator=generator, dtype=dtype)
    y = (x[:, : options.classes].argmax(dim=1)).long()

    def factory() -> nn.Module:
        return nn.Sequential(
            Slow(options.delay),
            nn.Linear(options.features, 16), nn.Tanh(), nn.Dropout(options.dropout), nn.Linear(16, options.classes)
        ).to(dtype)

    n = options.samples
    splits = _split(x, y, 0, n // 2), _split(x, y, n // 2, 3 * n // 4), _split(x, y, 3 * n // 4, n)
    return Task("toy", *splits, factory(), model_factory=factory)


if "toy" not in _TASKS:
    register_task("toy", options=ToyOptions, description="synthetic test task")(build_toy)


