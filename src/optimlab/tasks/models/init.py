"""Optional initialisation schemes (PyTorch's defaults are used otherwise)."""

from __future__ import annotations

import math

from torch import nn


def xavier_conv_init(model: nn.Module) -> nn.Module:
    """AdaTune's init (`adatune/network.py`): Xavier-uniform with gain sqrt(2) for convolutions (bias 0),
    BatchNorm weight 1 and bias 0. Linear layers keep PyTorch's default."""
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            nn.init.xavier_uniform_(module.weight, gain=math.sqrt(2.0))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model
