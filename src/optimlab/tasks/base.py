"""The task contract: data splits, a model, a loss returning (sum, count), and metrics.

A task is built by name from the registry (`optimlab.tasks.build_task`). Everything the trainer needs is on
the `Task` object; nothing else about a task is assumed.

- Data lives in memory as tensors (`Split`): every dataset optimlab ships fits in RAM, and indexing a tensor
  is far cheaper than a DataLoader on small models. A split of variable-length sequences carries `lengths`,
  which enables length-bucketed sampling and trimming of padding per batch.
- `loss(outputs, batch)` returns `(sum, count)`: the summed loss and the number of terms it sums (samples,
  or tokens for sequence tasks; a Python int or a tensor). The trainer divides once by the total count, so microbatched and
  distributed gradients are exactly the gradient of the mean over the whole batch.
- `metrics(outputs, batch)` returns `{name: (sum, count)}` for the same reason.
- `model_factory()` builds a fresh model from the global torch generator; `new_model(seed)` gives the initial
  weights of another seed without rebuilding the data, and `functional_loss(params, batch)` evaluates the loss
  at given parameters (`torch.func.functional_call`), so population and meta-training can use any task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call

Batch = tuple[Tensor, ...]


@dataclass
class Split:
    """An in-memory dataset: tensors sharing their first (sample) dimension.

    If `lengths` is given, the tensors listed in `padded` are sequences padded along dim 1; a batch is
    trimmed to its longest sequence so short batches do not pay for padding.
    """

    tensors: tuple[Tensor, ...]
    lengths: Tensor | None = None
    padded: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        sizes = {len(t) for t in self.tensors}
        if len(sizes) != 1:
            raise ValueError(f"split tensors disagree on the number of samples: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.tensors[0])

    def batch(self, index: Tensor) -> Batch:
        batch = tuple(take_rows(t, index) for t in self.tensors)
        if self.lengths is not None and self.padded:
            longest = int(self.lengths[index].max())
            batch = tuple(t[:, :longest] if i in self.padded else t for i, t in enumerate(batch))
        return batch

    def subset(self, index: Tensor) -> Split:
        lengths = None if self.lengths is None else self.lengths[index]
        return Split(tuple(t[index] for t in self.tensors), lengths, self.padded)


def take_rows(t: Tensor, index: Tensor) -> Tensor:
    """`t[index]`: a copy of the rows of `t` at `index`.

    A 1-D integer index goes through `index_select`, which gathers the same rows without advanced indexing's
    general machinery: about 2 us instead of 6 us per tensor on a CPU, a visible share of a small model's
    training step. Any other index (a mask, a list, another device, negative rows counted from the end, which
    `index_select` refuses) is `t[index]`.
    """
    if isinstance(index, Tensor) and index.dim() == 1 and not index.is_floating_point() and index.dtype != torch.bool \
            and index.device == t.device:
        try:
            return t.index_select(0, index)
        except (IndexError, RuntimeError):
            pass
    return t[index]


def default_forward(model: nn.Module, batch: Batch) -> Tensor:
    """Inputs are every tensor but the last (the target)."""
    return model(*batch[:-1])


def classification_loss(outputs: Tensor, batch: Batch) -> tuple[Tensor, int]:
    targets = batch[-1]
    return nn.functional.cross_entropy(outputs, targets, reduction="sum"), targets.numel()


def classification_metrics(outputs: Tensor, batch: Batch) -> dict[str, tuple[Tensor, int]]:
    targets = batch[-1]
    correct = (outputs.argmax(dim=-1) == targets).sum()
    return {"accuracy": (correct, targets.numel())}


@dataclass
class Task:
    """Everything the trainer needs to train and evaluate one model on one dataset."""

    name: str
    train: Split
    val: Split
    test: Split
    model: nn.Module
    loss: Callable[[Tensor, Batch], tuple[Tensor, Tensor | int]] = classification_loss
    metrics: Callable[[Tensor, Batch], dict[str, tuple[Tensor, Tensor | int]]] = classification_metrics
    forward: Callable[[nn.Module, Batch], Tensor] = default_forward
    # The metric that model selection and reports use, and its direction.
    main_metric: str = "accuracy"
    higher_is_better: bool = True
    # Optional train-time augmentation applied to each sampled batch: (batch, generator) -> batch.
    augment: Callable[[Batch, torch.Generator], Batch] | None = None
    info: dict = field(default_factory=dict)
    # Builds a fresh, randomly initialised model from the global torch generator: the very closure the
    # builder called to make `model`, so `new_model(seed)` and a run with that seed start from the same weights
    # whenever the builder draws nothing from the torch generator before its model. Every registered task
    # sets it (tested); a Task assembled by hand for a one-off loop may leave it out.
    model_factory: Callable[[], nn.Module] | None = None

    def new_model(self, seed: int) -> nn.Module:
        """A freshly initialised model for `seed` (same data, new weights); the caller's torch RNG state is
        left as it was, so drawing models for a population does not shift the caller's random stream."""
        if self.model_factory is None:
            raise ValueError(f"task {self.name!r} has no model_factory, so it cannot build fresh models")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.model_factory()

    def functional_loss(
        self, params_and_buffers: dict[str, Tensor], batch: Batch, model: nn.Module | None = None
    ) -> tuple[Tensor, Tensor | int]:
        """The task's `(sum, count)` loss of `model` (default: the task's model) on `batch`, evaluated with the
        tensors of `params_and_buffers` (names as in `named_parameters()` / `named_buffers()`) in place of
        the module's own, through `torch.func.functional_call`. Names left out use the module's tensors, so a
        dict of parameters alone is enough. Differentiable with `torch.func.grad`, and `vmap`-able over stacked
        parameters.

        The module's mode applies: in training mode BatchNorm uses batch statistics and updates the running
        statistics it is given (those in `params_and_buffers`, else the module's own); dropout draws from the
        global generator.
        """
        bound = _FunctionalModule(self.model if model is None else model, params_and_buffers)
        return self.loss(self.forward(bound, batch), batch)  # type: ignore[arg-type]


class _FunctionalModule:
    """Stands in for a module inside a task's `forward`: calling it runs the module with the given tensors
    (`functional_call`); any other attribute (`training`, submodules) is the module's."""

    def __init__(self, module: nn.Module, tensors: dict[str, Tensor]) -> None:
        self.module = module
        self.tensors = tensors

    def __call__(self, *args, **kwargs):
        return functional_call(self.module, self.tensors, args, kwargs)

    def __getattr__(self, name: str):
        return getattr(self.module, name)
