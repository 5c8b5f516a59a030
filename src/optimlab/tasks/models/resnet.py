"""ResNets for 32x32 images.

- depth = 6n + 2 (20, 32, 44, 56, 110, ...): the CIFAR ResNet of He et al. 2016 (sec. 4.2): a 3x3 stem and
  three stages of n basic blocks with `width`, 2*width, 4*width channels (width 16 by default).
- depth 18 or 34: the ImageNet layout [2,2,2,2] / [3,4,6,3] with a 3x3 stride-1 stem and no stem pooling,
  as commonly used on CIFAR (kuangliu/pytorch-cifar, AdaTune's `resnet`), widths 64..512 by default.

Shortcuts that change shape are 1x1 convolutions (option B of He et al.). `batch_norm=False` drops every
BatchNorm (the "ResNet-8 without BN" of the gradient-variance study) and gives the convolutions biases.
"""

from __future__ import annotations

from torch import Tensor, nn


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int, batch_norm: bool) -> None:
        super().__init__()
        bias = not batch_norm
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = _norm(channels, batch_norm)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=bias)
        self.bn2 = _norm(channels, batch_norm)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=bias), _norm(channels, batch_norm)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


_IMAGENET_LAYOUTS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class ResNet(nn.Module):
    """ResNet-`depth` for `classes` classes; see the module docstring for the two layouts."""

    def __init__(
        self,
        depth: int = 20,
        classes: int = 10,
        in_channels: int = 3,
        width: int | None = None,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if depth in _IMAGENET_LAYOUTS:
            blocks, width = _IMAGENET_LAYOUTS[depth], width or 64
        elif depth >= 8 and (depth - 2) % 6 == 0:
            blocks, width = ((depth - 2) // 6,) * 3, width or 16
        else:
            raise ValueError(f"ResNet depth must be 18, 34 or 6n+2 (8, 14, 20, 32, 44, 56, 110), got {depth}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=not batch_norm), _norm(width, batch_norm), nn.ReLU()
        )
        stages: list[nn.Module] = []
        channels = width
        for i, count in enumerate(blocks):
            out = width * 2**i
            for j in range(count):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(BasicBlock(channels, out, stride, batch_norm))
                channels = out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)))
