"""Optimizees for meta-training: a model's parameters, a functional loss and a stream of batches.

A problem gives fresh parameters for a seed (`init`), the mean loss of a parameter dict on a batch (`loss`,
through `torch.func.functional_call`, so the inner loop is differentiable), and deterministic batches: the
order of batches is a pure function of (seed, epoch) and the stream's state is (epoch, position), as in the
trainer's sampler, so a carried trajectory resumes exactly after a checkpoint.

`TaskProblem` adapts any registered optimlab task (`task.new_model`, `task.functional_loss`,
`task.train` / `task.val`); `LinearRegressionProblem` (a quadratic) and `TinyMLPProblem` are small
self-contained optimizees for tests and quick checks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from optimlab.train.sampler import BatchSampler

Params = dict[str, Tensor]


class Problem:
    """Base: subclasses provide `_model(seed)`, `inputs`/`targets` splits or override `batch`/`loss`."""

    name = "problem"
    batch_size = 32

    def init(self, seed: int) -> tuple[Params, Params]:
        """(parameters, buffers) of a freshly initialised model; the caller's RNG is left undisturbed."""
        model = self.new_model(seed)
        params = {k: v.detach().clone() for k, v in model.named_parameters()}
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        return params, buffers

    def new_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.model_factory()

    def sampler(self, seed: int, split: str = "train") -> BatchSampler:
        return BatchSampler(self.num_samples(split), self.batch_size, seed)

    def loss(self, params_and_buffers: Params, batch: Any) -> Tensor:
        """The mean loss of the model with these tensors on one batch (differentiable in the tensors)."""
        total, count = self.functional_loss(params_and_buffers, batch)
        return total / count


class _TensorDataProblem(Problem):
    """A problem over in-memory (x, y) tensors with a fixed model class."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, val_fraction: float = 0.25):
        n_val = max(1, int(len(x) * val_fraction))
        self.data = {"train": (x[n_val:], y[n_val:]), "val": (x[:n_val], y[:n_val])}
        self.batch_size = batch_size
        self._model = self.model_factory()

    def num_samples(self, split: str = "train") -> int:
        return len(self.data[split][0])

    def batch(self, index: Tensor, split: str = "train") -> tuple[Tensor, Tensor]:
        x, y = self.data[split]
        return x[index], y[index]

    def functional_loss(self, params_and_buffers: Params, batch) -> tuple[Tensor, int]:
        x, y = batch
        out = functional_call(self._model, params_and_buffers, (x,))
        return self.criterion(out, y), len(y)


class LinearRegressionProblem(_TensorDataProblem):
    """Least squares y ~ W x + b: a quadratic in the parameters (8 inputs, 2 outputs by default)."""

    name = "linear_regression"

    def __init__(
        self,
        inputs: int = 8,
        outputs: int = 2,
        samples: int = 256,
        batch_size: int = 32,
        noise: float = 0.1,
        data_seed: int = 0,
        dtype=torch.float32,
    ):
        self.inputs, self.outputs, self.dtype = inputs, outputs, dtype
        g = torch.Generator().manual_seed(data_seed)
        x = torch.randn(samples, inputs, generator=g, dtype=dtype)
        true = torch.randn(inputs, outputs, generator=g, dtype=dtype)
        y = x @ true + noise * torch.randn(samples, outputs, generator=g, dtype=dtype)
        super().__init__(x, y, batch_size)

    def model_factory(self) -> nn.Module:
        return nn.Linear(self.inputs, self.outputs).to(self.dtype)

    @staticmethod
    def criterion(out: Tensor, y: Tensor) -> Tensor:
        return 0.5 * (out - y).pow(2).sum(dim=1).sum()


class TinyMLPProblem(_TensorDataProblem):
    """A 2-layer tanh MLP classifying Gaussian blobs (8 inputs, 16 hidden, 4 classes by default)."""

    name = "tiny_mlp"

    def __init__(
        self,
        inputs: int = 8,
        hidden: int = 16,
        classes: int = 4,
        samples: int = 512,
        batch_size: int = 32,
        data_seed: int = 0,
        dtype=torch.float32,
    ):
        self.inputs, self.hidden, self.classes, self.dtype = inputs, hidden, classes, dtype
        g = torch.Generator().manual_seed(data_seed)
        centers = 2.0 * torch.randn(classes, inputs, generator=g, dtype=dtype)
        y = torch.randint(classes, (samples,), generator=g)
        x = centers[y] + torch.randn(samples, inputs, generator=g, dtype=dtype)
        super().__init__(x, y, batch_size)

    def model_factory(self) -> nn.Module:
        return nn.Sequential(nn.Linear(self.inputs, self.hidden), nn.Tanh(), nn.Linear(self.hidden, self.classes)).to(
            self.dtype
        )

    @staticmethod
    def criterion(out: Tensor, y: Tensor) -> Tensor:
        return nn.functional.cross_entropy(out, y, reduction="sum")


class TaskProblem(Problem):
    """Any registered optimlab task, through its model factory and functional loss."""

    def __init__(self, task, batch_size: int):
        self.task, self.name, self.batch_size = task, task.name, batch_size

    def new_model(self, seed: int) -> nn.Module:
        return self.task.new_model(seed)

    def num_samples(self, split: str = "train") -> int:
        return len(getattr(self.task, split))

    def batch(self, index: Tensor, split: str = "train"):
        return getattr(self.task, split).batch(index)

    def functional_loss(self, params_and_buffers: Params, batch) -> tuple[Tensor, Any]:
        return self.task.functional_loss(params_and_buffers, batch)


PROBLEMS = {"linear_regression": LinearRegressionProblem, "tiny_mlp": TinyMLPProblem}


def build_problem(name: str, batch_size: int, data_dir: str | None = None, options: dict | None = None) -> Problem:
    """A built-in problem by name, or else a registered task (`mnist1d_mlp`, `digits_cnn`, ...)."""
    if name in PROBLEMS:
        return PROBLEMS[name](batch_size=batch_size, **(options or {}))
    from optimlab.tasks import build_task

    return TaskProblem(build_task(name, options or {}, data_dir), batch_size)


def log_uniform_scales(params: Params, spread: float, generator: torch.Generator) -> Params:
    """Per-coordinate scales exp(U(-spread, spread)) (RNNProp's random parameter scaling); 1 when spread=0."""
    out = {}
    for name, p in params.items():
        u = torch.rand(p.shape, generator=generator, dtype=torch.float64)
        out[name] = torch.exp((2 * u - 1) * spread).to(p.dtype) if spread > 0 else torch.ones_like(p)
    return out


def seed_mix(*parts: int) -> int:
    """A deterministic 31-bit seed from integers (trajectory seeds from run seed, stage, index...); small
    enough for the batch sampler, which multiplies it by 1,000,003."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) + 0x9E3779B9 + (value << 6) + (value >> 2))) & ((1 << 62) - 1)
    return value % (1 << 31)
