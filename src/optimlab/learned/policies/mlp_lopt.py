"""small_fc_lopt: the per-parameter MLP learned optimizer of Metz et al., "Understanding and correcting
pathologies in the training of learned optimizers" (ICML 2019), as google/learned_optimization's
`learned_optimizers/mlp_lopt.py` (MLPLOpt) defines it.

Per tensor and coordinate: momenta m_k <- d_k m_k + (1 - d_k) g at decays d = (0.1, 0.5, 0.9, 0.99, 0.999,
0.9999); the features [g, p, m_1..m_6] are each divided by their root mean square over the tensor (second
moment normalisation, eps 1e-5); 11 time features tanh(t / T - 1) for T in 1, 3, 10, ..., 1e5 are appended
(19 inputs). An MLP (2 hidden ReLU layers of 32) outputs a direction d and a magnitude m, and

    delta = d * exp(exp_mult * m) * step_mult          (exp_mult = step_mult = 1e-3)

`forward` is the functional step that meta-training differentiates through; `deployed_step` computes the
same update (up to float rounding) without autograd, for `LearnedOptimizer`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from optimlab.errors import ConfigError
from optimlab.learned.policies.base import Policy, State

DECAYS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
TIMESCALES = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
# Tensors below this size take `forward` in `deployed_step`: about 60 us more fixed cost per call for the
# folded weights, paid back from about 2,000 coordinates on (measured on one CPU core).
SMALL = 2048


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

    @torch.no_grad()
    def deployed_step(
        self,
        param: Tensor,
        grad: Tensor,
        state: State,
        step: Tensor,
        lr: float,
        warmup_lr: float | None = None,
        chunk_size: int = 8192,
    ) -> None:
        """`param -= lr * delta` with `state` updated in place, on flat contiguous tensors: what `forward`
        computes, up to float rounding, without autograd.

        The normalisation (one scale per feature column) and the time features (the same for every
        coordinate) are folded into the first layer's weights and bias, so the [N, 19] input is never built;
        the MLP then runs in chunks of `chunk_size` coordinates whose activations stay in cache. With
        `warmup_lr` the step is SGD at that rate (the momenta still advance)."""
        if len(grad) < SMALL and warmup_lr is None:  # the set-up below costs more than it saves
            delta, new = self(param, grad, state, step, {})
            state["momenta"].copy_(new["momenta"])
            param.add_(delta, alpha=-lr)
            return
        decays = self.decays.to(grad.dtype)
        momenta = state["momenta"]
        momenta.mul_(decays).addcmul_(grad.unsqueeze(1), 1 - decays)
        if warmup_lr is not None:
            param.add_(warmup_lr * grad, alpha=-lr)
            return
        n = len(grad)
        # The features' mean squares: g and p by dot products, the momenta from their Gram matrix's diagonal
        # (one matmul instead of elementwise passes over a 6-wide inner dimension).
        squares = torch.cat(
            [torch.dot(grad, grad)[None], torch.dot(param, param)[None], (momenta.t() @ momenta).diagonal()]
        )
        scale = torch.rsqrt(1e-5 + squares / n)
        time = torch.tanh(step / self.timescales.to(grad.dtype) - 1.0)
        n_features = len(scale)
        w, b = self.layers[0].weight, self.layers[0].bias
        # [g, p, m_1..m_6, 1] @ w_first: the ones column meets the first layer's bias row.
        w_first = torch.cat([(w[:, :n_features] * scale).t(), (b + w[:, n_features:] @ time)[None]])
        layers = [(w_first, None)] + [(layer.weight.t(), layer.bias) for layer in self.layers[1:]]
        hp = self.hparams
        chunk = min(chunk_size, n)
        x, ones = param.new_empty(chunk, n_features + 1), param.new_ones(chunk, 1)
        for p, g, m in zip(param.split(chunk), grad.split(chunk), momenta.split(chunk)):
            k = len(g)
            y = torch.cat([g.unsqueeze(1), p.unsqueeze(1), m, ones[:k]], dim=1, out=x[:k])
            for i, (w, b) in enumerate(layers):
                if i > 0:
                    y = y.relu_()
                if i + 1 < len(layers):
                    y = torch.mm(y, w) if b is None else torch.addmm(b, y, w)
                else:  # the output transposed, [2, k]: its two rows are contiguous (and the N=2 matmul faster)
                    y = torch.mm(w.t(), y.t()) if b is None else torch.addmm(b.unsqueeze(1), w.t(), y.t())
            step_size = torch.mul(y[1], hp["exp_mult"]).exp_().mul_(y[0]).mul_(hp["step_mult"])
            p.add_(step_size, alpha=-lr)
