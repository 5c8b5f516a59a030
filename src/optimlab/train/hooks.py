"""Step hooks: the training loop's one extension point.

Anything that acts on or observes a training step without being the optimizer is a `StepHook`:
hypergradient learning-rate control, gradient instruments, variance-reduced directions, preconditioners.
The loop calls every hook at the same fixed places of each step (src/optimlab/train/loop.py):

    hook.before_backward(step)      the batch is sampled; no gradient yet
    ...backward (microbatched, AMP, DDP); gradient clipping...
    hook.after_backward(step)       `.grad` holds the (clipped) training gradient; may rewrite it
    optimizer.step()
    hook.after_step(step)           the parameters have moved
    ...schedule.step()...

At log time the loop writes `hook.stats()` under `<hook.prefix>/<key>` (metrics.jsonl, TensorBoard, W&B).
Every hook's `state_dict()` is checkpointed under the `hooks` key, by the hook's name, and restored with
`load_state_dict` on resume, so a hook with state (tangents, snapshots, running factors) resumes exactly.

Hooks that need data beyond the training batch never advance the training stream: they draw from their own
samplers (`RunContext.sampler(seed_offset)`) or iterate a split in fixed batches (`RunContext.batches`).
A hook that wants part of the training split for itself (the hypergradient's held-out batches) takes it in
`reserve`, called once before the training sampler is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from optimlab.tasks import Split, Task
from optimlab.train.sampler import BatchSampler

Batch = tuple[Tensor, ...]


@dataclasses.dataclass
class RunContext:
    """What a hook may use for the whole run: built once, before the first step."""

    task: Task
    model: nn.Module  # the unwrapped model (not the DDP wrapper)
    optimizer: torch.optim.Optimizer
    device: torch.device
    seed: int
    batch_size: int
    steps: int  # the run's total number of steps
    world_size: int = 1

    def to_device(self, batch: Batch) -> Batch:
        if self.device.type == "cpu":
            return batch
        return tuple(t.to(self.device, non_blocking=True) for t in batch)

    def sampler(self, split: Split, seed_offset: int, batch_size: int | None = None) -> BatchSampler:
        """An independent sampler over `split`, with its own seed: it never touches the training stream."""
        size = min(batch_size or self.batch_size, len(split))
        return BatchSampler(len(split), size, self.seed * 7919 + seed_offset)

    def batches(self, split: Split, batch_size: int | None = None) -> Iterator[tuple[Tensor, Batch]]:
        """(indices, batch) over the whole split in order, in fixed-size batches (the last may be short)."""
        size = batch_size or self.batch_size
        for start in range(0, len(split), size):
            index = torch.arange(start, min(start + size, len(split)))
            yield index, self.to_device(split.batch(index))

    def loss(self, batch: Batch, model: nn.Module | None = None) -> tuple[Tensor, Tensor | int]:
        """The task's (sum, count) loss of `batch` under `model` (default: the trained model), as is."""
        model = self.model if model is None else model
        return self.task.loss(self.task.forward(model, batch), batch)


@dataclasses.dataclass
class StepInfo:
    """One training step, as the hooks see it."""

    step: int  # the step being taken (0-based): the parameters are w_step before the update
    batch: Batch  # this rank's training batch (after augmentation)
    indices: Tensor  # the batch's example indices into the training split
    loss_sum: Tensor | None = None  # set after the backward: the batch's summed loss and its count
    count: Tensor | int | None = None
    # Set after the backward: the factor between the gradient that layer hooks see during the backward and
    # the gradient of the per-example loss summands (1/count for a whole batch, times an fp16 loss scale).
    grad_scale: float | None = None


class StepHook:
    """Base class of step hooks: every method is optional; the defaults do nothing.

    Subclasses set `name` (the checkpoint key, unique in a run) and `prefix` (of their logged statistics).
    """

    name: str = "hook"
    prefix: str = "hook"
    # True when `after_backward` needs the training gradient's graph (`.grad` built with create_graph=True).
    needs_graph: bool = False

    def reserve(self, train: Split) -> Split:
        """Called once at set-up with the training split; returns the part left for training."""
        return train

    def before_backward(self, step: StepInfo) -> None:
        pass

    def after_backward(self, step: StepInfo) -> None:
        pass

    def after_step(self, step: StepInfo) -> None:
        pass

    def stats(self) -> dict[str, float]:
        """Scalars to log now, keys without the prefix (the loop adds `<prefix>/`)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


HookFactory = Callable[[Any, RunContext], "StepHook | None"]


def prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{key}": float(value) for key, value in values.items()}
