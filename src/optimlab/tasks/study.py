"""Two problems of the gradient-variance study (Faghri et al. 2020) whose gradient noise is known by design.

- `nqm`: the noisy quadratic model (Zhang et al. 2019), the `quadratic` task's data and loss with the
  variables held as the weight of a Linear layer applied to a constant input, so the per-layer methods
  (K-FAC, gradient clustering) see it: each example's gradient is then exactly rank-1 (`d 1^T`).
- `random_features`: student/teacher regression with random features. Inputs x ~ N(0, I_dim); the teacher is
  a fixed one-hidden-layer ReLU network plus Gaussian label noise; the student is a random-features model, a
  fixed random ReLU layer of `ratio * train_samples` features and a trained linear readout. `ratio` is the
  over-parameterisation ratio the study varies (about 1 to 10): the student interpolates the training set
  once it exceeds 1.

Both report the loss as their main metric (lower is better).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from optimlab.errors import ConfigError
from optimlab.tasks import synthetic
from optimlab.tasks.base import Batch, Split, Task
from optimlab.tasks.data import check_positive, rng


class LinearPoint(nn.Module):
    """A point in R^dim held as `Linear(1, dim, bias=False).weight`; forward: the point once per sample."""

    def __init__(self, init: Tensor) -> None:
        super().__init__()
        self.layer = nn.Linear(1, len(init), bias=False)
        with torch.no_grad():
            self.layer.weight.copy_(init.float().unsqueeze(1))

    def forward(self, samples: Tensor) -> Tensor:
        return self.layer(samples.new_ones(len(samples), 1))


def build_nqm(options: synthetic.QuadraticOptions, data_dir: Path) -> Task:
    """The noisy quadratic model with its variables in a Linear layer (see the module docstring)."""
    task = synthetic.build_quadratic(options, data_dir)

    def factory() -> nn.Module:
        return LinearPoint(task.model_factory().weight.detach())

    return dataclasses.replace(task, name="nqm", model=LinearPoint(task.model.weight.detach()), model_factory=factory)


@dataclass
class RandomFeaturesOptions:
    dim: int = 20  # input dimension
    ratio: float = 2.0  # over-parameterisation: student features / training samples
    teacher_features: int = 100  # hidden ReLU units of the teacher
    noise: float = 0.1  # standard deviation of the label noise
    data_seed: int = 0  # seed of the teacher and the samples
    train_samples: int = 500
    val_samples: int = 500
    test_samples: int = 500


class RandomFeatures(nn.Module):
    """Fixed random ReLU features (a buffer of N(0, 1/dim) weights, never trained) and a trained linear readout."""

    def __init__(self, dim: int, features: int) -> None:
        super().__init__()
        self.register_buffer("projection", torch.randn(features, dim) * dim**-0.5)
        self.readout = nn.Linear(features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(torch.relu(x @ self.projection.T)).squeeze(-1)


def squared_error(outputs: Tensor, batch: Batch) -> tuple[Tensor, int]:
    return 0.5 * ((outputs - batch[-1]) ** 2).sum(), len(batch[-1])


def no_metrics(outputs: Tensor, batch: Batch) -> dict[str, tuple[Tensor, int]]:
    return {}


def build_random_features(options: RandomFeaturesOptions, data_dir: Path) -> Task:
    """Student/teacher random-features regression (see the module docstring)."""
    del data_dir
    check_positive(dim=options.dim, ratio=options.ratio, teacher_features=options.teacher_features,
                   train_samples=options.train_samples, val_samples=options.val_samples,
                   test_samples=options.test_samples)  # fmt: skip
    if options.noise < 0:
        raise ConfigError(f"task option 'noise' must be >= 0, got {options.noise}")
    teacher = rng(options.data_seed, 0)
    w = teacher.standard_normal((options.teacher_features, options.dim)) / np.sqrt(options.dim)
    a = teacher.standard_normal(options.teacher_features) / np.sqrt(options.teacher_features)

    def split(stream: int, n: int) -> Split:
        g = rng(options.data_seed, stream)
        x = g.standard_normal((n, options.dim))
        y = np.maximum(x @ w.T, 0.0) @ a + options.noise * g.standard_normal(n)
        return Split((torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)))

    features = max(1, round(options.ratio * options.train_samples))

    def factory() -> nn.Module:
        return RandomFeatures(options.dim, features)

    return Task(
        "random_features",
        split(1, options.train_samples),
        split(2, options.val_samples),
        split(3, options.test_samples),
        factory(),
        loss=squared_error,
        metrics=no_metrics,
        main_metric="loss",
        higher_is_better=False,
        info={"features": features, "ratio": options.ratio},
        model_factory=factory,
    )
