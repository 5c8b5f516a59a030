"""Losses and metrics for token sequences: summed over tokens, counted in non-padding tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def length_mask(lengths: Tensor, steps: int, device: torch.device) -> Tensor:
    """(N, steps) bool, True at positions below each sequence's length."""
    return torch.arange(steps, device=device)[None, :] < lengths.to(device)[:, None]


def token_loss(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy over the (unmasked) tokens, and their number. logits (N, T, V), targets (N, T)."""
    if mask is not None:
        targets = targets.masked_fill(~mask, -100)  # cross_entropy's ignore_index
    total = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum", ignore_index=-100)
    count = mask.sum() if mask is not None else torch.tensor(targets.numel(), device=logits.device)
    return total, count


def token_accuracy(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """`accuracy` per token and `sequence_accuracy` (every token of the sequence right), as (sum, count)."""
    correct = logits.argmax(dim=-1) == targets
    if mask is None:
        mask = torch.ones_like(correct)
    tokens = (correct & mask).sum()
    sequences = (correct | ~mask).all(dim=1).sum()
    n = torch.tensor(len(targets), device=logits.device)
    return {"accuracy": (tokens, mask.sum()), "sequence_accuracy": (sequences, n)}
