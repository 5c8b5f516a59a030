"""Multinomial (or binary) logistic regression: one linear layer on the flattened input."""

from __future__ import annotations

from torch import Tensor, nn


class LogisticRegression(nn.Module):
    """Logits = W x + b for x flattened; `outputs=1` gives a single logit for binary problems."""

    def __init__(self, in_features: int, outputs: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(in_features, outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.flatten(x))
