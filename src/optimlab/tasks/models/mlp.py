"""A multi-layer perceptron on the flattened input."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """Flatten -> [Linear -> activation] per hidden width -> Linear to `classes` logits.

    Args:
        in_features: size of the flattened input.
        hidden: width of each hidden layer (empty: logistic regression).
        classes: number of outputs.
        activation: "relu" (default), "tanh" or "sigmoid".
    """

    def __init__(self, in_features: int, hidden: Sequence[int], classes: int, activation: str = "relu") -> None:
        super().__init__()
        activations = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
        if activation not in activations:
            raise ValueError(f"unknown activation {activation!r}; choose from {', '.join(activations)}")
        act = activations[activation]
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), act()]
            width = size
        layers.append(nn.Linear(width, classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
