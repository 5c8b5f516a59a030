"""`CriticalOptimizer`: what SGD_C, Adam_C, AdamW_C and RMSprop_C share.

The class validates the memory's hyperparameters, runs the memory (`memory.py`) on each group's
gradients and hands the aggregated directions to the subclass's `_update`, which calls torch's own
functional optimizer (`torch.optim.sgd.sgd`, `adam.adam`, `rmsprop.rmsprop`). So the base math is
torch's, and ``kappa=0`` (which skips the memory entirely) is bit-identical to the torch.optim optimizer.
With ``fused=True`` on CPU, a subclass's `_fused_write` may instead do the aggregate, its update and the
memory writes in one compiled pass (`fused.py`).

Weight decay placement, ``weight_decay_mode``:

- ``'before_buffer'``: L2 added to the gradient before it is aggregated and stored (SGD_C's default,
  as the original; under ``aggr='sum'`` the L2 term then counts about twice);
- ``'after_aggregate'``: L2 added to the aggregated direction, the memory holds raw gradients (Adam_C
  and RMSprop_C's default, as the original);
- ``'decoupled'``: the parameters shrink by ``lr * weight_decay`` before the update (AdamW_C's default).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from optimlab.optim.critical.aggregate import resolve_aggr
from optimlab.optim.critical.buffer import ADMITTED, BIRTH, BUFFER, OFFERS, restore_exact_dtypes
from optimlab.optim.critical.coalesce import covering, flat_cat, split
from optimlab.optim.critical.memory import (
    FusedWrite,
    MemoryJob,
    MemoryStepOptions,
    fusable,
    fused_memory_step,
    memory_directions_many,
)
from optimlab.optim.critical.priority import PRIORITIES, resolve_synced
from optimlab.optim.critical.sampling import resolve_sampling
from optimlab.validate import check, check_choice, check_flag, check_number

UPDATES = ("aggregate", "buffer_only")
OFFER_ORDERS = ("after_aggregate", "before_aggregate")
WEIGHT_DECAY_MODES = ("before_buffer", "after_aggregate", "decoupled")


@dataclass(frozen=True)
class MemoryOptions:
    """The memory's arguments and their defaults, declared once for SGD_C, Adam_C, AdamW_C and RMSprop_C.

    Each class's signature takes its defaults from `MEMORY` (tested). Two memory-related defaults are the
    original's per class and so are not here: ``aggr`` ('sum' for SGD_C, 'mean' for the others) and
    ``weight_decay_mode`` (see the module docstring).
    """

    kappa: float = 1.0
    decay: float = 0.7
    topC: int = 10  # noqa: N815 -- the original's argument name
    sampling: str | None = "KotH"
    critical_test: bool = True
    synced: bool | str = True
    # The options below are not the original's (keyword-only in every class).
    priority: str = "norm"
    update: str = "aggregate"
    offer: str = "after_aggregate"
    refresh_every: int = 100
    diagnostics: bool = False
    seed: int = 0
    foreach: bool | None = None


MEMORY = MemoryOptions()

#: Defaults of the options that the original does not have, filled into param groups of older pickles.
EXTRA_DEFAULTS: dict[str, Any] = {
    key: getattr(MEMORY, key) for key in ("priority", "update", "offer", "refresh_every", "diagnostics", "seed",
                                          "foreach")
}  # fmt: skip


def memory_defaults(
    *,
    lr: Any,
    kappa: float,
    decay: float,
    topC: int,  # noqa: N803 -- the original's argument name
    aggr: str,
    sampling: str | None,
    critical_test: bool,
    synced: bool | str,
    weight_decay: float,
    weight_decay_mode: str,
    priority: str,
    update: str,
    offer: str,
    refresh_every: int,
    diagnostics: bool,
    seed: int,
    foreach: bool | None,
) -> dict[str, Any]:
    """Validate the shared hyperparameters (ValueError naming the bad one) and return them as a dict."""
    check_number("lr", lr, low=0)
    check_number("kappa", kappa, low=0)
    check_number("decay", decay, low=0, high=1, low_inclusive=False)
    check_number("topC", topC, low=1, integer=True)
    resolve_aggr(aggr)
    resolve_sampling(sampling)
    check_flag("critical_test", critical_test)
    resolve_synced(synced)
    check_number("weight_decay", weight_decay, low=0)
    check_choice("weight_decay_mode", weight_decay_mode, WEIGHT_DECAY_MODES)
    check_choice("priority", priority, PRIORITIES)
    check_choice("update", update, UPDATES)
    check_choice("offer", offer, OFFER_ORDERS)
    check_number("refresh_every", refresh_every, low=1, integer=True)
    check_flag("diagnostics", diagnostics)
    check_number("seed", seed, integer=True)
    check_flag("foreach", foreach, allow_none=True)
    return {
        "lr": lr,
        "kappa": kappa,
        "decay": decay,
        "topC": topC,
        "aggr": aggr,
        "sampling": sampling,
        "critical_test": critical_test,
        "synced": synced,
        "weight_decay": weight_decay,
        "weight_decay_mode": weight_decay_mode,
        "priority": priority,
        "update": update,
        "offer": offer,
        "refresh_every": refresh_every,
        "diagnostics": diagnostics,
        "seed": seed,
        "foreach": foreach,
    }


def check_fused(fused: Any, foreach: Any) -> None:
    check_flag("fused", fused, allow_none=True)
    check(not (fused and foreach), "fused", fused, "cannot be combined with foreach=True")


def tensor_step(state: dict[str, Any] | None, p: Tensor, fused: bool) -> None:
    """A `step` saved as a Python number (state dicts of older torch versions) becomes the 0-dim tensor the
    step functions expect, as torch.optim.Adam's and RMSprop's `__setstate__` convert it."""
    if state and "step" in state and not torch.is_tensor(state["step"]):
        dtype = torch.float64 if torch.get_default_dtype() == torch.float64 and not fused else torch.float32
        state["step"] = torch.tensor(float(state["step"]), dtype=dtype, device=p.device if fused else None)


class CriticalOptimizer(torch.optim.Optimizer, abc.ABC):
    """Base class: the memory and the step skeleton. Subclasses implement `_update` only.

    Memory arguments (shared by all critical-gradient optimizers; see docs/critical_gradients.md):
        kappa: weight of the memory in the aggregate; 0 turns the memory off and gives the base
            optimizer exactly.
        decay: every stored priority is multiplied by it after each step, in (0, 1].
        topC: memory size (number of stored gradients per parameter tensor), >= 1.
        aggr: 'sum', 'mid', 'mean', 'min', 'median', 'max', 'min-mean', 'median-mean', 'max-mean'
            (aliases 'add_mean', 'half_add_mean', 'mean_with_current'); see `aggregate.py`.
        sampling: admission policy once the memory is full: 'KotH' (None means 'KotH'), 'random',
            'proportional', 'mean_diversity', 'cos_diversity', 'cos_similarity'.
        critical_test: a gradient must beat the lowest priority before the sampling policy applies.
            The memory is the exact top-C either way under 'KotH'.
        synced: True / 'sum_of_norms' (one key per group: the sum of per-tensor norms, the original's
            meaning), 'global_l2' (one key per group: the true L2 norm), False / 'per_tensor'.
        priority: 'norm' (default), 'recency' (FIFO window ablation), 'inverse_norm' (bottom-C ablation).
        update: 'aggregate' (default) or 'buffer_only' (the current gradient's term dropped).
        offer: 'after_aggregate' (default: aggregate from the memory before the offer) or
            'before_aggregate' (offer first: the current gradient can count twice).
        weight_decay_mode: 'before_buffer', 'after_aggregate' or 'decoupled'.
        refresh_every: recompute the running sum from the stored gradients every this many offers.
        diagnostics: track admissions and slot ages (read them with `critical_stats()`).
        seed: seeds the random draws of the 'random', 'proportional' and diversity policies.
        foreach: None or True: vectorized memory (and torch's default / foreach base kernels);
            False: plain for-loops everywhere.
    """

    #: Where admission decisions are read: None = on the host for CPU tensors, on the device otherwise.
    #: Tests set False to run the device (masked-write) path on CPU.
    decisions_on_host: bool | None = None

    @abc.abstractmethod
    def _update(
        self, group: dict[str, Any], params: list[Tensor], directions: list[Tensor], l2: float, decoupled: float
    ) -> None:
        """Apply the base optimizer to `directions` (`l2`: L2 coefficient, `decoupled`: decoupled one).

        `params` may span several groups whose base settings are equal (`_update_many`); `group` is then a
        copy of the first one's dict with ``foreach=True``, so it is read here, never written."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in EXTRA_DEFAULTS.items():
                group.setdefault(key, value)
            for p in group["params"]:
                tensor_step(self.state.get(p), p, bool(group.get("fused")))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        restore_exact_dtypes(self, state_dict)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; `closure` re-evaluates the model and returns the loss.

        The groups' memories step together (`memory_directions_many`: each group computes what it would
        alone, with one call per operation for all of them), and groups with equal base settings share one
        call of the base optimizer (`_update_many`), so that an optimizer holding many groups (a population
        of runs, one group per member) does not pay the per-operation cost once per group."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        updates: list[Update] = []
        jobs: dict[tuple[bool, bool], list[tuple[MemoryJob, Update]]] = {}
        for group_index, group in enumerate(self.param_groups):
            positions = [k for k, p in enumerate(group["params"]) if p.grad is not None]
            if not positions:
                continue
            params = [group["params"][k] for k in positions]
            grads = [p.grad for p in params]
            for p, g in zip(params, grads):
                if g.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                if torch.is_complex(p):
                    raise RuntimeError(f"{type(self).__name__} does not support complex parameters")
            l2_before, l2_after, decoupled = split_weight_decay(group)
            if group["kappa"] == 0:  # no memory at all: exactly the base optimizer
                updates.append(Update(group, params, grads, l2_before + l2_after, decoupled))
                continue
            vectorized = group["foreach"] is not False
            on_host = self.decisions_on_host
            if on_host is None:
                on_host = all(p.device.type == "cpu" for p in params)
            options = MemoryStepOptions.from_group(group)
            states = [self.state[p] for p in params]
            if group.get("fused") and on_host and vectorized and fusable(options) and _one_cpu_dtype(params + grads):
                fused_write = self._fused_write(group, params, grads)
                if fused_write is not None:
                    directions = fused_memory_step(
                        states,
                        positions,
                        grads,
                        lambda: _offered(grads, params, l2_before, vectorized),
                        options,
                        group_index=group_index,
                        fused_write=fused_write,
                    )
                    if directions is not None:  # else the fused pass has updated the parameters
                        updates.append(Update(group, params, directions, l2_after, decoupled))
                    continue
            job = MemoryJob(states, positions, grads, _offered(grads, params, l2_before, vectorized), options,
                            group_index)
            jobs.setdefault((vectorized, on_host), []).append((job, Update(group, params, [], l2_after, decoupled)))
        for (vectorized, on_host), pairs in jobs.items():
            found = memory_directions_many([job for job, _ in pairs], vectorized=vectorized, on_host=on_host)
            for (_, update), directions in zip(pairs, found):
                updates.append(update._replace(directions=directions))
        self._update_many(updates)
        return loss

    def _update_many(self, updates: list[Update]) -> None:
        """Apply the base optimizer for every group of this step. Groups whose base settings are equal (every
        setting but the memory's; the members of a population that share a learning rate) form one call with
        torch's multi-tensor kernels, which on the CPU run the very per-tensor kernels of torch's single-tensor
        path: the same arithmetic, without a Python loop per tensor."""
        batches: dict[Any, list[Update]] = {}
        for update in updates:
            key = _base_key(update)
            batches.setdefault(key if key is not None else id(update), []).append(update)
        for batch in batches.values():
            first = batch[0]
            if first.group["foreach"] is False or first.group.get("fused"):
                for update in batch:
                    self._update(update.group, update.params, update.directions, update.l2, update.decoupled)
                continue
            group = {**first.group, "foreach": True} if len(batch) > 1 else first.group
            params = [p for update in batch for p in update.params]
            directions = [d for update in batch for d in update.directions]
            if not self._update_coalesced(group, params, directions, first.l2, first.decoupled):
                self._update(group, params, directions, first.l2, first.decoupled)

    def _base_state(self, group: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """The keys of the base optimizer's state for `group`: (per-element tensors, step counters), or
        None when `_update` is not to run on tensors covering several parameters (`_update_coalesced`)."""
        return None

    def _update_coalesced(
        self, group: dict[str, Any], params: list[Tensor], directions: list[Tensor], l2: float, decoupled: float
    ) -> bool:
        """`_update` run once on a tensor covering `params`, when they tile one piece of memory (a
        population's members, `coalesce.py`): each parameter's per-element state is kept as a view of one
        block, and its step counters equal to the others'. False, with nothing done, when `params` do not
        tile, their state is not all there yet (torch creates it per tensor at their first step) or their
        step counts differ."""
        layout = self._base_state(group)
        if layout is None or len(params) < 2:
            return False
        per_element, counters = layout
        plans: dict[int, _CoalescedPlan] = self.__dict__.setdefault("_coalesced", {})
        plan = plans.get(id(params[0]))
        if plan is not None and not plan.covers(params):
            plan = None
        if plan is not None and plan.region is None:  # these parameters do not tile: the usual update
            return False
        states = [self.state[p] for p in params]
        if plan is None or not plan.holds(states, per_element):
            if any(key not in state or state[key] is None for state in states for key in per_element + counters):
                return False
            region = covering(params)
            blocks = {} if region is None else {key: self._state_block(states, params, key) for key in per_element}
            plan = plans[id(params[0])] = _CoalescedPlan(params, [p.data_ptr() for p in params], region, blocks,
                                                         {key: [state[key] for state in states] for key in per_element})
            if region is None:
                return False
        steps = [[state[key] for state in states] for key in counters]
        if any(len({float(step) for step in values}) != 1 for values in steps):
            return False
        self.state[plan.region] = {**plan.blocks, **{key: values[0] for key, values in zip(counters, steps)}}
        try:
            self._update(group, [plan.region], [flat_cat(directions)], l2, decoupled)
        finally:
            del self.state[plan.region]
        for values in steps:  # the first counter was the block's: the others follow it
            torch._foreach_copy_(values[1:], [values[0]] * (len(values) - 1))
        return True

    def _state_block(self, states: list[dict[str, Any]], params: list[Tensor], key: str) -> Tensor:
        """One 1-D tensor holding every parameter's `state[key]`, which become views of it."""
        values = [state[key] for state in states]
        block = covering(values)
        if block is None:  # separate tensors (the first steps, a loaded checkpoint): copied into one block
            block = flat_cat(values)
            for state, view in zip(states, split(block, params)):
                state[key] = view
        return block

    def _fused_write(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> FusedWrite | None:
        """A one-pass update for a step in which every tensor or none is admitted (see `FusedWrite`), or
        None: the memory and `_update` run separately (the default). Asked only with ``fused=True``, for a
        fusable step on CPU tensors of one dtype (SGD_C and Adam_C implement it)."""
        return None

    def stats(self) -> dict[str, float]:
        """The measurement channel (the trainer logs these as `optim/<key>`): `critical_stats()` with
        ``diagnostics=True``, nothing otherwise (so that training without diagnostics pays nothing)."""
        return self.critical_stats() if any(g["diagnostics"] for g in self.param_groups) else {}

    def critical_stats(self) -> dict[str, float]:
        """Memory statistics over all parameters (admission rate, slot age, stored norms).

        Admission counts and slot ages need ``diagnostics=True``; stored norms are computed here, on
        demand, so that they cost nothing during training.
        """
        offered = admitted = 0
        ages: list[Tensor] = []
        norms: list[Tensor] = []
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p, {})
                if BUFFER not in state:
                    continue
                filled = min(state[OFFERS], state[BUFFER].shape[0])
                norms.append(torch.linalg.vector_norm(state[BUFFER][:filled].flatten(1), dim=1).double().cpu())
                if ADMITTED in state:
                    offered += state[OFFERS]
                    admitted += int(state[ADMITTED])
                    ages.append((state[OFFERS] - state[BIRTH][:filled]).double().cpu())
        stats: dict[str, float] = {}
        if norms and torch.cat(norms).numel():
            stats["mean_buffered_norm"] = float(torch.cat(norms).mean())
        if offered:
            stats["admission_rate"] = admitted / offered
        if ages and torch.cat(ages).numel():
            all_ages = torch.cat(ages)
            stats["mean_buffer_age"] = float(all_ages.mean())
            stats["max_buffer_age"] = float(all_ages.max())
        return stats


@dataclass
class _CoalescedPlan:
    """One batch of parameters, the tensor covering them (None: they do not tile), the blocks their
    per-element state values are views of, and those views (`_update_coalesced`)."""

    params: list[Tensor]
    addresses: list[int]
    region: Tensor | None
    blocks: dict[str, Tensor]
    values: dict[str, list[Tensor]]

    def covers(self, params: list[Tensor]) -> bool:
        """Whether this plan is for `params`: the same parameters, their data where it was."""
        return (len(params) == len(self.params) and all(a is b for a, b in zip(params, self.params))
                and [p.data_ptr() for p in params] == self.addresses)

    def holds(self, states: list[dict[str, Any]], keys: tuple[str, ...]) -> bool:
        """Whether the parameters' state values are still the block's views (a loaded checkpoint replaces them)."""
        return all(state.get(key) is value for key in keys for state, value in zip(states, self.values[key]))


class Update(NamedTuple):
    """The base optimizer's work for one group in one step (`CriticalOptimizer._update`'s arguments)."""

    group: dict[str, Any]
    params: list[Tensor]
    directions: list[Tensor]
    l2: Any
    decoupled: Any


def _base_key(update: Update) -> tuple | None:
    """What `_update` reads of a group, as a hashable key (None when a setting is not hashable): equal keys
    give equal base arithmetic. The memory's settings, which `_update` does not read, are left out."""
    items = [(key, value) for key, value in update.group.items() if key not in _MEMORY_KEYS]
    try:
        key = (tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in items)), update.l2, update.decoupled)
        hash(key)
    except TypeError:
        return None
    return key


#: Param group keys the base update does not read (the memory's, and the parameters themselves).
_MEMORY_KEYS = frozenset(
    ("params", "kappa", "decay", "topC", "aggr", "sampling", "critical_test", "synced", "priority", "update", "offer",
     "refresh_every", "diagnostics", "seed", "weight_decay", "weight_decay_mode")
)  # fmt: skip


def split_weight_decay(group: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The group's weight decay as (L2 before the memory, L2 after the aggregate, decoupled): one is nonzero."""
    weight_decay, mode = group["weight_decay"], group["weight_decay_mode"]
    return tuple(weight_decay if mode == m else 0.0 for m in WEIGHT_DECAY_MODES)


def _one_cpu_dtype(tensors: list[Tensor]) -> bool:
    """Whether the fused kernels apply: every tensor on the CPU, all in one dtype."""
    return all(t.device.type == "cpu" for t in tensors) and len({t.dtype for t in tensors}) == 1


def _offered(grads: list[Tensor], params: list[Tensor], l2_before: float, vectorized: bool) -> list[Tensor]:
    """What the memory stores and aggregates: the gradients, with L2 decay added when placed before it."""
    if l2_before == 0:
        return grads
    if vectorized:
        return list(torch._foreach_add(grads, params, alpha=l2_before))
    return [g.add(p, alpha=l2_before) for g, p in zip(grads, params)]
