"""Exact forward-mode tangents of `torch.optim` SGD, Adam and AdamW with respect to the learning rate.

A base optimizer step is a map `(w, s) -> Phi(w, s, lr)` of the parameters `w` and the optimizer state `s`
(momentum buffer, Adam moments). The tangent `Z = d(w, s)/d lr` of the whole trajectory follows

    Z_{t+1} = mu * A_t Z_t + B_t,        A_t = dPhi/d(w, s),   B_t = dPhi/d lr,

with the MARTHE discount `mu` (`mu = 1`: the exact tangent, RTHO). One *dynamics* object per parameter
group knows its optimizer's equations and advances the tangent in place; the only model-dependent input is
the Hessian-vector product `H_t z` of the training loss, which the controller computes before the step.

Every formula follows torch's own update (as torch implements it), including weight decay, momentum
with dampening and Nesterov, Adam's bias corrections with `eps` outside the square root, AMSGrad, and
AdamW's decoupled decay, and uses the lr of the step being taken (the original kept the initial lr, bug
B.12 #3). Reading the post-step state (`momentum_buffer`, `exp_avg`, `exp_avg_sq`, `step`) back from the
optimizer avoids recomputing the update; only the few pre-step quantities that the step destroys (terms in
`w_t`) are captured by `prepare` before `optimizer.step()`.

All arithmetic works on lists of tensors with `torch._foreach_*` (one dispatch per operation for the whole
group, no flattening).

Conventions for `advance`: `z` and each list in `aux` hold the tangents of the group's parameters that
received a gradient on this step; entries may be updated in place or replaced. `hz` is `H_t z` for the same
parameters, or None when `A_t Z_t` is known to vanish (a zero tangent, `mu = 0`, or first-order mode): then
`z <- B_t` and the state tangents restart at zero. `lr` is the group's lr of this step, `ratio` the group's
`d lr_group / d lr` (the controller drives one lr and keeps each group at a fixed ratio to it).
`advance` returns `[(tensors, scale), ...]`: the direction term is `B_t = -ratio * sum(scale * tensors)`.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch
from torch import Tensor


class Dynamics(abc.ABC):
    """Tangent equations of one parameter group of one base optimizer (abstract)."""

    #: names of the optimizer-state tangents kept next to `dw/dlr`, e.g. ("buf",) for SGD momentum
    aux_names: tuple[str, ...] = ()

    @abc.abstractmethod
    def prepare(self, params: list[Tensor], grads: list[Tensor], states: list[dict]) -> Any:
        """Capture what the step is about to overwrite (called before `optimizer.step()`)."""

    @abc.abstractmethod
    def advance(
        self,
        pre: Any,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict],
        z: list[Tensor],
        aux: dict[str, list[Tensor]],
        hz: list[Tensor] | None,
        *,
        lr: float,
        ratio: float,
        mu: float,
    ) -> list[tuple[list[Tensor], float]]:
        """`Z <- mu * A Z + B` in place (called after `optimizer.step()`); returns the direction terms."""


def _scale_(tensors: list[Tensor], factor: float) -> None:
    if factor != 1.0 and tensors:
        torch._foreach_mul_(tensors, factor)


class SGDDynamics(Dynamics):
    """`torch.optim.SGD`: weight decay, momentum, dampening, Nesterov.

    With `d = g + wd w` and `b` the momentum buffer (`b = d` on its first step, else `m b + (1 - damp) d`),
    the update is `w' = w - lr u` with `u = d + m b'` (Nesterov), `u = b'` (momentum) or `u = d`. Tangents:
    `dd = H z + wd z`, `db' = m db + (1 - damp) dd` (`dd` on the buffer's first step),
    `du = dd + m db'` / `db'` / `dd`, and `dw' = mu (z - lr du) - ratio u`, `db <- mu db'`.
    """

    def __init__(self, group: dict) -> None:
        self.momentum = float(group["momentum"])
        self.dampening = float(group["dampening"])
        self.nesterov = bool(group["nesterov"])
        self.weight_decay = float(group["weight_decay"])
        self.aux_names = ("buf",) if self.momentum != 0.0 else ()

    def prepare(self, params, grads, states):
        d = None
        if self.momentum == 0.0 or self.nesterov:
            # d = g + wd * w is the direction (or part of it): it needs the pre-step weights.
            d = torch._foreach_add(grads, params, alpha=self.weight_decay) if self.weight_decay else grads
        first = None
        if self.momentum != 0.0:
            first = [s.get("momentum_buffer") is None for s in states]
        return d, first

    def advance(self, pre, params, grads, states, z, aux, hz, *, lr, ratio, mu):
        d, first = pre
        m = self.momentum
        if m == 0.0:
            u = d
        else:
            buffers = [s["momentum_buffer"] for s in states]
            u = torch._foreach_add(d, buffers, alpha=m) if self.nesterov else buffers
        if hz is None:
            z[:] = torch._foreach_mul(u, -ratio)
            if m != 0.0:
                torch._foreach_zero_(aux["buf"])
            return [(u, 1.0)]
        dd = hz
        if self.weight_decay:
            torch._foreach_add_(dd, z, alpha=self.weight_decay)
        if m == 0.0:
            du = dd
        else:
            db = aux["buf"]
            torch._foreach_mul_(db, m)
            torch._foreach_add_(db, dd, alpha=1.0 - self.dampening)
            for i, is_first in enumerate(first):
                if is_first:  # torch starts the buffer at d, undamped
                    db[i].copy_(dd[i])
            du = torch._foreach_add(dd, db, alpha=m) if self.nesterov else db
        torch._foreach_add_(z, du, alpha=-lr)
        _scale_(z, mu)
        if m != 0.0:
            _scale_(aux["buf"], mu)  # after its use in du (which may be the same list)
        torch._foreach_add_(z, u, alpha=-ratio)
        return [(u, 1.0)]


class AdamDynamics(Dynamics):
    """`torch.optim.Adam` / `AdamW` (torch semantics), with AMSGrad and both weight-decay forms.

    With the effective gradient `g~ = g + wd w` (coupled L2, Adam) or `g~ = g` (AdamW), post-step moments
    `m' = b1 m + (1 - b1) g~`, `v' = b2 v + (1 - b2) g~^2` (`v^ = max(v^, v')` with AMSGrad), bias
    corrections `c1 = 1 - b1^t`, `c2 = 1 - b2^t`, `s = sqrt(v^)/sqrt(c2)` and `u = m' / (c1 (s + eps))`:
    `w' = w (1 - lr wd) - lr u` (AdamW) or `w' = w - lr u` (Adam). Tangents:
    `dg = H z (+ wd z)`, `dm' = b1 dm + (1 - b1) dg`, `dv' = b2 dv + 2 (1 - b2) g~ dg`,
    `du = dm' / (c1 (s + eps)) - m' dv^' / (2 c1 c2 s (s + eps)^2)`, and
    `dw' = mu (z (1 - lr wd) - lr du) - ratio (u + wd w)` (AdamW) or `mu (z - lr du) - ratio u` (Adam).
    """

    def __init__(self, group: dict, decoupled: bool) -> None:
        self.beta1, self.beta2 = (float(b) for b in group["betas"])
        self.eps = float(group["eps"])
        self.weight_decay = float(group["weight_decay"])
        self.decoupled = bool(decoupled or group.get("decoupled_weight_decay", False))
        self.amsgrad = bool(group["amsgrad"])
        self.aux_names = ("m", "v", "vmax") if self.amsgrad else ("m", "v")

    def prepare(self, params, grads, states):
        wd = self.weight_decay
        if not wd:
            return grads, None
        if self.decoupled:
            return grads, torch._foreach_mul(params, wd)
        return torch._foreach_add(grads, params, alpha=wd), None

    def advance(self, pre, params, grads, states, z, aux, hz, *, lr, ratio, mu):
        g_eff, decay_term = pre
        b1, b2, eps = self.beta1, self.beta2, self.eps
        exp_avg = [s["exp_avg"] for s in states]
        v_hat = [s["max_exp_avg_sq" if self.amsgrad else "exp_avg_sq"] for s in states]
        steps = _step_counts(states)
        uniform = all(t == steps[0] for t in steps)
        c1 = [1.0 - b1**t for t in steps]
        c2 = [1.0 - b2**t for t in steps]

        # s = sqrt(v^) / sqrt(c2), den = s + eps, and the unscaled direction m' / den.
        s = torch._foreach_sqrt(v_hat)
        torch._foreach_div_(s, [math.sqrt(c) for c in c2])
        den = torch._foreach_add(s, eps)
        u = torch._foreach_div(exp_avg, den)
        if uniform:
            u_scale = 1.0 / c1[0]  # u = u_scale * (m'/den), scaled lazily
        else:
            torch._foreach_mul_(u, [1.0 / c for c in c1])
            u_scale = 1.0

        if hz is None:
            z[:] = torch._foreach_mul(u, -ratio * u_scale)
            for name in self.aux_names:
                torch._foreach_zero_(aux[name])
        else:
            dg = hz
            if self.weight_decay and not self.decoupled:
                torch._foreach_add_(dg, z, alpha=self.weight_decay)
            dm, dv = aux["m"], aux["v"]
            torch._foreach_mul_(dm, b1)
            torch._foreach_add_(dm, dg, alpha=1.0 - b1)
            g_dg = torch._foreach_mul(g_eff, dg)
            torch._foreach_mul_(dv, b2)
            torch._foreach_add_(dv, g_dg, alpha=2.0 * (1.0 - b2))
            dv_hat = dv
            if self.amsgrad:
                exp_avg_sq = [st["exp_avg_sq"] for st in states]
                dvmax = aux["vmax"]
                for i in range(len(dvmax)):
                    # v^' = max(v^, v'): the derivative follows whichever argument won.
                    dvmax[i] = torch.where(v_hat[i] == exp_avg_sq[i], dv[i], dvmax[i])
                dv_hat = dvmax
            # c1 du = dm'/den - (m'/s) dv^' / (2 c2 den^2). Where v^' = 0 (a coordinate whose gradient has
            # always been exactly 0) m' = 0 too: the clamp makes m'/s = 0 there instead of 0/0, and den >= eps
            # keeps den^2 representable (s * den^2 would underflow to 0 in float32).
            du = torch._foreach_div(dm, den)
            torch._foreach_clamp_min_(s, torch.finfo(s[0].dtype).tiny)
            m_over_s = torch._foreach_div(exp_avg, s)
            torch._foreach_mul_(m_over_s, dv_hat)
            den_sq = torch._foreach_mul(den, den)
            torch._foreach_addcdiv_(du, m_over_s, den_sq, [-0.5 / c for c in c2])
            if self.decoupled and self.weight_decay:
                torch._foreach_mul_(z, 1.0 - lr * self.weight_decay)
            if uniform:
                torch._foreach_add_(z, du, alpha=-lr / c1[0])
            else:
                torch._foreach_mul_(du, [-lr / c for c in c1])
                torch._foreach_add_(z, du)
            _scale_(z, mu)
            for name in self.aux_names:
                _scale_(aux[name], mu)
            torch._foreach_add_(z, u, alpha=-ratio * u_scale)
        terms = [(u, u_scale)]
        if decay_term is not None:
            torch._foreach_add_(z, decay_term, alpha=-ratio)
            terms.append((decay_term, 1.0))
        return terms


def _step_counts(states: list[dict]) -> list[float]:
    """Each parameter's Adam step count as a float (one host transfer when they are tensors)."""
    steps = [s["step"] for s in states]
    if all(isinstance(t, Tensor) for t in steps):
        return torch.stack([t.reshape(()).to("cpu", torch.float64) for t in steps]).tolist()
    return [float(t) for t in steps]


def make_dynamics(optimizer: torch.optim.Optimizer, group: dict) -> Dynamics:
    """The dynamics of one param group; a ValueError for anything whose tangent we do not know exactly."""
    name = type(optimizer).__name__
    if group.get("maximize", False):
        raise ValueError(f"hypergradient control does not support maximize=True ({name})")
    if type(optimizer) is torch.optim.SGD:
        return SGDDynamics(group)
    if type(optimizer) is torch.optim.AdamW:
        return AdamDynamics(group, decoupled=True)
    if type(optimizer) is torch.optim.Adam:
        return AdamDynamics(group, decoupled=False)
    raise ValueError(
        f"hypergradient control supports torch.optim.SGD, Adam and AdamW, got {name}; "
        "its exact tangent dw/dlr is not implemented"
    )
