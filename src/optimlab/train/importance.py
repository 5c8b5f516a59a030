"""Importance sampling of training examples by their last seen loss or per-example gradient norm.

`train.sampler=loss` or `gradnorm` draws each batch of B examples with replacement, example i with
probability

    p_i = (1 - floor) * s_i / sum_j s_j + floor / n

where s_i is the example's score (its loss, or the norm of its own gradient, when last drawn; examples not
yet drawn score the mean of those that were) and `floor` (`train.sampler_floor`, in (0, 1]) mixes in the
uniform distribution, so every example keeps a probability of at least floor / n and none starves
(floor = 1 is uniform sampling with replacement). Each drawn example's loss is weighted by
w_i = 1 / (n p_i), so the batch gradient (1/B) sum_b w_b grad l_b has expectation (1/n) sum_i grad l_i,
the full-data gradient: the samplers change the variance, not the objective (Katharopoulos and Fleuret
2018, "Not all samples are created equal", arXiv:1803.00942; Zhao and Zhang 2015, arXiv:1401.2753).

Per-example losses come from the task's loss: a loss function may carry a `per_example(outputs, batch) ->
(losses (N,), counts (N,))` attribute (the sequence tasks do); the plain classification loss is reduced per
example directly; any other loss is evaluated one example at a time (correct for every task, slower).
Per-example gradient norms are exact: `torch.func.vmap` of `torch.func.grad` over the batch, in evaluation
mode (no dropout), or one backward per example when the model's operations have no batching rule.

The sampler's state (scores, which examples were seen, the probabilities of the last draw, the number of
draws) is checkpointed; every draw uses a generator seeded from (seed, draw number), so a resumed run
draws the same batches.
"""

from __future__ import annotations

import abc
import dataclasses

import torch
from torch import Tensor, nn

from optimlab.tasks.base import Batch, Task, classification_loss
from optimlab.train.hooks import StepHook, StepInfo

KINDS = ("loss", "gradnorm")


class WeightedSampler(abc.ABC):
    """A training sampler whose batches carry unbiasing weights: the loop takes the gradient of
    `sum_b w_b l_b / sum_b c_b` (`weighted_task`), with `w = weights(indices)` for the indices `next()` drew.
    `kind` names the sampler (`train.sampler`); its state is checkpointed with the run."""

    kind: str

    @abc.abstractmethod
    def next(self) -> Tensor: ...

    @abc.abstractmethod
    def weights(self, indices: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def state_dict(self) -> dict: ...

    @abc.abstractmethod
    def load_state_dict(self, state: dict) -> None: ...


class ImportanceSampler(WeightedSampler):
    def __init__(self, num_samples: int, batch_size: int, seed: int, kind: str, floor: float):
        if batch_size > num_samples:
            raise ValueError(f"batch size {batch_size} exceeds the {num_samples} training samples")
        if not 0.0 < floor <= 1.0:
            raise ValueError(f"the floor must be in (0, 1], got {floor}")
        self.num_samples, self.batch_size, self.seed, self.kind, self.floor = num_samples, batch_size, seed, kind, floor
        self.scores = torch.zeros(num_samples, dtype=torch.float64)
        self.seen = torch.zeros(num_samples, dtype=torch.bool)
        self.probs = torch.full((num_samples,), 1.0 / num_samples, dtype=torch.float64)  # of the last draw
        self.draws = 0

    def probabilities(self) -> Tensor:
        """The sampling distribution given the current scores."""
        if not bool(self.seen.any()):
            return torch.full((self.num_samples,), 1.0 / self.num_samples, dtype=torch.float64)
        scores = torch.where(self.seen, self.scores, self.scores[self.seen].mean())
        total = float(scores.sum())
        if not total > 0:
            return torch.full((self.num_samples,), 1.0 / self.num_samples, dtype=torch.float64)
        return (1.0 - self.floor) * scores / total + self.floor / self.num_samples

    def next(self) -> Tensor:
        self.probs = self.probabilities()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.draws)
        self.draws += 1
        return torch.multinomial(self.probs, self.batch_size, replacement=True, generator=generator)

    def weights(self, indices: Tensor) -> Tensor:
        """1 / (n p_i) under the distribution of the last draw: the unbiasing weights, float64."""
        return 1.0 / (self.num_samples * self.probs[indices.cpu()])

    def observe(self, indices: Tensor, values: Tensor) -> None:
        """New scores for drawn examples (non-finite or negative values are ignored)."""
        indices, values = indices.detach().cpu(), values.detach().double().cpu()
        ok = torch.isfinite(values) & (values >= 0)
        self.scores[indices[ok]] = values[ok]
        self.seen[indices[ok]] = True

    def state_dict(self) -> dict:
        return {
            "scores": self.scores.clone(),
            "seen": self.seen.clone(),
            "probs": self.probs.clone(),
            "draws": self.draws,
        }

    def load_state_dict(self, state: dict) -> None:
        self.scores, self.seen, self.probs = state["scores"].clone(), state["seen"].clone(), state["probs"].clone()
        self.draws = int(state["draws"])


# --------------------------------------------------------------------------------------------------------
# Per-example losses and the weighted training loss


def example_losses(task: Task, outputs, batch: Batch) -> tuple[Tensor, Tensor]:
    """(losses (N,), counts (N,)): each example's summed loss and its number of terms."""
    per_example = getattr(task.loss, "per_example", None)
    if per_example is not None:
        return per_example(outputs, batch)
    if task.loss is classification_loss:
        losses = nn.functional.cross_entropy(outputs, batch[-1], reduction="none")
        return losses, torch.ones_like(losses)
    pairs = [task.loss(_row(outputs, i), tuple(t[i : i + 1] for t in batch)) for i in range(len(batch[0]))]
    losses = torch.stack([torch.as_tensor(s) for s, _ in pairs])
    counts = torch.stack([torch.as_tensor(c, dtype=losses.dtype, device=losses.device) for _, c in pairs])
    return losses, counts


def _row(outputs, i: int):
    if isinstance(outputs, Tensor):
        return outputs[i : i + 1]
    if isinstance(outputs, dict):
        return {key: _row(value, i) for key, value in outputs.items()}
    return type(outputs)(_row(value, i) for value in outputs)


def weighted_task(task: Task, sampler: WeightedSampler) -> Task:
    """The task whose batches end with (weights, indices) and whose loss is sum_b w_b l_b over sum_b c_b.

    With w = 1 it is the task's own loss. Under `kind="loss"` it also records each example's mean loss.
    """

    def forward(model, batch: Batch):
        return task.forward(model, batch[:-2])

    def loss(outputs, batch: Batch) -> tuple[Tensor, Tensor]:
        inner, weights, indices = batch[:-2], batch[-2], batch[-1]
        losses, counts = example_losses(task, outputs, inner)
        if sampler.kind == "loss":
            sampler.observe(indices, losses.detach() / counts)
        return (weights.to(losses.dtype) * losses).sum(), counts.sum()

    return dataclasses.replace(task, forward=forward, loss=loss)


def with_weights(batch: Batch, sampler: WeightedSampler, indices: Tensor) -> Batch:
    device = batch[0].device
    return (*batch, sampler.weights(indices).to(device), indices.to(device))


# --------------------------------------------------------------------------------------------------------
# Per-example gradient norms


class GradNormHook(StepHook):
    """After the backward, the exact gradient norm of every example of the batch, into the sampler."""

    name = "importance"
    prefix = "sampler"

    def __init__(self, task: Task, model: nn.Module, sampler: ImportanceSampler, chunk: int | None = None):
        self.task, self.model, self.sampler = task, model, sampler
        self.chunk = chunk  # examples per vmapped pass (train.microbatch_size): bounds the per-example memory

    def after_backward(self, step: StepInfo) -> None:
        was_training = self.model.training
        self.model.eval()
        try:
            size = len(step.batch[0])
            chunk = self.chunk or size
            norms = torch.cat([
                example_grad_norms(self.task, self.model, tuple(t[start : start + chunk] for t in step.batch))
                for start in range(0, size, chunk)
            ])  # fmt: skip
        finally:
            self.model.train(was_training)
        self.sampler.observe(step.indices, norms)

    def stats(self) -> dict[str, float]:
        probs = self.sampler.probs
        return {"max_weight": float(1.0 / (len(probs) * probs.min())), "seen": float(self.sampler.seen.double().mean())}


def example_grad_norms(task: Task, model: nn.Module, batch: Batch) -> Tensor:
    """(N,) norms of each example's mean-loss gradient with respect to the trainable parameters."""
    from torch.func import grad, vmap

    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}

    def one(p: dict, *example: Tensor) -> Tensor:
        loss_sum, count = task.functional_loss(p, tuple(t.unsqueeze(0) for t in example), model)
        return loss_sum / count

    try:
        grads = vmap(grad(one), in_dims=(None, *([0] * len(batch))))(params, *batch)
        squares = sum(g.flatten(1).pow(2).sum(dim=1) for g in grads.values())
        return squares.sqrt().detach()
    except (RuntimeError, NotImplementedError):  # an operation without a vmap batching rule (e.g. nn.LSTM)
        return torch.stack([_one_norm(task, model, tuple(t[i : i + 1] for t in batch)) for i in range(len(batch[0]))])


def _one_norm(task: Task, model: nn.Module, rows: Batch) -> Tensor:
    loss_sum, count = task.loss(task.forward(model, rows), rows)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_sum / count, params, allow_unused=True)
    return torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)).detach()


def importance_hooks(task: Task, model: nn.Module, sampler, chunk: int | None = None) -> list[StepHook]:
    if isinstance(sampler, ImportanceSampler) and sampler.kind == "gradnorm":
        return [GradNormHook(task, model, sampler, chunk)]
    return []
