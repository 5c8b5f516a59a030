"""The meta-optimizer: Adam on the policy's weights after adaptive gradient clipping, with a NaN guard.

Adaptive gradient clipping (Brock et al., "High-Performance Large-Scale Image Recognition Without
Normalization", 2021), per tensor as `l2o` applies it: if |G| > ratio * max(|W|, eps), G is rescaled to
that norm. `max(|W|, eps)` keeps zero-initialised biases trainable.

The NaN guard: a meta-gradient with any non-finite entry is discarded before it reaches Adam, so neither the
policy's weights nor Adam's moments change (the original `l2o` guard instead zeroed the optimizee).
"""

from __future__ import annotations

import torch
from torch import Tensor


def adaptive_clip(grad: Tensor, weight: Tensor, ratio: float, eps: float) -> Tensor:
    limit = ratio * max(float(weight.detach().norm()), eps)
    norm = float(grad.norm())
    return grad * (limit / norm) if norm > limit else grad


class MetaOptimizer:
    def __init__(
        self,
        params: dict[str, Tensor],
        lr: float = 1e-3,
        eps: float = 1e-7,
        clip_ratio: float = 0.1,
        clip_eps: float = 1e-3,
    ):
        self.params = params
        self.adam = torch.optim.Adam(list(params.values()), lr=lr, eps=eps)
        self.clip_ratio, self.clip_eps = clip_ratio, clip_eps

    def step(self, grads: dict[str, Tensor]) -> dict[str, float]:
        """Apply one meta-gradient; returns {'grad_norm', 'clipped_norm', 'skipped'}."""
        norm = float(torch.sqrt(sum(g.double().pow(2).sum() for g in grads.values())))
        if not all(bool(torch.isfinite(g).all()) for g in grads.values()):
            return {"grad_norm": norm, "clipped_norm": float("nan"), "skipped": 1.0}
        clipped = {k: adaptive_clip(g, self.params[k], self.clip_ratio, self.clip_eps) for k, g in grads.items()}
        for k, p in self.params.items():
            p.grad = clipped[k].to(p.dtype)
        self.adam.step()
        self.adam.zero_grad(set_to_none=True)
        clipped_norm = float(torch.sqrt(sum(g.double().pow(2).sum() for g in clipped.values())))
        return {"grad_norm": norm, "clipped_norm": clipped_norm, "skipped": 0.0}

    def state_dict(self) -> dict:
        return self.adam.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.adam.load_state_dict(state)
