"""MARTHE: online learning-rate tuning by forward-mode hypergradients (RTHO with a discount).

Donini, Franceschi, Majumder, Pontil, Frasconi, "MARTHE: Scheduling the Learning Rate Via Online
Hypergradients", IJCAI-PRICAI 2020 (arXiv:1910.08525); Franceschi et al., "Forward and Reverse
Gradient-Based Hyperparameter Optimization", ICML 2017 (RTHO).

One training iteration, `Marthe.step(train_loss, val_closure)`:

1. `g = d train_loss / dw` with its graph;
2. `H z` by one double-backward product (skipped when `A_t z` vanishes: a zero tangent, `mu = 0`,
   `first_order`), on the weights before the step;
3. `optimizer.step()` with `p.grad = g` (the unchanged training gradient);
4. the tangent `z = dw/dlr` and the optimizer-state tangents advance, `Z <- mu A_t Z + B_t`, exactly for
   torch's SGD / Adam / AdamW (see `optimlab.hyper.dynamics`);
5. every `val_every`-th step: `e = d val_closure() / dw` at the new weights, the hypergradient
   `h = e . z`, `lr <- clip(lr - hyper_lr * h, *lr_bounds)`, then the `mu` / `hyper_lr` heuristics of the
   chosen variant (`optimlab.hyper.heuristics`).

There is one learning rate per optimizer, as in the original: group `i` runs at `lr * ratio_i`, where the
ratios are the groups' lrs at construction relative to group 0 (all 1 in the usual single-lr case).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optimlab.hyper import heuristics
from optimlab.hyper.dynamics import Dynamics, _scale_, make_dynamics
from optimlab.validate import check, check_choice, check_number

log = logging.getLogger(__name__)

_STATE_VERSION = 1
_MAX_EVENTS = 100  # restart events kept in `events` (the `restarts` counter counts them all)
_LOGGED_RESTARTS = 10  # restarts logged one by one; then every 100th


@dataclass
class MartheState:
    """Marthe's scalar state, checkpointed field by field (`state_dict`); the tangents are tensors, beside it.

    Plain Python values only, so a checkpoint loads with ``torch.load(weights_only=True)``. The field names
    and order are the checkpoint keys of version 1, so older checkpoints load unchanged.
    """

    step: int = 0  # iterations done
    lr: float = 0.0  # the controlled lr (of param group 0; the others keep their ratio to it)
    hyper_lr: float = 0.0  # current hyper learning rate (halved at each restart, adapted by the heuristics)
    mu: float = 0.0  # current tangent discount (adapted when `adapt_mu`)
    c: float = 0.0  # AdaTune's exponent accumulator
    adapt_mu: bool = False  # mu < 0 was asked: mu follows the variant's heuristic
    h_prev: float = 0.0  # previous hypergradient (MARTHE-TF's heuristic)
    last_hypergradient: float = 0.0
    ratios: list[float] = field(default_factory=list)  # each param group's lr / group 0's lr, kept fixed
    z_zero: bool = True  # the tangent is exactly zero: skip the Hessian-vector product
    restarts: int = 0  # non-finite hypergradients met (each restarts the tangent)
    events: list[dict] = field(default_factory=list)  # the first restarts, for the run record

class Marthe:
    r"""Hypergradient learning-rate control around a torch SGD, Adam or AdamW optimizer.

    Args:
        optimizer: a `torch.optim.SGD`, `Adam` or `AdamW` (any momentum, dampening, Nesterov, weight decay,
            betas, eps, AMSGrad); `maximize=True` and other optimizers raise ValueError.
        hyper_lr: the hyper learning rate `beta` of `lr <- lr - beta * h`.
        mu: the tangent discount in [0, 1] (`1`: RTHO, `0`: HD-like one-step hypergradient); a negative
            value adapts it with the variant's rule, starting from 0.
        alpha: > 0 adapts `hyper_lr` with the variant's rule (0: fixed).
        first_order: use `z = B_t` (the one-step derivative) on every step, whatever `mu` is.
        lr_bounds: `(low, high)`; the lr is projected into it after every update (`high=None`: no cap).
        variant: `'adatune'` or `'marthe_tf'`, the published forms of the `mu` and `hyper_lr` rules.
        val_every: the validation gradient and lr update run every this many steps; the tangent advances
            on every step.
        tangent_clip: optional elementwise clamp of `H z` and of the validation gradient, as AdaTune's
            `grad_clipping`, but applied only inside the hypergradient computation (never to training
            gradients). None (the default) keeps the tangent exact.

    Attributes (plain Python values): `lr`, `mu`, `hyper_lr`, `last_hypergradient`, `steps`,
    `restarts` (tangent restarts after a non-finite hypergradient) and `events` (one dict per restart).

    Example::

        hyper = Marthe(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), hyper_lr=1e-3, mu=-1)
        for x, y in loader:
            hyper.step(loss_fn(model(x), y), lambda: loss_fn(model(xv), yv))
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        hyper_lr: float,
        mu: float = -1.0,
        alpha: float = 0.0,
        first_order: bool = False,
        lr_bounds: tuple[float, float | None] = (0.0, None),
        variant: str = "adatune",
        *,
        val_every: int = 1,
        tangent_clip: float | None = None,
    ) -> None:
        check_number("hyper_lr", hyper_lr, low=0)
        check_number("mu", mu, high=1)  # negative: adaptive
        check_number("alpha", alpha, low=0)
        check_choice("variant", variant, heuristics.VARIANTS)
        check_number("val_every", val_every, low=1, integer=True)
        if tangent_clip is not None:
            check_number("tangent_clip", tangent_clip, low=0, low_inclusive=False, finite=False)
        low, high = _check_bounds(lr_bounds)

        self.optimizer = optimizer
        self.first_order = bool(first_order)
        self.alpha = float(alpha)
        self.variant = variant
        self.val_every = val_every
        self.tangent_clip = tangent_clip
        self.lr_bounds = (low, high)

        groups = optimizer.param_groups
        self._dynamics: list[Dynamics] = [make_dynamics(optimizer, g) for g in groups]
        self._group_params: list[list[Tensor]] = [[p for p in g["params"] if p.requires_grad] for g in groups]
        self._params: list[Tensor] = [p for ps in self._group_params for p in ps]
        if not self._params:
            raise ValueError("the optimizer has no parameters that require gradients")
        lrs = [float(g["lr"]) for g in groups]
        if lrs[0] > 0.0:
            ratios = [lr / lrs[0] for lr in lrs]
        elif all(lr == 0.0 for lr in lrs):
            ratios = [1.0 for _ in lrs]
        else:
            raise ValueError(f"param group 0 has lr 0 while others do not ({lrs}): no lr ratio to keep")

        # Tangents dw/dlr and the optimizer-state tangents, per group, aligned with `_group_params`.
        self._z = [[torch.zeros_like(p) for p in ps] for ps in self._group_params]
        self._aux = [
            {name: [torch.zeros_like(p) for p in ps] for name in dyn.aux_names}
            for dyn, ps in zip(self._dynamics, self._group_params)
        ]
        adapt_mu = mu < 0.0
        self._state = MartheState(
            lr=_project(lrs[0], low, high),
            hyper_lr=float(hyper_lr),
            mu=0.0 if adapt_mu else float(mu),
            adapt_mu=adapt_mu,
            ratios=ratios,
        )
        self._pending: tuple | None = None  # captures between before_ and after_optimizer_step (not state)
        self._set_lr(self._state.lr)

    # ----------------------------------------------------------------------------------------------------
    # Public state

    @property
    def lr(self) -> float:
        return self._state.lr

    @property
    def mu(self) -> float:
        return self._state.mu

    @property
    def hyper_lr(self) -> float:
        return self._state.hyper_lr

    @property
    def last_hypergradient(self) -> float:
        return self._state.last_hypergradient

    @property
    def restarts(self) -> int:
        """Non-finite hypergradients met so far (each restarted the tangent and halved the hyper lr)."""
        return self._state.restarts

    @property
    def events(self) -> list[dict]:
        return self._state.events

    @property
    def steps(self) -> int:
        return self._state.step

    @property
    def validates_next_step(self) -> bool:
        """Whether the next `step` will call `val_closure`."""
        return (self._state.step + 1) % self.val_every == 0

    @property
    def params(self) -> list[Tensor]:
        """The trainable parameters, in optimizer order (the order of `tangent()` and of gradients)."""
        return self._params

    def tangent(self) -> list[Tensor]:
        """The current tangent dw/dlr, one tensor per trainable parameter (in optimizer order)."""
        return [z for zs in self._z for z in zs]

    # ----------------------------------------------------------------------------------------------------
    # The iteration

    @property
    def needs_graph(self) -> bool:
        """Whether the next step differentiates the training gradient (`H z`): its graph must be kept."""
        return not self._state.z_zero and not self.first_order and self._state.mu != 0.0

    def step(self, loss: Tensor, val_closure: Callable[[], Tensor] | None = None) -> None:
        """One training iteration: replaces `loss.backward(); optimizer.step()`. See the module docstring.

        `loss` is the training loss with its graph; `val_closure()` returns a validation loss with its graph
        at the updated weights (called only on validation steps, see `validates_next_step`).
        """
        if self.validates_next_step and val_closure is None:
            raise ValueError("this step updates the lr and needs val_closure (validation loss with graph)")
        grads = torch.autograd.grad(loss, self._params, create_graph=self.needs_graph, allow_unused=True)
        self.before_optimizer_step(list(grads))
        self.optimizer.step()
        self.after_optimizer_step(val_closure)

    def before_optimizer_step(self, grads: list[Tensor | None]) -> None:
        """Steps 2-3 up to the optimizer step: `H z` from `grads` (with their graph when `needs_graph`),
        `p.grad` set to the detached gradient, and the optimizer state the tangent update needs captured.

        For training loops that take the backward and the optimizer step themselves:
        `before_optimizer_step(grads)`, `optimizer.step()`, `after_optimizer_step(val_closure)`.
        """
        mu = 0.0 if self.first_order else self._state.mu
        use_hvp = self.needs_graph
        params = self._params
        hz: list[Tensor | None] = [None] * len(params)
        if use_hvp:
            hz = self._hessian_vector_products(grads)
        for i, (p, g) in enumerate(zip(params, grads)):
            g = None if g is None else g.detach()
            grads[i] = g
            p.grad = g

        # Pre-step captures; the tangent update runs from the post-step state.
        state = self.optimizer.state
        plans = []
        offset = 0
        for dyn, ps in zip(self._dynamics, self._group_params):
            gs = grads[offset : offset + len(ps)]
            active = [i for i, g in enumerate(gs) if g is not None]
            act_params = [ps[i] for i in active]
            act_grads = [gs[i] for i in active]
            pre = None
            if active:
                with torch.no_grad():
                    pre = dyn.prepare(act_params, act_grads, [state.get(p, {}) for p in act_params])
            plans.append((offset, active, act_params, act_grads, pre))
            offset += len(ps)
        self._pending = (mu, use_hvp, grads, hz, plans)

    def after_optimizer_step(self, val_closure: Callable[[], Tensor] | None = None) -> None:
        """Steps 4-5 after the optimizer step: advance the tangent; on validation steps, update the lr."""
        validate = self.validates_next_step
        if validate and val_closure is None:
            raise ValueError("this step updates the lr and needs val_closure (validation loss with graph)")
        mu, use_hvp, grads, hz, plans = self._pending
        self._pending = None
        with torch.no_grad():
            directions = self._advance(mu, use_hvp, grads, hz, plans)
        self._state.step += 1

        if validate:
            self._hyper_step(val_closure, grads, directions)

    def _advance(self, mu, use_hvp, grads, hz, plans):
        """Advance the tangents of every group after the optimizer step; returns the direction terms."""
        state = self.optimizer.state
        directions = []
        any_active = False
        for gi, (dyn, plan) in enumerate(zip(self._dynamics, plans)):
            offset, active, act_params, act_grads, pre = plan
            zs, aux = self._z[gi], self._aux[gi]
            if len(active) < len(zs) and not self._state.z_zero:
                # Parameters without a gradient keep w and their state (A = I, B = 0): Z <- mu Z.
                is_active = set(active)
                idle = [t[i] for t in [zs, *aux.values()] for i in range(len(zs)) if i not in is_active]
                if mu == 0.0:
                    torch._foreach_zero_(idle)
                else:
                    _scale_(idle, mu)
            if not active:
                directions.append(None)
                continue
            any_active = True
            z_act = [zs[i] for i in active]
            aux_act = {name: [tensors[i] for i in active] for name, tensors in aux.items()}
            hz_act = None
            if use_hvp:
                hz_act = [hz[offset + i] if hz[offset + i] is not None else torch.zeros_like(zs[i]) for i in active]
            lr = self._state.lr * self._state.ratios[gi]
            terms = dyn.advance(
                pre, act_params, act_grads, [state.get(p) for p in act_params], z_act, aux_act, hz_act,
                lr=lr, ratio=self._state.ratios[gi], mu=mu,
            )
            for k, i in enumerate(active):
                zs[i] = z_act[k]
                for name in aux:
                    aux[name][i] = aux_act[name][k]
            directions.append((active, terms))
        self._state.z_zero = self._state.z_zero and not any_active
        return directions

    def _hessian_vector_products(self, grads: list[Tensor | None]) -> list[Tensor | None]:
        """`H z` for every parameter (None where it is zero), one double-backward pass."""
        flat_z = [z for zs in self._z for z in zs]
        outputs, vectors = [], []
        for g, z in zip(grads, flat_z):
            if g is not None and g.requires_grad:
                outputs.append(g)
                vectors.append(z)
        if not outputs:
            return [None] * len(grads)
        hz = list(torch.autograd.grad(outputs, self._params, grad_outputs=vectors, allow_unused=True))
        self._clip(hz)
        return hz

    def _clip(self, tensors: list[Tensor | None]) -> None:
        present = [t for t in tensors if t is not None]
        if self.tangent_clip is not None and present:
            torch._foreach_clamp_min_(present, -self.tangent_clip)
            torch._foreach_clamp_max_(present, self.tangent_clip)

    def _hyper_step(self, val_closure: Callable[[], Tensor], grads: list[Tensor | None], directions) -> None:
        val_loss = val_closure()
        e = list(torch.autograd.grad(val_loss, self._params, allow_unused=True))
        self._clip(e)
        state = self._state
        flat_z = [z for zs in self._z for z in zs]
        dots = [_dot(e, flat_z)]
        need_g = state.adapt_mu and self.variant == "adatune"
        need_direction = state.adapt_mu and self.variant == "marthe_tf"
        if need_g:
            dots.append(_dot(e, grads))
        if need_direction:
            dots.append(self._dot_direction(e, directions))
        values = torch.stack([d.to(torch.float64) for d in dots]).tolist()
        h = values[0]
        lr_new = _project(state.lr - state.hyper_lr * h, *self.lr_bounds) if math.isfinite(h) else math.nan
        if not math.isfinite(lr_new):
            self._restart(h)
            return
        state.last_hypergradient = h
        if self.variant == "adatune":
            state.hyper_lr, state.mu, state.c = heuristics.adatune_update(
                hyper_lr=state.hyper_lr, mu=state.mu, c=state.c, h=h, lr_new=lr_new,
                e_dot_g=values[1] if need_g else 0.0, alpha=self.alpha, adapt_mu=state.adapt_mu,
            )
        else:
            state.hyper_lr, state.mu = heuristics.marthe_tf_update(
                hyper_lr=state.hyper_lr, mu=state.mu, h=h, h_prev=state.h_prev,
                e_dot_direction=values[1] if need_direction else 0.0, alpha=self.alpha,
                adapt_mu=state.adapt_mu,
            )
        state.h_prev = h
        self._set_lr(lr_new)

    def _dot_direction(self, e: list[Tensor | None], directions) -> Tensor:
        """`e . B_t`, with `B_t = -ratio * sum(scale * terms)` per group."""
        total = []
        offset = 0
        for gi, (ps, entry) in enumerate(zip(self._group_params, directions)):
            if entry is not None:
                active, terms = entry
                e_act = [e[offset + i] for i in active]
                for tensors, scale in terms:
                    total.append(_dot(e_act, tensors).to(torch.float64) * (-self._state.ratios[gi] * scale))
            offset += len(ps)
        return torch.stack(total).sum() if total else torch.zeros((), dtype=torch.float64)

    def _restart(self, h: float) -> None:
        """A non-finite hypergradient: zero the tangent, halve the hyper lr, keep the lr."""
        state = self._state
        for zs, aux in zip(self._z, self._aux):
            for tensors in [zs, *aux.values()]:
                torch._foreach_zero_(tensors)
        state.z_zero = True
        state.hyper_lr *= 0.5
        state.h_prev = 0.0
        state.last_hypergradient = 0.0
        if state.adapt_mu:
            state.mu, state.c = 0.0, 0.0
        state.restarts += 1
        if len(state.events) < _MAX_EVENTS:
            state.events.append(
                {"step": state.step, "event": "nonfinite_hypergradient", "value": repr(h), "hyper_lr": state.hyper_lr}
            )
        if state.restarts <= _LOGGED_RESTARTS or state.restarts % 100 == 0:
            log.warning(
                "step %d: non-finite hypergradient (%s); tangent restarted, hyper_lr halved to %g, lr kept at %g "
                "(restart %d%s)", state.step, h, state.hyper_lr, state.lr, state.restarts,
                "; only every 100th is logged from now on" if state.restarts == _LOGGED_RESTARTS else "",
            )

    def _set_lr(self, lr: float) -> None:
        self._state.lr = float(lr)
        for group, ratio in zip(self.optimizer.param_groups, self._state.ratios):
            value = self._state.lr * ratio
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(value)
            else:
                group["lr"] = value

    # ----------------------------------------------------------------------------------------------------
    # Checkpointing (tensors and plain Python values only: loads with torch.load(weights_only=True))

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            **dataclasses.asdict(self._state),
            "tangent": [[z.clone() for z in zs] for zs in self._z],
            "aux": [{name: [t.clone() for t in ts] for name, ts in aux.items()} for aux in self._aux],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported Marthe state version {state.get('version')!r}")
        tangent, aux = state["tangent"], state["aux"]
        if [len(zs) for zs in tangent] != [len(ps) for ps in self._group_params]:
            raise ValueError("the saved tangent does not match the optimizer's parameters")
        for gi, ps in enumerate(self._group_params):
            if set(aux[gi]) != set(self._aux[gi]):
                raise ValueError(f"param group {gi}: saved state tangents {sorted(aux[gi])}, "
                                 f"expected {sorted(self._aux[gi])}")
            for z, p in zip(tangent[gi], ps):
                if z.shape != p.shape:
                    raise ValueError(f"param group {gi}: tangent of shape {tuple(z.shape)} for a parameter "
                                     f"of shape {tuple(p.shape)}")
            self._z[gi] = [z.to(device=p.device, dtype=p.dtype, copy=True) for z, p in zip(tangent[gi], ps)]
            self._aux[gi] = {
                name: [t.to(device=p.device, dtype=p.dtype, copy=True) for t, p in zip(ts, ps)]
                for name, ts in aux[gi].items()
            }
        # A field added later is absent from older checkpoints and keeps its default.
        saved = {f.name: copy.deepcopy(state[f.name]) for f in dataclasses.fields(MartheState) if f.name in state}
        self._state = MartheState(**saved)
        self._set_lr(self._state.lr)


def rtho(optimizer: torch.optim.Optimizer, hyper_lr: float, **kwargs: Any) -> Marthe:
    """RTHO (Franceschi et al. 2017): MARTHE with `mu = 1`, the exact real-time forward-mode hypergradient."""
    if "mu" in kwargs:
        raise ValueError("rtho fixes mu = 1; use Marthe(...) for another mu")
    return Marthe(optimizer, hyper_lr, mu=1.0, **kwargs)


def _dot(xs: list[Tensor | None], ys: list[Tensor | None]) -> Tensor:
    """sum_i <x_i, y_i> over the pairs where both are present, as a 0-d tensor (no host sync)."""
    dots = [torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(xs, ys) if x is not None and y is not None]
    if not dots:
        return torch.zeros((), dtype=torch.float64)
    if len({d.dtype for d in dots}) > 1:
        dots = [d.to(torch.float64) for d in dots]
    return torch.stack(dots).sum()


def _project(lr: float, low: float, high: float | None) -> float:
    if not math.isfinite(lr):
        return lr
    lr = max(lr, low)
    return lr if high is None else min(lr, high)


def _check_bounds(bounds) -> tuple[float, float | None]:
    check(isinstance(bounds, (tuple, list)) and len(bounds) == 2, "lr_bounds", bounds, "must be a pair (low, high)")
    low, high = bounds
    low = 0.0 if low is None else low
    check_number("lr_bounds low", low, low=0)
    if high is not None:
        check_number("lr_bounds high", high, low=low, finite=False)
        high = float(high)
    return float(low), high
