"""Generated optimisation problems: a noisy quadratic, the Rosenbrock function, logistic regression.

Each "sample" is a random draw that makes the minibatch gradient a noisy estimate of the true gradient, so
the trainer's sampling, batch size and microbatching act on them like on real data. Their main metric is the
validation loss (`main_metric="loss"`); `distance_to_optimum` is reported where the optimum is known.

The models hold the problem's variables (`model.weight`); their output for a batch of N samples is the
variable repeated N times, which the loss pairs with each sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from optimlab.errors import ConfigError
from optimlab.tasks.base import Batch, Split, Task
from optimlab.tasks.data import check_positive, rng
from optimlab.tasks.models import LogisticRegression


class Point(nn.Module):
    """A trainable point in R^dim: the variables of an analytic objective. Forward: the point, once per sample."""

    def __init__(self, init: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(init.clone().float())

    def forward(self, samples: Tensor) -> Tensor:
        return self.weight.expand(len(samples), -1)


def _point_forward(model: nn.Module, batch: Batch) -> Tensor:
    return model(batch[0])


def _count(batch: Batch, device: torch.device) -> Tensor:
    return torch.tensor(len(batch[0]), device=device)


def _distance(outputs: Tensor, optimum: Tensor) -> Tensor:
    """Summed over samples (every row is the same point), so sum / count is the distance."""
    return (outputs - optimum.to(outputs.device)).norm(dim=1).sum()


def _sizes(train: int, val: int, test: int) -> None:
    check_positive(train_samples=train, val_samples=val, test_samples=test)


# --------------------------------------------------------------------------------------------------------
# Noisy quadratic


@dataclass
class QuadraticOptions:
    dim: int = 100  # number of variables
    condition: float = 100.0  # ratio of the largest to the smallest curvature (log-spaced in between)
    noise: float = 1.0  # gradient noise scale: per-sample gradient covariance noise^2 * H (0: deterministic)
    init_scale: float = 1.0  # initial point ~ optimum + init_scale * N(0, I) (run seed)
    data_seed: int = 0  # seed of the optimum and the samples
    train_samples: int = 10000
    val_samples: int = 1000
    test_samples: int = 1000


def build_quadratic(options: QuadraticOptions, data_dir: Path) -> Task:
    """The noisy quadratic model (Zhang et al. 2019, "Which algorithmic choices matter at which batch sizes?").

    Per-sample loss l(w; x) = 1/2 sum_i h_i (w_i - x_i)^2 with curvatures h log-spaced from 1 down to
    1/condition and samples x = w* + noise * h^(-1/2) * z, z ~ N(0, I). The expected loss is
    1/2 (w - w*)^T H (w - w*) + noise^2 * dim / 2, and the per-sample gradient H (w - x) has mean H (w - w*)
    and covariance noise^2 H (gradient noise aligned with the curvature). `excess_loss` is the first term.
    """
    del data_dir
    check_positive(dim=options.dim, condition=options.condition)
    _sizes(options.train_samples, options.val_samples, options.test_samples)
    if options.condition < 1 or options.noise < 0:
        raise ConfigError("task option 'condition' must be >= 1 and 'noise' >= 0")
    curvature = np.logspace(0.0, -math.log10(options.condition), options.dim)
    optimum = rng(options.data_seed, 0).standard_normal(options.dim)

    def split(stream: int, n: int) -> Split:
        z = rng(options.data_seed, stream).standard_normal((n, options.dim))
        return Split((torch.as_tensor(optimum + options.noise * z / np.sqrt(curvature), dtype=torch.float32),))

    h = torch.as_tensor(curvature, dtype=torch.float32)
    w_star = torch.as_tensor(optimum, dtype=torch.float32)

    def loss(outputs: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        return 0.5 * (h.to(outputs.device) * (outputs - batch[0]) ** 2).sum(), _count(batch, outputs.device)

    def metrics(outputs: Tensor, batch: Batch) -> dict[str, tuple[Tensor, Tensor]]:
        count = _count(batch, outputs.device)
        excess = 0.5 * (h.to(outputs.device) * (outputs - w_star.to(outputs.device)) ** 2).sum()
        return {"distance_to_optimum": (_distance(outputs, w_star), count), "excess_loss": (excess, count)}

    def factory() -> nn.Module:
        return Point(w_star + options.init_scale * torch.randn(options.dim))

    return Task(
        "quadratic",
        split(1, options.train_samples),
        split(2, options.val_samples),
        split(3, options.test_samples),
        factory(),
        loss=loss,
        metrics=metrics,
        forward=_point_forward,
        main_metric="loss",
        higher_is_better=False,
        info={"optimum": optimum.tolist(), "curvature": curvature.tolist()},
        model_factory=factory,
    )


# --------------------------------------------------------------------------------------------------------
# Rosenbrock


@dataclass
class RosenbrockOptions:
    a: float = 1.0  # f(x, y) = (a - x)^2 + b (y - x^2)^2, minimum 0 at (a, a^2)
    b: float = 100.0
    start_x: float = -1.5  # the classic starting point (-1.5, 2)
    start_y: float = 2.0
    start_noise: float = 0.0  # add start_noise * N(0, I) to the start (run seed)
    noise: float = 0.0  # gradient noise: per-sample loss f + eps . (x, y), eps ~ N(0, noise^2 I)
    data_seed: int = 0
    train_samples: int = 10000
    val_samples: int = 1000
    test_samples: int = 1000


def build_rosenbrock(options: RosenbrockOptions, data_dir: Path) -> Task:
    """The Rosenbrock function of a 2-parameter model. Each sample adds a zero-mean linear term eps . theta,
    so minibatch gradients are unbiased with covariance noise^2 I / batch; with noise=0 every sample is f."""
    del data_dir
    _sizes(options.train_samples, options.val_samples, options.test_samples)
    if options.noise < 0:
        raise ConfigError(f"task option 'noise' must be >= 0, got {options.noise}")
    a, b = options.a, options.b
    optimum = torch.tensor([a, a * a])

    def split(stream: int, n: int) -> Split:
        eps = options.noise * rng(options.data_seed, stream).standard_normal((n, 2))
        return Split((torch.as_tensor(eps, dtype=torch.float32),))

    def loss(outputs: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        x, y = outputs[:, 0], outputs[:, 1]
        f = (a - x) ** 2 + b * (y - x * x) ** 2
        return (f + (batch[0] * outputs).sum(dim=1)).sum(), _count(batch, outputs.device)

    def metrics(outputs: Tensor, batch: Batch) -> dict[str, tuple[Tensor, Tensor]]:
        count = _count(batch, outputs.device)
        x, y = outputs[:, 0], outputs[:, 1]
        value = ((a - x) ** 2 + b * (y - x * x) ** 2).sum()
        return {"distance_to_optimum": (_distance(outputs, optimum), count), "function_value": (value, count)}

    def factory() -> nn.Module:
        # randn is drawn even when start_noise is 0, so the run's random stream does not depend on it.
        return Point(torch.tensor([options.start_x, options.start_y]) + options.start_noise * torch.randn(2))

    return Task(
        "rosenbrock",
        split(1, options.train_samples),
        split(2, options.val_samples),
        split(3, options.test_samples),
        factory(),
        loss=loss,
        metrics=metrics,
        forward=_point_forward,
        main_metric="loss",
        higher_is_better=False,
        info={"optimum": optimum.tolist()},
        model_factory=factory,
    )


# --------------------------------------------------------------------------------------------------------
# Logistic regression


@dataclass
class LogRegOptions:
    dim: int = 50  # number of features
    condition: float = 10.0  # ratio of the largest to the smallest feature scale (log-spaced)
    margin: float = 2.0  # norm of the true weight vector: larger is more separable
    label_noise: float = 0.0  # probability of flipping a label
    data_seed: int = 0
    train_samples: int = 5000
    val_samples: int = 1000
    test_samples: int = 1000


def build_logreg(options: LogRegOptions, data_dir: Path) -> Task:
    """Features x ~ N(0, diag(s^2)) with scales s log-spaced over `condition`, labels y ~ Bernoulli(sigmoid(
    w* . x)) for a random w* of norm `margin` (then flipped with probability `label_noise`). The model is one
    linear unit (bias included); the loss is the summed binary cross-entropy, a smooth convex problem."""
    del data_dir
    check_positive(dim=options.dim, condition=options.condition, margin=options.margin)
    _sizes(options.train_samples, options.val_samples, options.test_samples)
    if not 0 <= options.label_noise < 0.5:
        raise ConfigError(f"task option 'label_noise' must be in [0, 0.5), got {options.label_noise}")
    scales = np.logspace(0.0, -math.log10(options.condition), options.dim)
    direction = rng(options.data_seed, 0).standard_normal(options.dim)
    w_star = options.margin * direction / np.linalg.norm(direction) / scales  # margin in standardised units

    def split(stream: int, n: int) -> Split:
        g = rng(options.data_seed, stream)
        x = g.standard_normal((n, options.dim)) * scales
        p = 1.0 / (1.0 + np.exp(-(x @ w_star)))
        y = (g.random(n) < p) ^ (g.random(n) < options.label_noise)
        return Split((torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)))

    def loss(outputs: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        total = nn.functional.binary_cross_entropy_with_logits(outputs.squeeze(-1), batch[-1], reduction="sum")
        return total, _count(batch, outputs.device)

    def metrics(outputs: Tensor, batch: Batch) -> dict[str, tuple[Tensor, Tensor]]:
        correct = ((outputs.squeeze(-1) > 0) == (batch[-1] > 0.5)).sum()
        return {"accuracy": (correct, _count(batch, outputs.device))}

    def factory() -> nn.Module:
        return LogisticRegression(options.dim, 1)

    return Task(
        "logreg",
        split(1, options.train_samples),
        split(2, options.val_samples),
        split(3, options.test_samples),
        factory(),
        loss=loss,
        metrics=metrics,
        main_metric="loss",
        higher_is_better=False,
        info={"w_star": w_star.tolist()},
        model_factory=factory,
    )
