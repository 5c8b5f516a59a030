"""Muon for the hidden matrices and AdamW for everything else, as one `torch.optim.Optimizer`.

Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/; Liu et al. 2025, "Muon is Scalable for
LLM Training", arXiv:2502.16982) orthogonalises the momentum of a weight matrix with Newton-Schulz
iterations. It is meant for the 2-D weights of hidden layers only: biases, normalisation gains, embeddings
and the output layer should be trained by a standard method such as AdamW. `torch.optim.Muon` implements the
update and refuses any parameter that is not 2-D, so on its own it cannot train a whole model;
`MuonWithAdamW` runs both, like the original's `MuonWithAuxAdam` (github.com/KellerJordan/Muon).

Design: every param group carries `use_muon` (True or False). The groups with `use_muon=True` belong to an
inner `torch.optim.Muon`, the others to an inner `torch.optim.AdamW`; the group dicts are shared, not
copied, and the two inner optimizers share this optimizer's `state`. So `param_groups` is the union of both
optimizers' groups (an lr scheduler or a hypergradient controller edits both), `state_dict()` is the base
class's (plain tensors and numbers: it loads with `torch.load(..., weights_only=True)`), and the update is
exactly torch's Muon and torch's AdamW, each on its own parameters.

A group's hyperparameters use the names of the optimizer it belongs to (`lr`, `weight_decay`, `momentum`,
... for Muon groups; `lr`, `betas`, `eps`, `weight_decay` for AdamW groups). The constructor's `adamw_*`
arguments are the AdamW groups' defaults; `adamw_lr` and `adamw_weight_decay` default to `lr` and
`weight_decay`, which is what `adjust_lr_fn="match_rms_adamw"` (Liu et al.) is designed for.

Which parameters go to Muon: a group given without `use_muon` is split by shape, 2-D parameters to Muon and
the rest to AdamW (torch's documented example). That sends embeddings and the output layer to Muon as well;
`optimlab.optim.param_groups.build_param_groups(model, "muon")`, which the trainer uses, builds groups
that keep them on AdamW.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> from optimlab.optim.param_groups import build_param_groups
    >>> optimizer = MuonWithAdamW(build_param_groups(model, "muon"), lr=0.02, adjust_lr_fn="match_rms_adamw")
    >>> [(g["use_muon"], len(g["params"])) for g in optimizer.param_groups]
    [(True, 2), (False, 4)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def _check(name: str, value: Any, low: float = 0.0, below: float | None = None) -> None:
    """A finite number >= low (and < below): else a ValueError naming the argument and the value."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= low
    if ok and below is not None:
        ok = value < below
    if not ok:
        bound = f">= {low}" + ("" if below is None else f" and < {below}")
        raise ValueError(f"Invalid {name}: {value!r} (must be {bound})")


def _tensor(param: Tensor | tuple[str, Tensor]) -> Tensor:
    return param[1] if isinstance(param, tuple) else param


class MuonWithAdamW(Optimizer):
    """Muon on the groups marked `use_muon=True`, AdamW on the others, in one optimizer.

    Args:
        params: tensors, or param-group dicts; a dict may set `use_muon` (default: decided by shape, see the
            module docstring) and any hyperparameter of its optimizer.
        lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn: the Muon groups'
            defaults, as in `torch.optim.Muon` (same defaults: 1e-3, 0.1, 0.95, True, (3.4445, -4.775,
            2.0315), 1e-7, 5, None = "original").
        adamw_lr: the AdamW groups' lr (default: `lr`).
        adamw_betas, adamw_eps: the AdamW groups' betas and eps (torch's defaults (0.9, 0.999), 1e-8).
        adamw_weight_decay: the AdamW groups' decoupled weight decay (default: `weight_decay`).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        adamw_lr: float | None = None,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float | None = None,
    ) -> None:
        adamw_lr = lr if adamw_lr is None else adamw_lr
        adamw_weight_decay = weight_decay if adamw_weight_decay is None else adamw_weight_decay
        for name, value in [("lr", lr), ("weight_decay", weight_decay), ("momentum", momentum), ("eps", eps),
                            ("adamw_lr", adamw_lr), ("adamw_eps", adamw_eps),
                            ("adamw_weight_decay", adamw_weight_decay)]:  # fmt: skip
            _check(name, value)
        if len(adamw_betas) != 2:
            raise ValueError(f"Invalid adamw_betas: {adamw_betas!r} (must be two numbers in [0, 1))")
        for beta in adamw_betas:
            _check("adamw_betas", beta, 0.0, 1.0)
        if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or not 1 <= ns_steps < 100:
            raise ValueError(f"Invalid ns_steps: {ns_steps!r} (must be an integer in 1..99, as torch.optim.Muon)")
        if len(ns_coefficients) != 3:
            raise ValueError(f"Invalid ns_coefficients: {ns_coefficients!r} (must be three numbers)")
        if adjust_lr_fn not in ADJUST_LR_FNS:
            raise ValueError(f"Invalid adjust_lr_fn: {adjust_lr_fn!r} (must be one of {ADJUST_LR_FNS})")
        self._muon_defaults = {
            "lr": lr, "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov,
            "ns_coefficients": tuple(ns_coefficients), "eps": eps, "ns_steps": ns_steps, "adjust_lr_fn": adjust_lr_fn,
        }  # fmt: skip
        self._adamw_defaults = {
            "lr": adamw_lr, "betas": tuple(adamw_betas), "eps": adamw_eps, "weight_decay": adamw_weight_decay
        }
        self._muon: torch.optim.Muon | None = None
        self._adamw: torch.optim.AdamW | None = None
        defaults = {**self._muon_defaults, **{f"adamw_{k}": v for k, v in self._adamw_defaults.items()}}
        super().__init__(params, defaults)  # calls add_param_group for each group

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; without `use_muon` it is split into its 2-D parameters (Muon) and the rest (AdamW)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        if "use_muon" in param_group:
            self._add({**param_group, "params": params, "use_muon": bool(param_group["use_muon"])})
            return
        matrices = [p for p in params if _tensor(p).ndim == 2]
        others = [p for p in params if _tensor(p).ndim != 2]
        for use_muon, chosen in ((True, matrices), (False, others)):
            if chosen:
                self._add({**param_group, "params": chosen, "use_muon": use_muon})

    def _add(self, group: dict[str, Any]) -> None:
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(_tensor(p)) in seen for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        if group["use_muon"]:
            bad = [tuple(_tensor(p).shape) for p in group["params"] if _tensor(p).ndim != 2]
            if bad:
                raise ValueError(f"a use_muon=True group holds parameters that are not 2-D: shapes {bad}")
        inner = self._muon if group["use_muon"] else self._adamw
        if inner is not None:
            inner.add_param_group(group)  # fills in that optimizer's defaults, in place
        elif group["use_muon"]:
            self._muon = inner = torch.optim.Muon([group], **self._muon_defaults)
        else:
            self._adamw = inner = torch.optim.AdamW([group], **self._adamw_defaults)
        inner.state = self.state  # one state for both: the base class's state_dict holds everything
        self.param_groups.append(group)  # the same dict the inner optimizer holds

    def _link(self) -> None:
        """Point the inner optimizers at this optimizer's groups and state (after load_state_dict replaced them)."""
        for inner, use_muon in ((self._muon, True), (self._adamw, False)):
            if inner is not None:
                inner.param_groups = [g for g in self.param_groups if g["use_muon"] == use_muon]
                inner.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = [g.get("use_muon") for g in state_dict["param_groups"]]
        if saved != [g["use_muon"] for g in self.param_groups]:
            raise ValueError("loaded state dict assigns the groups to Muon and AdamW differently")
        super().load_state_dict(state_dict)
        self._link()

    def __getstate__(self) -> dict[str, Any]:
        # The base class pickles only defaults, state and groups; the inner optimizers must travel too.
        return {**super().__getstate__(), "_muon": self._muon, "_adamw": self._adamw,
                "_muon_defaults": self._muon_defaults, "_adamw_defaults": self._adamw_defaults}  # fmt: skip

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """One step of both optimizers; `closure` (re-evaluates the loss) is called once, before them."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for inner in (self._muon, self._adamw):
            if inner is not None:
                inner.step()
        return loss
