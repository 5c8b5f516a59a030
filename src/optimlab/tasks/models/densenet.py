"""DenseNet-BC (Huang et al. 2017) for 32x32 images.

Three dense blocks of bottleneck layers (BN-ReLU-1x1 conv to 4*growth, BN-ReLU-3x3 conv to growth, output
concatenated), transitions (BN-ReLU-1x1 conv compressing by `reduction`, 2x2 average pool). depth = 6n + 4
gives n layers per block; DenseNet-BC-100 with growth 12 is AdaTune's `densenet`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Bottleneck(nn.Module):
    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth),
            nn.ReLU(),
            nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.layers(x)], dim=1)


def _transition(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(), nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.AvgPool2d(2)
    )


class DenseNetBC(nn.Module):
    def __init__(
        self, depth: int = 100, growth: int = 12, reduction: float = 0.5, classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"DenseNet-BC depth must be 6n+4 (e.g. 40, 100, 190), got {depth}")
        if not 0 < reduction <= 1:
            raise ValueError(f"DenseNet-BC reduction must be in (0, 1], got {reduction}")
        n = (depth - 4) // 6
        channels = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)]
        for block in range(3):
            for _ in range(n):
                layers.append(Bottleneck(channels, growth))
                channels += growth
            if block < 2:
                out = int(channels * reduction)
                layers.append(_transition(channels, out))
                channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
