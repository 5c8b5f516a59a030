"""small_fc_lopt: the per-parameter MLP learned optimizer of Metz et al., "Understanding and correcting
pathologies in the training of learned optimizers" (ICML 2019), as google/learned_optimization's
`learned_optimizers/mlp_lopt.py` (MLPLOpt) defines it.

Per tensor and coordinate: momenta m_k <- d_k m_k + (1 - d_k) g at decays d = (0.1, 0.5, 0.9, 0.99, 0.999,
0.9999); the features [g, p, m_1..m_6] are each divided by their root mean square over the tensor (second
moment normalisation, eps 1e-5); 11 time features tanh(t / T - 1) for T in 1, 3, 10, ..., 1e5 are appended
(19 inputs). An MLP (2 hidden ReLU layers of 32) outputs a direction d and a magnitude m, and

    delta = d * exp(exp_mult * m) * step_mult          (exp_mult = step_mult = 1e-3)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from optimlab.errors import ConfigError
from optimlab.learned.policies.base import Policy, State

DECAYS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
TIMESCALES = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)


class SmallFCLOpt(Policy):
    name = "small_fc_lopt"
    coordinatewise = False  # the feature normalisation is a statistic over the whole tensor

    def __init__(self, hidden_size: int = 32, hidden_layers: int = 2, exp_mult: float = 1e-3, step_mult: float = 1e-3):
        if hidden_size <= 0 or hidden_layers < 0:
            raise ConfigError(f"policy key 'hidden_size'/'hidden_layers': got {hidden_size}/{hidden_layers}")
        super().__init__(hidden_size=hidden_size, hidden_layers=hidden_layers, exp_mult=exp_mult, step_mult=step_mult)
        sizes = [2 + len(DECAYS) + len(TIMESCALES), *[hidden_size] * hidden_layers, 2]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        for layer in self.layers:  # haiku's default: truncated normal, std 1/sqrt(fan_in); zero bias
            nn.init.trunc_normal_(
                layer.weight,
                std=1 / math.sqrt(layer.in_features),
                a=-2 / math.sqrt(layer.in_features),
                b=2 / math.sqrt(layer.in_features),
            )
            nn.init.zeros_(layer.bias)
        self.register_buffer("decays", torch.tensor(DECAYS), persistent=False)
        self.register_buffer("timescales", torch.tensor(TIMESCALES, dtype=torch.float32), persistent=False)

    def init_state(self, param: Tensor) -> State:
        return {"momenta": param.new_zeros(param.numel(), len(DECAYS))}

    def forward(
        self, param: Tensor, grad: Tensor, state: State, step: Tensor, global_state: State
    ) -> tuple[Tensor, State]:
        decays = self.decays.to(grad.dtype)
        momenta = state["momenta"] * decays + (1 - decays) * grad.unsqueeze(1)
        features = torch.cat([grad.unsqueeze(1), param.unsqueeze(1), momenta], dim=1)
        features = features * torch.rsqrt(1e-5 + features.square().mean(dim=0, keepdim=True))
        time = torch.tanh(step / self.timescales.to(grad.dtype) - 1.0)
        x = torch.cat([features, time.expand(len(grad), -1)], dim=1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        hp = self.hparams
        delta = x[:, 0] * torch.exp(hp["exp_mult"] * x[:, 1]) * hp["step_mult"]
        return delta, {"momenta": momenta}
