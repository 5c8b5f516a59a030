"""The step direction an optimizer WOULD take for a given gradient, without changing anything.

`peek_direction` deep-copies the optimizer (its parameters and state come along through one deepcopy memo,
so the copy's state is keyed by the copied parameters), gives the copies the gradient, steps the copy and
reads the move: direction = (w - w_after) / lr of the parameter's group (the raw move when lr is 0). For SGD
that is the gradient (plus weight decay), for momentum the new velocity, for Adam the bias-corrected
m_hat / (sqrt(v_hat) + eps) advanced by this gradient, for the critical-gradient optimizers the aggregate of
the gradient and the memory. This is the "peek" the gradient-variance study needed but approximated with
shadow states fed by another data stream (Faghri et al. 2020): here the optimizer's actual state is used,
exactly as the next training step would.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor


def peek_direction(optimizer: torch.optim.Optimizer, params: Sequence[Tensor], grads: Sequence[Tensor]) -> list[Tensor]:
    """The direction for `grads` (aligned with `params`, parameters of `optimizer`); nothing live is modified."""
    memo: dict = {}
    shadow = copy.deepcopy(optimizer, memo)
    lr = {}
    for group in shadow.param_groups:
        for p in group["params"]:
            p.grad = None
            lr[id(p)] = float(group.get("lr", 0.0))
    copies = []
    for p, g in zip(params, grads):
        twin = memo.get(id(p))
        if twin is None:
            raise ValueError("peek_direction: a parameter is not in the optimizer's parameter groups")
        twin.grad = g.detach().clone().to(twin.dtype)
        copies.append(twin)
    try:
        with torch.no_grad():
            shadow.step()
    except TypeError as error:
        raise ValueError(f"cannot peek at {type(optimizer).__name__}: its step needs a closure ({error})") from None
    out = []
    with torch.no_grad():
        for p, twin in zip(params, copies):
            move = p.detach() - twin.detach()
            rate = lr[id(twin)]
            out.append(move / rate if rate > 0 else move)
    return out
