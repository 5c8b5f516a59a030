"""What a step direction is: the vector an estimator writes into `.grad` for the optimizer to consume.

A `Direction` has one pure function, `direction(model, objective, batch, indices)`, that returns the
direction at the model's current parameters on a batch and mutates nothing (no `.grad`, no batch-norm
running statistics, no RNG state, no estimator state): gradient instruments call it to measure the
direction's variance. Training goes through the same code: `combine(gradient, batch, indices)` turns the
batch's mean gradient into the direction, and the training hook feeds it the gradient the loop already
computed in `.grad` while `direction` computes that gradient itself.

A direction's state changes only in its scheduled updates: `frequent` (about one mini-batch gradient, e.g.
online clustering) and `infrequent` (about one pass over the training data, e.g. an SVRG snapshot). Their
costs are counted in `costs` and logged by `stats()`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from optimlab.isolation import isolated
from optimlab.tasks.base import Batch, Split, Task, classification_loss, default_forward

Gradient = dict[str, Tensor]  # parameter name -> tensor of the parameter's shape


@dataclasses.dataclass(frozen=True)
class Objective:
    """A task's forward and (sum, count) loss: what every direction differentiates.

    The loss must be a sum of per-example terms over the first dimension of the outputs (true of every
    classification and regression task): gradient clustering weights examples through that dimension.
    """

    forward: Callable[[nn.Module, Batch], Tensor] = default_forward
    loss: Callable[[Tensor, Batch], tuple[Tensor, Tensor | int]] = classification_loss

    @classmethod
    def of(cls, task: Task) -> Objective:
        return cls(task.forward, task.loss)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor | int]:
        return self.loss(self.forward(model, batch), batch)


class Measurable(Protocol):
    """What a measurement needs of an estimator: its pure direction on a batch (a `Direction`, `KFAC`)."""

    def direction(
        self, model: nn.Module, objective: Objective, batch: Batch, indices: Tensor | None = None
    ) -> Gradient: ...


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Due at steps start, start + every, ... ; `every=0` never."""

    every: int
    start: int = 0

    def due(self, step: int) -> bool:
        return self.every > 0 and step >= self.start and (step - self.start) % self.every == 0


@dataclasses.dataclass
class Costs:
    """Work a direction adds to plain training, in units a reader can compare across directions."""

    grad_evals: float = 0.0  # extra forward+backward passes, in mini-batch gradients
    full_passes: float = 0.0  # extra passes over the whole training split
    examples: int = 0  # examples those extra passes evaluated

    def add(self, *, grad_evals: float = 0.0, full_passes: float = 0.0, examples: int = 0) -> None:
        self.grad_evals += grad_evals
        self.full_passes += full_passes
        self.examples += examples

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.grad_evals, self.full_passes = float(state["grad_evals"]), float(state["full_passes"])
        self.examples = int(state["examples"])


class Direction:
    """Base class: the plain mini-batch gradient (`direction=sgd`). Subclasses override `combine`,
    `frequent`/`infrequent` and the state methods."""

    name = "sgd"
    step_grad_evals = 0.0  # extra mini-batch gradients each training step costs (once `ready`)
    measure_grad_evals = 1.0  # mini-batch gradients one `direction()` call costs

    def __init__(self) -> None:
        self.costs = Costs()
        self.train_split: Split | None = None
        self.device = torch.device("cpu")
        self.batch_size = 128
        self.seed = 0

    # -- set-up ---------------------------------------------------------------------------------------
    def bind(self, train: Split, *, device: torch.device, batch_size: int, seed: int = 0) -> Direction:
        """The training split that full passes and the direction's own batches range over, the device, the
        mini-batch size of its own batches and full passes, and the seed of its own random streams."""
        self.train_split, self.device, self.batch_size, self.seed = train, torch.device(device), batch_size, seed
        return self

    def _batch(self, indices: Tensor) -> Batch:
        return tuple(t.to(self.device) for t in self.train_split.batch(indices))

    # -- the direction --------------------------------------------------------------------------------
    def sample(self, generator: torch.Generator, batch_size: int) -> Tensor:
        """The example indices of one batch as this estimator draws them (uniform without replacement)."""
        return torch.randperm(len(self.train_split), generator=generator)[:batch_size]

    def direction(self, model: nn.Module, objective: Objective, batch: Batch, indices: Tensor | None = None) -> Gradient:
        """The direction at the model's current parameters on `batch`; mutates nothing."""
        with side_effect_free(model):
            gradient = batch_gradient(model, objective, batch)
        return self.combine(model, objective, batch, indices, gradient)

    def combine(
        self, model: nn.Module, objective: Objective, batch: Batch, indices: Tensor | None, gradient: Gradient
    ) -> Gradient:
        """The direction, given the batch's mean gradient at the live parameters; mutates nothing."""
        del model, objective, batch, indices
        return gradient

    def training_direction(
        self, model: nn.Module, objective: Objective, batch: Batch, indices: Tensor, gradient: Gradient
    ) -> Gradient:
        """The direction a training step takes, given the training batch and the gradient in `.grad`."""
        return self.combine(model, objective, batch, indices, gradient)

    # -- scheduled updates (the only places state changes) ---------------------------------------------
    def frequent(self, step: int, model: nn.Module, objective: Objective) -> None:
        """The frequent update (about one mini-batch gradient), called before step `step` when due."""

    def infrequent(self, step: int, model: nn.Module, objective: Objective) -> None:
        """The infrequent update (about one pass over the data), called before step `step` when due."""

    def due(self, step: int) -> tuple[bool, bool]:
        """(frequent due, infrequent due) before step `step`."""
        return False, False

    @property
    def ready(self) -> bool:
        """False until the estimator has what its direction needs (a snapshot, a clustering)."""
        return True

    # -- reporting and state --------------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        return {
            "extra_grad_evals": self.costs.grad_evals,
            "extra_full_passes": self.costs.full_passes,
            "extra_examples": float(self.costs.examples),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"costs": self.costs.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.costs.load_state_dict(state["costs"])


# ------------------------------------------------------------------------------------------------------
# Small shared pieces


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def batch_gradient(model: nn.Module, objective: Objective, batch: Batch) -> Gradient:
    """The gradient of the batch's mean loss, out of place: `.grad` is not touched."""
    return summed_gradient(model, objective, batch)[0]


def summed_gradient(
    model: nn.Module, objective: Objective, batch: Batch, *, mean: bool = True
) -> tuple[Gradient, float]:
    """(gradient of the batch's mean loss, or of its summed loss with `mean=False`; the loss count)."""
    params = trainable(model)
    loss_sum, count = objective(model, batch)
    scale = 1.0 / float(count) if mean else 1.0
    grads = torch.autograd.grad(loss_sum * scale, list(params.values()), allow_unused=True)
    gradient = {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(params.items(), grads)}
    return gradient, float(count)


def weighted_gradient(model: nn.Module, objective: Objective, batch: Batch, weights: Tensor) -> Gradient:
    """The gradient of `sum_i weights_i * loss_i / count` with one forward and one backward.

    The per-example loss gradients with respect to the outputs come from differentiating the summed loss
    once (each output row depends on its own example only); scaling them by the weights and
    backpropagating gives the weighted gradient without per-example gradients.
    """
    params = trainable(model)
    outputs = objective.forward(model, batch)
    loss_sum, count = objective.loss(outputs, batch)
    (d_outputs,) = torch.autograd.grad(loss_sum, outputs, retain_graph=True)
    shape = (-1,) + (1,) * (d_outputs.dim() - 1)
    seed = d_outputs * weights.to(d_outputs.dtype).view(shape) / float(count)
    grads = torch.autograd.grad(outputs, list(params.values()), seed, allow_unused=True)
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(params.items(), grads)}


def side_effect_free(model: nn.Module):
    """Forward/backward passes inside leave no trace: buffers (batch-norm running statistics), the
    module's train/eval mode and the global RNG (dropout, CPU and CUDA) are restored on exit; `.grad` is
    left to the caller (a direction writes it on purpose)."""
    return isolated(model, restore_grads=False)


def read_grads(model: nn.Module) -> Gradient:
    """The `.grad` of every trainable parameter (zeros where none was written)."""
    return {name: torch.zeros_like(p) if p.grad is None else p.grad for name, p in trainable(model).items()}


def write_grads(model: nn.Module, direction: Gradient) -> None:
    """Replace `.grad` by the direction (in place where a gradient tensor exists)."""
    for name, p in trainable(model).items():
        value = direction[name]
        if p.grad is None:
            p.grad = value.detach().clone()
        else:
            p.grad.copy_(value)


def full_gradient(
    model: nn.Module, objective: Objective, split: Split, batch_size: int, device: torch.device, *, train_mode: bool
) -> tuple[Gradient, int]:
    """The mean gradient over a whole split, in fixed batches, accumulated in float64; (gradient, examples).

    `train_mode=False` evaluates in eval mode (batch-norm running statistics, no dropout). Runs side-effect
    free: buffers, modes and the RNG are restored.
    """
    params = trainable(model)
    total = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in params.items()}
    count = 0.0
    with side_effect_free(model):
        model.train(train_mode)
        for start in range(0, len(split), batch_size):
            index = torch.arange(start, min(start + batch_size, len(split)))
            batch = tuple(t.to(device) for t in split.batch(index))
            gradient, batch_count = summed_gradient(model, objective, batch, mean=False)
            count += batch_count
            for name, g in gradient.items():
                total[name] += g.double()
    return {name: (t / count).to(params[name].dtype) for name, t in total.items()}, len(split)
