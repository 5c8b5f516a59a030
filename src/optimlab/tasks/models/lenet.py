"""LeNet-5 (LeCun et al. 1998) in its common modern form: ReLU and max-pooling."""

from __future__ import annotations

from torch import Tensor, nn


class LeNet5(nn.Module):
    """conv 5x5 (6) -> ReLU -> pool -> conv 5x5 (16) -> ReLU -> pool -> 120 -> 84 -> classes.

    As in AdaTune's `lenet`: no padding, so a 28x28 MNIST image reaches the classifier as 16x4x4 and a
    32x32 CIFAR image as 16x5x5.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, classes: int = 10) -> None:
        super().__init__()
        size = ((image_size - 4) // 2 - 4) // 2
        if size < 1:
            raise ValueError(f"LeNet-5 needs images of at least 16x16, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * size * size, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
