"""Evaluation of a split, and the choice of the best evaluation so far."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from optimlab.tasks import Split, Task


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: Task,
    split: Split,
    batch_size: int,
    max_batches: int | None,
    device: torch.device,
    optimizer: torch.optim.Optimizer,
    prefix: str,
) -> dict[str, float]:
    """Mean loss and metrics over a split (or its first `max_batches` batches), keyed `<prefix>/<name>`."""
    swap = hasattr(optimizer, "eval") and hasattr(optimizer, "train")  # Schedule-Free: evaluate the averaged iterate
    if swap:
        optimizer.eval()
    model.eval()
    sums: dict[str, list[float]] = {}
    starts = list(range(0, len(split), batch_size))[:max_batches]
    for start in starts:
        batch = to_device(split.batch(torch.arange(start, min(start + batch_size, len(split)))), device)
        outputs = task.forward(model, batch)
        values = {"loss": task.loss(outputs, batch), **task.metrics(outputs, batch)}
        for name, (total, count) in values.items():
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0] += float(total)
            acc[1] += float(count)
    model.train()
    if swap:
        optimizer.train()
    values = {f"{prefix}/{name}": total / count if count else float("nan") for name, (total, count) in sums.items()}
    if task.info.get("perplexity"):  # language models: exp of the mean per-token negative log-likelihood
        values[f"{prefix}/perplexity"] = math.exp(min(values[f"{prefix}/loss"], 700.0))
    return values


def is_better(values: dict[str, float], best: dict | None, task: Task) -> bool:
    """Whether validation `values` beat the `best` record so far on the task's main metric."""
    key = f"val/{task.main_metric}"
    value = values.get(key, float("nan"))
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best[key] if task.higher_is_better else value < best[key]


def to_device(batch: tuple[Tensor, ...], device: torch.device) -> tuple[Tensor, ...]:
    if device.type == "cpu":
        return batch
    return tuple(t.to(device, non_blocking=True) for t in batch)
