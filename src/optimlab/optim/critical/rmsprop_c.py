r"""RMSprop_C: RMSprop (centered, momentum options) fed with critical-gradient aggregates.

.. math::
    a_t = \mathrm{aggr}(g_t, B_{t-1}), \qquad
    \text{then torch RMSprop on } a_t \ (\text{L2 added to } a_t),

with :math:`B_{t-1}` the memory of the top-``topC`` past raw gradients by decayed norm.

Differences from the original: ``kappa`` is honoured (always 1 there); ``kappa=0`` is
exactly `torch.optim.RMSprop` (the original crashed); ``sampling`` and ``critical_test`` are honoured
(the original accepted and ignored them).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype
from torch.optim.rmsprop import rmsprop

from optimlab.optim.critical.base import MEMORY, CriticalOptimizer, memory_defaults
from optimlab.optim.critical.sgd_c import _shrink
from optimlab.validate import check_flag, check_number


class RMSprop_C(CriticalOptimizer):  # noqa: N801 -- the original's class name
    """RMSprop with a critical-gradient memory.

    The first eleven arguments are the original's, in its order and with its defaults; the memory
    arguments are described on `CriticalOptimizer`. Base arguments, as `torch.optim.RMSprop`: alpha,
    eps, centered, momentum, weight_decay (L2 on the aggregate by default,
    ``weight_decay_mode='after_aggregate'`` as the original).

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = RMSprop_C(model.parameters(), lr=1e-3, centered=True, topC=5)
        >>> model(torch.ones(1, 3)).sum().backward(); opt.step()
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        decay: float = MEMORY.decay,
        kappa: float = MEMORY.kappa,
        topC: int = MEMORY.topC,  # noqa: N803 -- the original's argument name
        aggr: str = "mean",
        synced: bool | str = MEMORY.synced,
        sampling: str | None = MEMORY.sampling,
        critical_test: bool = MEMORY.critical_test,
        *,
        weight_decay_mode: str = "after_aggregate",
        priority: str = MEMORY.priority,
        update: str = MEMORY.update,
        offer: str = MEMORY.offer,
        refresh_every: int = MEMORY.refresh_every,
        diagnostics: bool = MEMORY.diagnostics,
        seed: int = MEMORY.seed,
        foreach: bool | None = MEMORY.foreach,
    ) -> None:
        defaults = memory_defaults(
            lr=lr, kappa=kappa, decay=decay, topC=topC, aggr=aggr, sampling=sampling,
            critical_test=critical_test, synced=synced, weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode, priority=priority, update=update, offer=offer,
            refresh_every=refresh_every, diagnostics=diagnostics, seed=seed, foreach=foreach,
        )  # fmt: skip
        check_number("alpha", alpha, low=0, high=1)
        check_number("eps", eps, low=0)
        check_number("momentum", momentum, low=0)
        check_flag("centered", centered)
        defaults.update(alpha=alpha, eps=eps, momentum=momentum, centered=centered)
        super().__init__(params, defaults)

    def _base_state(self, group: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        optional = (("momentum_buffer",) if group["momentum"] > 0 else ()) + (("grad_avg",) if group["centered"] else ())
        return ("square_avg", *optional), ("step",)

    def _update(
        self, group: dict[str, Any], params: list[Tensor], directions: list[Tensor], l2: float, decoupled: float
    ) -> None:
        if decoupled != 0:
            _shrink(params, group["lr"] * decoupled, group["foreach"] is not False)
        square_avgs, grad_avgs, momentum_buffers, steps = [], [], [], []
        for p in params:
            state = self.state[p]
            if "step" not in state:  # lazily, exactly as torch.optim.RMSprop
                state["step"] = torch.zeros((), dtype=_get_scalar_dtype())
                state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["momentum"] > 0 and "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["centered"] and "grad_avg" not in state:
                state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            square_avgs.append(state["square_avg"])
            steps.append(state["step"])
            if group["momentum"] > 0:
                momentum_buffers.append(state["momentum_buffer"])
            if group["centered"]:
                grad_avgs.append(state["grad_avg"])
        rmsprop(
            params,
            directions,
            square_avgs,
            grad_avgs,
            momentum_buffers,
            steps,
            foreach=group["foreach"],
            maximize=False,
            lr=group["lr"],
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=l2,
            momentum=group["momentum"],
            centered=group["centered"],
        )
