"""VGG for 32x32 images (Simonyan & Zisserman 2015, configuration A = VGG-11), with BatchNorm.

As in AdaTune's `vgg` (and kuangliu/pytorch-cifar): 3x3 convolutions -> BN -> ReLU, five max-pools take 32x32
down to 1x1, and a single linear classifier (the classifier dropout of the original is off).
"""

from __future__ import annotations

from torch import Tensor, nn

# Channel counts in units of `width` (64 for the original); "M" is a 2x2 max-pool.
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"],
    "vgg13": [1, 1, "M", 2, 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"],
    "vgg16": [1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"],
}


class VGG(nn.Module):
    def __init__(
        self,
        config: str = "vgg11",
        classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if config not in CONFIGS:
            raise ValueError(f"unknown VGG configuration {config!r}; choose from {', '.join(CONFIGS)}")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in CONFIGS[config]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = int(item) * width
            layers.append(nn.Conv2d(channels, out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
            channels = out
        self.features = nn.Sequential(*layers)
        # Global average pooling makes the classifier independent of the input size (1x1 for 32x32 input).
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
