r"""Adam_C and AdamW_C: Adam (optionally AMSGrad) fed with critical-gradient aggregates.

.. math::
    a_t = \mathrm{aggr}(g_t, B_{t-1}), \qquad
    \text{then torch Adam on } a_t \ (\text{L2 added to } a_t), \text{ or AdamW (decoupled decay)},

with :math:`B_{t-1}` the memory of the top-``topC`` past raw gradients by decayed norm; the aggregate
feeds both moments.

Differences from the original: ``kappa`` is honoured (the original always aggregated with
kappa = 1); ``kappa=0`` is exactly `torch.optim.Adam` / `AdamW` (the original crashed);
``step(closure)`` works; state round-trips through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.adam import adam
from torch.optim.optimizer import _get_scalar_dtype

from optimlab.optim.critical.base import MEMORY, CriticalOptimizer, check_fused, memory_defaults, split_weight_decay
from optimlab.optim.critical.buffer import priority_dtype
from optimlab.optim.critical.fused import ADAM_SCALARS, adam_c_step, run_fused
from optimlab.optim.critical.memory import FusedWrite
from optimlab.validate import check, check_flag, check_number


class Adam_C(CriticalOptimizer):  # noqa: N801 -- the original's class name
    """Adam with a critical-gradient memory.

    The first thirteen arguments are the original's, in its order and with its defaults
    (``sampling=None`` there means 'KotH'); the memory arguments are described on
    `CriticalOptimizer`. Base arguments, as `torch.optim.Adam`: betas, eps, amsgrad, weight_decay (L2
    on the aggregate by default, ``weight_decay_mode='after_aggregate'`` as the original), fused.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = Adam_C(model.parameters(), lr=1e-3, topC=5, decay=0.9)
        >>> model(torch.ones(1, 3)).sum().backward(); opt.step()
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        decay: float = MEMORY.decay,
        kappa: float = MEMORY.kappa,
        topC: int = MEMORY.topC,  # noqa: N803 -- the original's argument name
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        aggr: str = "mean",
        sampling: str | None = MEMORY.sampling,
        critical_test: bool = MEMORY.critical_test,
        synced: bool | str = MEMORY.synced,
        *,
        weight_decay_mode: str = "after_aggregate",
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
        check(isinstance(betas, (tuple, list)) and len(betas) == 2, "betas", betas, "must be two numbers in [0, 1)")
        for index, beta in enumerate(betas):
            check_number(f"betas[{index}]", beta, low=0, high=1, high_inclusive=False)
        check_number("eps", eps, low=0)
        check_flag("amsgrad", amsgrad)
        check_fused(fused, foreach)
        defaults.update(betas=tuple(betas), eps=eps, amsgrad=amsgrad, fused=fused)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("fused", None)

    def _update(
        self, group: dict[str, Any], params: list[Tensor], directions: list[Tensor], l2: float, decoupled: float
    ) -> None:
        exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = self._moments(group, params)
        beta1, beta2 = group["betas"]
        adam(
            params,
            directions,
            exp_avgs,
            exp_avg_sqs,
            max_exp_avg_sqs,
            steps,
            foreach=group["foreach"],
            fused=group["fused"],
            decoupled_weight_decay=decoupled != 0,
            amsgrad=group["amsgrad"],
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=decoupled if decoupled != 0 else l2,
            eps=group["eps"],
            maximize=False,
        )

    def _base_state(self, group: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return ("exp_avg", "exp_avg_sq", *(("max_exp_avg_sq",) if group["amsgrad"] else ())), ("step",)

    def _moments(
        self, group: dict[str, Any], params: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """torch Adam's state for `params` (created lazily, exactly as torch.optim.Adam does): the first and
        second moments, the AMSGrad maxima (empty without amsgrad) and the step counters."""
        exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = [], [], [], []
        for p in params:
            state = self.state[p]
            if "step" not in state:
                if group["fused"]:
                    state["step"] = torch.zeros((), dtype=_get_scalar_dtype(is_fused=True), device=p.device)
                else:
                    state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"] and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            if group["amsgrad"]:
                max_exp_avg_sqs.append(state["max_exp_avg_sq"])
            steps.append(state["step"])
        return exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps

    def _fused_write(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> FusedWrite | None:
        """With ``fused=True`` on CPU, a step that admits every tensor or none is one compiled pass (`fused.py`)."""
        exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = self._moments(group, params)
        lr = group["lr"]
        l2_before, l2_after, decoupled = split_weight_decay(group)
        beta1, beta2 = group["betas"]
        values = {
            "l2_before": l2_before,
            "l2_after": l2_after,
            "shrink": 1 - lr * decoupled,
            "one_minus_beta1": 1 - beta1,
            "beta2": beta2,
            "one_minus_beta2": 1 - beta2,
            "eps": group["eps"],
        }
        dtype = priority_dtype(params[0])  # float32 arithmetic for half / bfloat16 parameters
        scalars = torch.tensor([float(values[name]) for name in ADAM_SCALARS], dtype=dtype)

        def write(totals: list[Tensor], slots: list[Tensor], weights: list[tuple[float, float]]) -> None:
            torch._foreach_add_(steps, 1)
            counts = [float(step) for step in steps]
            # Bias corrections in Python floats, as torch's (non-capturable) Adam computes them.
            per_tensor = [
                (w_d, w_s, lr / (1 - beta1**n), (1 - beta2**n) ** 0.5) for (w_d, w_s), n in zip(weights, counts)
            ]
            run_fused(
                adam_c_step,
                params,
                grads,
                totals,
                slots,
                exp_avgs,
                exp_avg_sqs,
                max_exp_avg_sqs,
                scalars,
                torch.tensor(per_tensor, dtype=dtype).T.contiguous(),
                l2_before=l2_before != 0,
                l2_after=l2_after != 0,
                decoupled=decoupled != 0,
                amsgrad=group["amsgrad"],
            )

        return write


class AdamW_C(Adam_C):  # noqa: N801 -- CGOptimizer's class name
    """Adam_C with decoupled weight decay by default (``weight_decay=0.01``), like `torch.optim.AdamW`.

    ``kappa=0`` is exactly `torch.optim.AdamW`. All other arguments as `Adam_C`.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        decay: float = MEMORY.decay,
        kappa: float = MEMORY.kappa,
        topC: int = MEMORY.topC,  # noqa: N803 -- the original's argument name
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        aggr: str = "mean",
        sampling: str | None = MEMORY.sampling,
        critical_test: bool = MEMORY.critical_test,
        synced: bool | str = MEMORY.synced,
        *,
        weight_decay_mode: str = "decoupled",
        priority: str = MEMORY.priority,
        update: str = MEMORY.update,
        offer: str = MEMORY.offer,
        refresh_every: int = MEMORY.refresh_every,
        diagnostics: bool = MEMORY.diagnostics,
        seed: int = MEMORY.seed,
        foreach: bool | None = MEMORY.foreach,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, decay, kappa, topC, weight_decay, amsgrad, aggr, sampling,
            critical_test, synced, weight_decay_mode=weight_decay_mode, priority=priority,
            update=update, offer=offer, refresh_every=refresh_every, diagnostics=diagnostics,
            seed=seed, foreach=foreach, fused=fused,
        )  # fmt: skip
