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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

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
        batch = tuple(t[index] for t in self.tensors)
        if self.lengths is not None and self.padded:
            longest = int(self.lengths[index].max())
            batch = tuple(t[:, :longest] if i in self.padded else t for i, t in enumerate(batch))
        return batch

    def subset(self, index: Tensor) -> Split:
        lengths = None if self.lengths is None else self.lengths[index]
        return Split(tuple(t[index] for t in self.tensors), lengths, self.padded)


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
