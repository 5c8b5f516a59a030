"""Small ConvNets: 1-D for MNIST-1D and 2-D for digits / MNIST / CIFAR.

Only convolution, ReLU, max-pooling, optional BatchNorm and linear layers, so double backward (Hessian-vector
products for hypergradient methods) works through them.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class ConvNet1d(nn.Module):
    """Strided 1-D convolutions (kernel 5 first, then 3; stride 2, padding 1) -> ReLU, then one linear layer.

    The MNIST-1D reference ConvNet (Greydanus 2020) has the same shape with 25 channels. Input (N, length)
    or (N, in_channels, length).
    """

    def __init__(
        self,
        length: int,
        classes: int,
        channels: Sequence[int] = (32, 32, 32),
        in_channels: int = 1,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for i, out in enumerate(channels):
            kernel = 5 if i == 0 else 3
            layers.append(nn.Conv1d(width, out, kernel, stride=2, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(out))
            layers.append(nn.ReLU())
            length = (length + 2 - kernel) // 2 + 1
            width = out
            if length < 1:
                raise ValueError(f"input too short for {len(channels)} strided convolutions")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(width * length, classes))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.classifier(self.features(x))


class ConvNet2d(nn.Module):
    """[3x3 conv (padding 1) -> ReLU -> 2x2 max-pool] per entry of `channels`, then an optional hidden linear
    layer and the linear classifier. Input (N, in_channels, image_size, image_size).

    `pools` lists the (0-based) conv layers followed by the max-pool; None pools after every one. Several
    convolutions per resolution give a deeper net on small images (Optimizer Amalgamation's `conv_deeper_pool`:
    channels [16, 32, 32, 64, 64], pools [2, 4])."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        classes: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 0,
        batch_norm: bool = False,
        pools: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width, size = in_channels, image_size
        pooled = set(range(len(channels)) if pools is None else pools)
        if not pooled <= set(range(len(channels))):
            raise ValueError(f"pools {sorted(pooled)} must index the {len(channels)} conv layers")
        for i, out in enumerate(channels):
            layers.append(nn.Conv2d(width, out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
            if i in pooled:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            width = out
        if size < 1:
            raise ValueError(f"image of size {image_size} too small for {len(pooled)} pooling stages")
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        features = width * size * size
        if hidden:
            head += [nn.Linear(features, hidden), nn.ReLU()]
            features = hidden
        head.append(nn.Linear(features, classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
