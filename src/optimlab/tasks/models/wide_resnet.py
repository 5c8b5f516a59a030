"""Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016) for 32x32 images.

Pre-activation basic blocks (BN -> ReLU -> conv), depth = 6n + 4, stage widths 16k, 32k, 64k; dropout between
the two convolutions of a block when `dropout > 0`. WRN-28-10 is AdaTune's `wide_resnet`.
"""

from __future__ import annotations

from torch import Tensor, nn


class WideBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        # The projection shortcut reads the pre-activated input, as in the reference implementation.
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    def __init__(
        self, depth: int = 28, widen: int = 10, classes: int = 10, in_channels: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"Wide-ResNet depth must be 6n+4 (10, 16, 22, 28, 40), got {depth}")
        if widen < 1:
            raise ValueError(f"Wide-ResNet widen factor must be >= 1, got {widen}")
        n = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        channels = 16
        for i, out in enumerate((16 * widen, 32 * widen, 64 * widen)):
            for j in range(n):
                blocks.append(WideBlock(channels, out, 2 if i > 0 and j == 0 else 1, dropout))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))
