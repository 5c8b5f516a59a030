r"""SGD_C: SGD (with momentum, dampening, Nesterov) fed with critical-gradient aggregates.

.. math::
    d_t = g_t + \lambda\theta_{t-1} \quad(\text{L2, before buffering}), \qquad
    a_t = \mathrm{aggr}(d_t, B_{t-1}), \qquad
    \text{then torch SGD on } a_t,

with :math:`B_{t-1}` the memory of the top-``topC`` past offered gradients by decayed norm
(McRae et al., "Memory Augmented Optimizers for Deep Learning", ICLR 2022, arXiv 2106.10708).

Differences from the original: momentum is applied whatever ``kappa`` is (the original
skipped it for ``kappa=0``); ``kappa=0`` is exactly `torch.optim.SGD`; Nesterov is offered; the
memory is the exact top-C; invalid ``decay`` / ``topC`` are rejected.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.sgd import sgd

from optimlab.optim.critical.base import MEMORY, CriticalOptimizer, check_fused, memory_defaults, split_weight_decay
from optimlab.optim.critical.buffer import priority_dtype
from optimlab.optim.critical.fused import SGD_SCALARS, run_fused, sgd_c_step
from optimlab.optim.critical.memory import FusedWrite
from optimlab.validate import check, check_flag, check_number


class SGD_C(CriticalOptimizer):  # noqa: N801 -- the original's class name
    """SGD with a critical-gradient memory.

    The first twelve arguments are the original's, in its order and with its defaults (``sampling=None``
    there means 'KotH'); the memory arguments are described on `CriticalOptimizer`. Base arguments, as
    `torch.optim.SGD`: momentum, dampening, nesterov, weight_decay (L2, placed by ``weight_decay_mode``,
    default 'before_buffer' as the original), fused.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = SGD_C(model.parameters(), lr=0.1, momentum=0.9, topC=5, decay=0.9)
        >>> model(torch.ones(1, 3)).sum().backward(); opt.step()
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        kappa: float = MEMORY.kappa,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        decay: float = MEMORY.decay,
        topC: int = MEMORY.topC,  # noqa: N803 -- the original's argument name
        aggr: str = "sum",
        sampling: str | None = MEMORY.sampling,
        critical_test: bool = MEMORY.critical_test,
        synced: bool | str = MEMORY.synced,
        *,
        nesterov: bool = False,
        weight_decay_mode: str = "before_buffer",
        priority: str = MEMORY.priority,
        update: str = MEMORY.update,
        offer: str = MEMORY.offer,
        refresh_every: int = MEMORY.refresh_every,
        diagnostics: bool = MEMORY.diagnostics,
        seed: int = MEMORY.seed,
        foreach: bool | None = MEMORY.foreach,
        fused: bool | None = None,
    ) -> None:
        defaults = memory_defaults(
            lr=lr, kappa=kappa, decay=decay, topC=topC, aggr=aggr, sampling=sampling,
            critical_test=critical_test, synced=synced, weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode, priority=priority, update=update, offer=offer,
            refresh_every=refresh_every, diagnostics=diagnostics, seed=seed, foreach=foreach,
        )  # fmt: skip
        check_number("momentum", momentum, low=0)
        check_number("dampening", dampening)
        check_flag("nesterov", nesterov)
        check(not nesterov or (momentum > 0 and dampening == 0), "nesterov", nesterov,
              "requires momentum > 0 and dampening = 0")
        check_fused(fused, foreach)
        defaults.update(momentum=momentum, dampening=dampening, nesterov=nesterov, fused=fused)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("fused", None)

    def _update(
        self, group: dict[str, Any], params: list[Tensor], directions: list[Tensor], l2: float, decoupled: float
    ) -> None:
        if decoupled != 0:
            _shrink(params, group["lr"] * decoupled, group["foreach"] is not False)
        momentum = group["momentum"]
        if group["nesterov"] and any(d is p.grad for d, p in zip(directions, params)):
            # torch's foreach Nesterov writes into the gradients it is given; keep p.grad untouched.
            directions = [d.clone() if d is p.grad else d for d, p in zip(directions, params)]
        buffers = [self.state[p].get("momentum_buffer") for p in params] if momentum != 0 else []
        sgd(
            params,
            directions,
            buffers,
            weight_decay=l2,
            momentum=momentum,
            lr=group["lr"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            maximize=False,
            has_sparse_grad=False,
            foreach=group["foreach"],
            fused=group["fused"],
        )
        if momentum != 0:
            for p, buffer in zip(params, buffers):
                self.state[p]["momentum_buffer"] = buffer

    def _base_state(self, group: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        # Without momentum the update is one addition per tensor: joining the directions would cost more.
        return (("momentum_buffer",), ()) if group["momentum"] != 0 else None

    def _fused_write(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> FusedWrite | None:
        """With ``fused=True`` on CPU, a step that admits every tensor or none is one compiled pass (`fused.py`)."""
        momentum = group["momentum"]
        buffers = [self.state[p].get("momentum_buffer") for p in params] if momentum != 0 else []
        if any(b is None for b in buffers):  # torch's first momentum step creates them
            return None
        lr = group["lr"]
        l2_before, l2_after, decoupled = split_weight_decay(group)
        values = {
            "lr": lr,
            "l2_before": l2_before,
            "l2_after": l2_after,
            "shrink": 1 - lr * decoupled,
            "momentum": momentum,
            "one_minus_dampening": 1 - group["dampening"],
        }
        dtype = priority_dtype(params[0])  # float32 arithmetic for half / bfloat16 parameters
        scalars = torch.tensor([float(values[name]) for name in SGD_SCALARS], dtype=dtype)

        def write(totals: list[Tensor], slots: list[Tensor], weights: list[tuple[float, float]]) -> None:
            run_fused(
                sgd_c_step,
                params,
                grads,
                totals,
                slots,
                buffers,
                scalars,
                torch.tensor(weights, dtype=dtype).T.contiguous(),
                l2_before=l2_before != 0,
                l2_after=l2_after != 0,
                decoupled=decoupled != 0,
                momentum=momentum != 0,
                nesterov=group["nesterov"],
            )

        return write


def _shrink(params: list[Tensor], amount: Any, vectorized: bool) -> None:
    """Decoupled weight decay: every parameter *= 1 - amount."""
    if vectorized:
        torch._foreach_mul_(params, 1 - amount)
    else:
        for p in params:
            p.mul_(1 - amount)
