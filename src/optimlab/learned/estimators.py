"""Outer-gradient estimators over a truncated system: truncated BPTT, antithetic truncated ES and PES.

A *system* has `new_state(seed)`, `draw(state) -> (data, state)` (the data of the next truncation, shared by
every perturbation of it) and `unroll(weights, state, data, differentiable) -> (loss, state, finite)`;
`LearnedOptimizerSystem` is the learned-optimizer one. Each estimator carries its trajectories between
calls (`state`), returns one gradient estimate per call, and restarts trajectories on `reset(seed)`.

- `TBPTT`: backpropagation through one truncation, starting from the carried (detached) state. Biased:
  it ignores how the weights shaped the state the truncation starts from.
- `TruncatedES`: antithetic evolution strategies on one truncation, g = Σ_j (L(w + ε_j) - L(w - ε_j)) ε_j /
  (2 σ² n), ε_j ~ N(0, σ² I); unbiased for the Gaussian-smoothed loss of that truncation from the
  carried state (the state carried on is the first positive branch's). Needs no backward pass.
- `PES` (Vicol, Metz and Sohl-Dickstein, "Unbiased Gradient Estimation in Unrolled Computation Graphs with
  Persistent Evolution Strategies", ICML 2021; learned_optimization's `truncated_pes`): each antithetic
  pair keeps its own two trajectories and the sum ξ_j of all perturbations applied to them since the
  trajectory started; g = Σ_j (L+ - L-) ξ_j / (2 σ² n). Summed over a trajectory's truncations it is an
  unbiased estimate of the gradient of the whole trajectory's loss (smoothed), which TBPTT's is not.

All randomness comes from the `generator` passed in, so a checkpointed generator state replays exactly.
"""

from __future__ import annotations


import torch
from torch import Tensor

Params = dict[str, Tensor]


def _noise(weights: Params, std: float, generator: torch.Generator) -> Params:
    return {k: std * torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in weights.items()}


def _add(a: Params, b: Params, sign: float = 1.0) -> Params:
    return {k: a[k] + sign * b[k] for k in a}


class TBPTT:
    name = "tbptt"

    def __init__(self, system):
        self.system = system

    def reset(self, seed: int) -> dict:
        return {"trajectory": self.system.new_state(seed)}

    def trajectories(self, state: dict) -> list:
        return [state["trajectory"]]

    def estimate(self, weights: Params, state: dict, generator: torch.Generator) -> tuple[Params | None, float, dict]:
        data, traj = self.system.draw(state["trajectory"])
        leaves = {k: v.detach().requires_grad_(True) for k, v in weights.items()}
        loss, nxt, finite = self.system.unroll(leaves, traj, data, differentiable=True)
        if not finite:
            return None, float(loss.detach()), {"trajectory": nxt}
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        grads = {k: (torch.zeros_like(v) if g is None else g) for (k, v), g in zip(leaves.items(), grads)}
        return grads, float(loss.detach()), {"trajectory": nxt}


class TruncatedES:
    name = "es"

    def __init__(self, system, std: float = 0.01, pairs: int = 1):
        if std <= 0 or pairs <= 0:
            raise ValueError(f"ES needs std > 0 and pairs >= 1, got std={std}, pairs={pairs}")
        self.system, self.std, self.pairs = system, std, pairs

    def reset(self, seed: int) -> dict:
        return {"trajectory": self.system.new_state(seed)}

    def trajectories(self, state: dict) -> list:
        return [state["trajectory"]]

    def estimate(self, weights: Params, state: dict, generator: torch.Generator) -> tuple[Params | None, float, dict]:
        data, traj = self.system.draw(state["trajectory"])
        weights = {k: v.detach() for k, v in weights.items()}
        grad = {k: torch.zeros_like(v) for k, v in weights.items()}
        losses, carried = [], None
        for _ in range(self.pairs):
            eps = _noise(weights, self.std, generator)
            pos, pos_state, ok_pos = self.system.unroll(_add(weights, eps), traj, data, differentiable=False)
            neg, _, ok_neg = self.system.unroll(_add(weights, eps, -1.0), traj, data, differentiable=False)
            if not (ok_pos and ok_neg):
                return None, float("nan"), {"trajectory": pos_state}
            carried = pos_state if carried is None else carried
            scale = float(pos - neg) / (2 * self.std**2 * self.pairs)
            for k in grad:
                grad[k] += scale * eps[k]
            losses += [float(pos), float(neg)]
        return grad, sum(losses) / len(losses), {"trajectory": carried}


class PES:
    name = "pes"

    def __init__(self, system, std: float = 0.01, pairs: int = 1):
        if std <= 0 or pairs <= 0:
            raise ValueError(f"PES needs std > 0 and pairs >= 1, got std={std}, pairs={pairs}")
        self.system, self.std, self.pairs = system, std, pairs

    def reset(self, seed: int, weights: Params | None = None) -> dict:
        traj = self.system.new_state(seed)
        like = weights if weights is not None else self.system.weights()
        zero = {k: torch.zeros_like(v.detach()) for k, v in like.items()}
        return {"pairs": [{"pos": traj, "neg": traj, "xi": dict(zero)} for _ in range(self.pairs)]}

    def trajectories(self, state: dict) -> list:
        return [p["pos"] for p in state["pairs"]]

    def estimate(self, weights: Params, state: dict, generator: torch.Generator) -> tuple[Params | None, float, dict]:
        weights = {k: v.detach() for k, v in weights.items()}
        grad = {k: torch.zeros_like(v) for k, v in weights.items()}
        losses, pairs = [], []
        for pair in state["pairs"]:
            data, pos_traj = self.system.draw(pair["pos"])
            _, neg_traj = self.system.draw(pair["neg"])
            eps = _noise(weights, self.std, generator)
            xi = _add(pair["xi"], eps)
            pos, pos_next, ok_pos = self.system.unroll(_add(weights, eps), pos_traj, data, differentiable=False)
            neg, neg_next, ok_neg = self.system.unroll(_add(weights, eps, -1.0), neg_traj, data, differentiable=False)
            if not (ok_pos and ok_neg):
                return None, float("nan"), state
            scale = float(pos - neg) / (2 * self.std**2 * self.pairs)
            for k in grad:
                grad[k] += scale * xi[k]
            losses += [float(pos), float(neg)]
            pairs.append({"pos": pos_next, "neg": neg_next, "xi": xi})
        return grad, sum(losses) / len(losses), {"pairs": pairs}


ESTIMATORS = {"tbptt": TBPTT, "es": TruncatedES, "pes": PES}


def build_estimator(name: str, system, std: float = 0.01, pairs: int = 1):
    from optimlab.errors import unknown_name

    if name not in ESTIMATORS:
        raise unknown_name("estimator", name, ESTIMATORS)
    return TBPTT(system) if name == "tbptt" else ESTIMATORS[name](system, std=std, pairs=pairs)
