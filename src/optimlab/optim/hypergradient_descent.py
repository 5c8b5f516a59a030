"""Hypergradient descent (HD): SGD and Adam that tune their own learning rate online.

Baydin, Cornish, Martinez Rubio, Schmidt, Wood, "Online Learning Rate Adaptation with Hypergradient Descent",
ICLR 2018 (arXiv:1703.04782). The update direction of the previous step, `u_{t-1}` (with
`w_t = w_{t-1} - lr u_{t-1}`), gives the one-step hypergradient of the training loss,
`dL(w_t)/dlr = -g_t . u_{t-1}`, so before each step

    lr <- clip(lr + hypergrad_lr * g_t . u_{t-1}, lr_min, lr_max)

and then the base step runs with the new lr. `g_t` includes L2 weight decay (`g + wd w`).

Differences from the original implementation (AdaTune's `hd_sgd.py` / `hd_adam.py`):
one lr per param group (the original supports one group), updated once per step from the dot product over
all the group's tensors (AdamHD updated it once per tensor, inside its loop), kept a Python float (it
became a 0-dim tensor), projected into `[lr_min, lr_max]` (`lr_min=None`: unbounded, the original);
weight decay never mutates `p.grad`; parameters without a gradient are skipped. With one group, no weight
decay and an lr that stays positive, `SGDHD` computes exactly what the original does. `AdamHD`'s base
step is torch's Adam (`eps` added to the bias-corrected root), so with `hypergrad_lr=0` it equals
`torch.optim.Adam`; the original used the older form `lr sqrt(c2)/c1 * m / (sqrt(v) + eps)`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from optimlab.validate import check, check_number


def _check_bounds(lr_min: float | None, lr_max: float | None) -> None:
    if lr_min is not None:
        check_number("lr_min", lr_min, low=0)
    if lr_max is not None:
        check_number("lr_max", lr_max, low=lr_min or 0.0)


def _scalar_lr(lr: Any) -> Any:
    """A one-element tensor lr (torch's optimizers accept them) as the Python float HD keeps and updates."""
    if torch.is_tensor(lr):
        check(lr.numel() == 1, "lr", lr, "must be a number or a one-element tensor")
        return float(lr)
    return lr


def _reject_complex(optimizer: Optimizer, group: dict) -> None:
    """HD's hypergradient is the real inner product g . u; for complex tensors it would need Re(conj(g) . u),
    and torch.dot does not conjugate, so a complex parameter would get a silently wrong lr: refuse it."""
    if any(torch.is_complex(p) for p in group["params"]):
        optimizer.param_groups.pop()
        raise ValueError(f"{type(optimizer).__name__} does not support complex parameters "
                         "(use torch.view_as_real on them, or a torch optimizer)")


def _group_dot(xs: list[Tensor], ys: list[Tensor]) -> float:
    """sum_i <x_i, y_i> as a Python float (one host sync)."""
    if not xs:
        return 0.0
    dots = [torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(xs, ys)]
    if len({d.dtype for d in dots}) > 1:
        dots = [d.double() for d in dots]
    return float(torch.stack(dots).sum())


def hypergradient_lr(lr: float, h: float, hypergrad_lr: float, lr_min: float | None, lr_max: float | None) -> float:
    """`clip(lr + hypergrad_lr * h, lr_min, lr_max)`, where `h = g_t . u_{t-1}`."""
    lr = lr + hypergrad_lr * h
    if lr_min is not None:
        lr = max(lr, lr_min)
    if lr_max is not None:
        lr = min(lr, lr_max)
    return lr


class SGDHD(Optimizer):
    r"""SGD (torch semantics: momentum, dampening, Nesterov, L2 weight decay) with hypergradient descent on lr.

    .. math::
        d_t = g_t + \lambda w_t,\quad \eta_t = \Pi(\eta_{t-1} + \beta\, d_t \cdot u_{t-1}),\quad
        b_t = m b_{t-1} + (1 - \tau) d_t,\quad u_t = d_t + m b_t \text{ (Nesterov) or } b_t,\quad
        w_{t+1} = w_t - \eta_t u_t

    Args:
        params: parameters or param groups.
        lr: initial learning rate (default 1e-3).
        momentum, dampening, weight_decay, nesterov: as `torch.optim.SGD`.
        hypergrad_lr: the hyper learning rate beta (default 1e-6, Baydin et al.'s SGD-HD default).
        lr_min, lr_max: projection bounds of the lr (default [0, inf); `lr_min=None` removes the floor).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        hypergrad_lr: float = 1e-6,
        lr_min: float | None = 0.0,
        lr_max: float | None = None,
    ) -> None:
        lr = _scalar_lr(lr)
        check_number("lr", lr, low=0)
        check_number("momentum", momentum, low=0)
        check_number("dampening", dampening, low=0)
        check_number("weight_decay", weight_decay, low=0)
        check_number("hypergrad_lr", hypergrad_lr, low=0)
        _check_bounds(lr_min, lr_max)
        check(not nesterov or (momentum > 0 and dampening == 0), "nesterov", nesterov,
              "requires a momentum > 0 and zero dampening")
        defaults = dict(
            lr=float(lr), momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
            hypergrad_lr=hypergrad_lr, lr_min=lr_min, lr_max=lr_max,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        _reject_complex(self, self.param_groups[-1])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            m, damp, wd = group["momentum"], group["dampening"], group["weight_decay"]
            nesterov = group["nesterov"]
            grads = [p.grad for p in params]
            d = torch._foreach_add(grads, params, alpha=wd) if wd != 0 else grads
            states = [self.state[p] for p in params]

            # The previous direction u_{t-1}: the momentum buffer itself (plain momentum), else stored.
            key = "momentum_buffer" if (m != 0 and not nesterov) else "prev_update"
            seen = [i for i, s in enumerate(states) if key in s]
            h = _group_dot([d[i] for i in seen], [states[i][key] for i in seen])
            lr = hypergradient_lr(float(group["lr"]), h, group["hypergrad_lr"], group["lr_min"], group["lr_max"])
            group["lr"] = lr

            if m != 0:
                old = [i for i, s in enumerate(states) if "momentum_buffer" in s]
                new = [i for i, s in enumerate(states) if "momentum_buffer" not in s]
                if old:
                    buffers = [states[i]["momentum_buffer"] for i in old]
                    torch._foreach_mul_(buffers, m)
                    torch._foreach_add_(buffers, [d[i] for i in old], alpha=1.0 - damp)
                for i in new:  # torch starts the buffer at d, undamped
                    states[i]["momentum_buffer"] = d[i].clone()
                buffers = [s["momentum_buffer"] for s in states]
                u = torch._foreach_add(d, buffers, alpha=m) if nesterov else buffers
            else:
                u = d
            torch._foreach_add_(params, u, alpha=-lr)
            if key == "prev_update":
                for s, ui, di in zip(states, u, d):
                    # u may be p.grad itself (no momentum, no decay): keep a copy the caller cannot zero.
                    s["prev_update"] = ui.clone() if ui is di and wd == 0 else ui
        return loss


class AdamHD(Optimizer):
    r"""Adam (torch semantics, coupled L2 weight decay) with hypergradient descent on lr.

    .. math::
        \eta_t = \Pi(\eta_{t-1} + \beta\, g_t \cdot u_{t-1}),\quad
        u_t = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon},\quad w_{t+1} = w_t - \eta_t u_t

    with `g_t` including `weight_decay * w` and the bias-corrected moments of `torch.optim.Adam`.

    Args:
        params: parameters or param groups.
        lr: initial learning rate (default 1e-3).
        betas, eps, weight_decay: as `torch.optim.Adam`.
        hypergrad_lr: the hyper learning rate beta (default 1e-8, Baydin et al.'s Adam-HD default).
        lr_min, lr_max: projection bounds of the lr (default [0, inf); `lr_min=None` removes the floor).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        hypergrad_lr: float = 1e-8,
        lr_min: float | None = 0.0,
        lr_max: float | None = None,
    ) -> None:
        lr = _scalar_lr(lr)
        check_number("lr", lr, low=0)
        check_number("eps", eps, low=0)
        check(isinstance(betas, (tuple, list)) and len(betas) == 2, "betas", betas, "must be a pair")
        beta1, beta2 = betas
        check_number("betas[0]", beta1, low=0, high=1, high_inclusive=False)
        check_number("betas[1]", beta2, low=0, high=1, high_inclusive=False)
        check_number("weight_decay", weight_decay, low=0)
        check_number("hypergrad_lr", hypergrad_lr, low=0)
        _check_bounds(lr_min, lr_max)
        defaults = dict(
            lr=float(lr), betas=(float(beta1), float(beta2)), eps=eps, weight_decay=weight_decay,
            hypergrad_lr=hypergrad_lr, lr_min=lr_min, lr_max=lr_max,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        _reject_complex(self, self.param_groups[-1])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            beta1, beta2 = group["betas"]
            eps, wd = group["eps"], group["weight_decay"]
            grads = [p.grad for p in params]
            g = torch._foreach_add(grads, params, alpha=wd) if wd != 0 else grads
            states = [self.state[p] for p in params]

            seen = [i for i, s in enumerate(states) if "prev_update" in s]
            h = _group_dot([g[i] for i in seen], [states[i]["prev_update"] for i in seen])
            lr = hypergradient_lr(float(group["lr"]), h, group["hypergrad_lr"], group["lr_min"], group["lr_max"])
            group["lr"] = lr

            for s, p in zip(states, params):
                if "step" not in s:
                    s["step"] = 0
                    s["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    s["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                s["step"] += 1
            exp_avg = [s["exp_avg"] for s in states]
            exp_avg_sq = [s["exp_avg_sq"] for s in states]
            torch._foreach_lerp_(exp_avg, g, 1.0 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, g, g, 1.0 - beta2)
            steps = [s["step"] for s in states]
            # u = (m / c1) / (sqrt(v) / sqrt(c2) + eps), exactly torch's Adam direction.
            denom = torch._foreach_sqrt(exp_avg_sq)
            torch._foreach_div_(denom, [math.sqrt(1.0 - beta2**t) for t in steps])
            torch._foreach_add_(denom, eps)
            u = torch._foreach_div(exp_avg, denom)
            torch._foreach_div_(u, [1.0 - beta1**t for t in steps])
            torch._foreach_add_(params, u, alpha=-lr)
            for s, ui in zip(states, u):
                s["prev_update"] = ui
        return loss
