"""One memory step for one parameter group: offer the gradients, return the aggregated directions.

Order (the original's, with its bugs fixed):

1. the priority key of each gradient, from the raw gradient (`priority.py`);
2. the offered tensor ``d`` (the raw gradient, or with L2 weight decay already added when
   ``weight_decay_mode='before_buffer'``; the optimizer class decides and passes it in);
3. the direction from the memory as it was *before* the offer (`aggregate.py`); a parameter whose
   memory is still empty (its first step) gets plain ``d``;
4. the offer: a free slot takes ``d``; a full memory asks the admission policy (`sampling.py`);
5. every priority decays by ``decay``; the running sum is refreshed every ``refresh_every`` offers.

``offer='before_aggregate'`` swaps 3 and 4 (the original's ``*_double`` ablation, where the current
gradient can count twice); ``update='buffer_only'`` drops the current gradient's term from the
direction (``SGD_C_Only``).

Two implementations, tested equal in float64: a plain loop over tensors and a vectorized one (one
`torch._foreach_*` call per operation, one batched admission decision per group). Neither reads a
tensor on the host per parameter: on CPU the group's admission flags are read once (a host read
costs nothing there, and it lets a rejected gradient skip its writes); on an accelerator they stay on
the device and the slot writes are masked (`CriticalBuffer.write_slot_masked`).

`fused_memory_step` is the host-side variant for ``fused=True``: it decides first, and when every tensor
(or none) is admitted it hands the aggregate, the base update and the slot writes to one compiled pass
(`fused.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from optimlab.optim.critical.aggregate import (
    LINEAR,
    aggregate,
    aggregate_foreach,
    linear_weights,
    resolve_aggr,
    selection,
)
from optimlab.optim.critical.buffer import CriticalBuffer
from optimlab.optim.critical.priority import priority_keys, resolve_synced
from optimlab.optim.critical.sampling import decide, resolve_sampling


@dataclass(frozen=True)
class MemoryStepOptions:
    """The memory's hyperparameters as one step uses them (aliases resolved), read from a param group every
    step so that they can be scheduled. Their constructor defaults are `base.MemoryOptions`."""

    capacity: int
    decay: float
    kappa: float
    aggr: str
    sampling: str
    critical_test: bool
    synced: str
    priority: str
    update: str
    offer: str
    refresh_every: int
    diagnostics: bool
    seed: int

    @classmethod
    def from_group(cls, group: dict[str, Any]) -> MemoryStepOptions:
        return cls(
            capacity=group["topC"],
            decay=group["decay"],
            kappa=group["kappa"],
            aggr=resolve_aggr(group["aggr"]),
            sampling=resolve_sampling(group["sampling"]),
            critical_test=group["critical_test"],
            synced=resolve_synced(group["synced"]),
            priority=group["priority"],
            update=group["update"],
            offer=group["offer"],
            refresh_every=group["refresh_every"],
            diagnostics=group["diagnostics"],
            seed=group["seed"],
        )


def memory_directions(
    states: list[dict[str, Any]],
    positions: list[int],
    grads: list[Tensor],
    offered: list[Tensor],
    options: MemoryStepOptions,
    *,
    group_index: int,
    vectorized: bool,
    on_host: bool,
) -> list[Tensor]:
    """Offer `offered` to the memories in `states`; return the direction for each tensor.

    Args:
        states: the optimizer state dict of each parameter (memories are created lazily in them).
        positions: each parameter's index in its param group (seeds the sampling draws).
        grads: the raw gradients (priority keys; never modified).
        offered: the tensors to aggregate and store (`grads` or gradients with L2 decay added).
        options: the group's memory hyperparameters.
        vectorized: use `torch._foreach_*` and batched decisions instead of a loop over tensors.
        on_host: read the admission decisions on the host (CPU) or keep them on the device.
    """
    buffers = [
        CriticalBuffer.initialise(state, d, options.capacity, options.diagnostics)
        for state, d in zip(states, offered)
    ]
    offers = [b.offers for b in buffers]
    was_empty = [n == 0 for n in offers]

    def keys() -> list[Tensor]:
        return priority_keys(grads, offers, priority=options.priority, synced=options.synced, vectorized=vectorized)

    if options.offer == "after_aggregate":
        directions = _directions(buffers, grads, offered, was_empty, options, vectorized, on_host)
        # The norms are taken after the aggregate, which has just read the gradients into the cache.
        _offer(buffers, offered, keys(), positions, options, group_index, vectorized, on_host)
    else:
        _offer(buffers, offered, keys(), positions, options, group_index, vectorized, on_host)
        directions = _directions(buffers, grads, offered, was_empty, options, vectorized, on_host)
    _finish(buffers, options, vectorized)
    return directions


#: Called by `fused_memory_step` when every tensor or none is admitted, with each tensor's running sum,
#: the slot its gradient goes to (an empty list when none is admitted) and its aggregator weights
#: ``(w_d, w_S)``: it must apply the whole update and write the offered gradients into the slots,
#: keeping the sums in step (``S += d - slot; slot = d``).
FusedWrite = Callable[[list[Tensor], list[Tensor], list[tuple[float, float]]], None]


def fusable(options: MemoryStepOptions) -> bool:
    """Whether a step with these options can run through `fused_memory_step`."""
    return (
        options.aggr in LINEAR
        and options.update == "aggregate"
        and options.offer == "after_aggregate"
        and options.sampling in ("KotH", "random", "proportional")  # decisions that never read the tensors
    )


def fused_memory_step(
    states: list[dict[str, Any]],
    positions: list[int],
    grads: list[Tensor],
    offered: Callable[[], list[Tensor]],
    options: MemoryStepOptions,
    *,
    group_index: int,
    fused_write: FusedWrite,
) -> list[Tensor] | None:
    """`memory_directions` for a fused optimizer on the host (CPU), where the decisions come first.

    If every tensor is admitted, or none, `fused_write` does the aggregate, the update and the slot
    writes in one pass and None is returned. Otherwise (some admitted, some not) the directions are
    returned for the base optimizer and the admitted gradients are written here, as `memory_directions`
    does; `offered()` gives the tensors to store (only called then: the fused pass forms them itself).
    Requires `fusable(options)`.
    """
    buffers = [
        CriticalBuffer.initialise(state, g, options.capacity, options.diagnostics) for state, g in zip(states, grads)
    ]
    filled = [b.filled for b in buffers]
    keys = priority_keys(
        grads, [b.offers for b in buffers], priority=options.priority, synced=options.synced, vectorized=True
    )
    # The admitted policies never read the offered tensors, so the raw gradients stand in for them.
    writes, _ = _decisions(buffers, grads, keys, positions, options, group_index, vectorized=True, on_host=True)
    directions = None
    if len(writes) in (0, len(buffers)):
        slot_of = dict(writes)
        fused_write(
            [b.total for b in buffers],
            [b.slots[slot_of[i]] for i, b in enumerate(buffers)] if writes else [],
            [linear_weights(options.aggr, options.kappa, n) for n in filled],
        )
        _record_admissions(buffers, writes, keys)
    else:
        stored = offered()
        was_empty = [n == 0 for n in filled]
        directions = _directions(buffers, grads, stored, was_empty, options, vectorized=True, on_host=True)
        _write_slots_foreach(buffers, writes, stored, keys)
    for buffer in buffers:
        buffer.count_offer()
    _finish(buffers, options, vectorized=True)
    return directions


def _directions(
    buffers: list[CriticalBuffer],
    grads: list[Tensor],
    offered: list[Tensor],
    was_empty: list[bool],
    options: MemoryStepOptions,
    vectorized: bool,
    on_host: bool,
) -> list[Tensor]:
    # A first step uses the plain gradient (copied: the base optimizer may write into it).
    directions = [(d.clone() if d is g else d) if empty else d for d, g, empty in zip(offered, grads, was_empty)]
    index = [i for i, empty in enumerate(was_empty) if not empty]
    if not index:
        return directions
    which = selection(options.aggr)
    selected = None
    if which is not None:
        selected = [_selected_item(buffers[i], which, on_host) for i in index]
    with_current = options.update == "aggregate"
    d = [offered[i] for i in index]
    totals = [buffers[i].total for i in index]
    filled = [buffers[i].filled for i in index]
    if vectorized:
        out = aggregate_foreach(
            d, totals, filled, selected, aggr=options.aggr, kappa=options.kappa, with_current=with_current
        )
    else:
        out = [
            aggregate(
                d[j],
                totals[j],
                filled[j],
                None if selected is None else selected[j],
                aggr=options.aggr,
                kappa=options.kappa,
                with_current=with_current,
            )
            for j in range(len(index))
        ]
    for i, direction in zip(index, out):
        directions[i] = direction
    return directions


def _selected_item(buffer: CriticalBuffer, which: str, on_host: bool) -> Tensor:
    slot = buffer.select(which)
    if on_host:
        return buffer.slots[int(slot)]
    return buffer.slots.index_select(0, slot.reshape(1)).squeeze(0)


Decision = tuple[int, Tensor, Tensor]  # (memory index, slot, admit) kept on the device


def _decisions(
    buffers: list[CriticalBuffer],
    offered: list[Tensor],
    keys: list[Tensor],
    positions: list[int],
    options: MemoryStepOptions,
    group_index: int,
    vectorized: bool,
    on_host: bool,
) -> tuple[list[tuple[int, int]], list[Decision]]:
    """Who is admitted where: host-known (memory, slot) writes, and device-side decisions (not on_host)."""
    writes = [(i, buffers[i].filled) for i, b in enumerate(buffers) if not b.is_full]  # free slots
    on_device: list[Decision] = []
    full = [i for i, b in enumerate(buffers) if b.is_full]
    by_device: dict[torch.device, list[int]] = {}
    for i in full:
        by_device.setdefault(buffers[i].priority.device, []).append(i)
    for index in by_device.values():

        def generator_for(j: int, index: list[int] = index) -> torch.Generator:
            i = index[0] if j < 0 else index[j]
            position = -1 if j < 0 else positions[i]
            return _generator(options.seed, group_index, position, buffers[i].offers)

        admit, slot = decide(
            options.sampling,
            keys=[keys[i] for i in index],
            priorities=[buffers[i].priority for i in index],
            offered=[offered[i] for i in index],
            totals=[buffers[i].total for i in index],
            critical_test=options.critical_test,
            synced=options.synced != "per_tensor",
            generator_for=generator_for,
            vectorized=vectorized,
        )
        if on_host:  # one read of the group's decisions
            flags, slots = torch.stack((admit.to(slot.dtype), slot)).tolist()
            writes.extend((i, s) for i, a, s in zip(index, flags, slots) if a)
        else:
            on_device.extend((i, slot[j], admit[j]) for j, i in enumerate(index))
    return writes, on_device


def _offer(
    buffers: list[CriticalBuffer],
    offered: list[Tensor],
    keys: list[Tensor],
    positions: list[int],
    options: MemoryStepOptions,
    group_index: int,
    vectorized: bool,
    on_host: bool,
) -> None:
    writes, on_device = _decisions(buffers, offered, keys, positions, options, group_index, vectorized, on_host)
    for i, slot, admit in on_device:
        buffers[i].write_slot_masked(slot, admit, offered[i], keys[i])
    if vectorized:
        _write_slots_foreach(buffers, writes, offered, keys)
    else:
        for i, s in writes:
            buffers[i].write_slot(s, offered[i], keys[i])
    for buffer in buffers:
        buffer.count_offer()


def _write_slots_foreach(
    buffers: list[CriticalBuffer], writes: list[tuple[int, int]], offered: list[Tensor], keys: list[Tensor]
) -> None:
    """`CriticalBuffer.write_slot` for many memories: one foreach call per operation."""
    if not writes:
        return
    replacing = [(i, s) for i, s in writes if buffers[i].is_full]
    if replacing:
        torch._foreach_sub_([buffers[i].total for i, _ in replacing], [buffers[i].slots[s] for i, s in replacing])
    # Overwrite the slot right after reading it (still in cache), then finish the sum: (S - old) + d.
    torch._foreach_copy_([buffers[i].slots[s] for i, s in writes], [offered[i] for i, _ in writes])
    torch._foreach_add_([buffers[i].total for i, _ in writes], [offered[i] for i, _ in writes])
    _record_admissions(buffers, writes, keys)


def _record_admissions(buffers: list[CriticalBuffer], writes: list[tuple[int, int]], keys: list[Tensor]) -> None:
    """The bookkeeping of the slot writes: each new slot's priority, and the diagnostics."""
    for i, s in writes:
        buffer = buffers[i]
        buffer.priority[s] = keys[i]
        if buffer.diagnostics:
            buffer.state["critical_admitted"].add_(1)
            buffer.state["critical_birth"][s] = buffer.offers


def _finish(buffers: list[CriticalBuffer], options: MemoryStepOptions, vectorized: bool) -> None:
    decay = None if options.priority == "recency" else options.decay
    if vectorized and decay is not None and decay != 1.0:
        torch._foreach_mul_([b.priority for b in buffers], decay)
        decay = None
    for buffer in buffers:
        buffer.finish_step(decay, options.refresh_every)


_MASK = (1 << 64) - 1


def _generator(seed: int, group_index: int, position: int, offer: int) -> torch.Generator:
    """A CPU generator seeded from the draw's coordinates (a counter-based stream: no saved state)."""
    h = 0x9E3779B97F4A7C15
    for part in (seed, group_index, position, offer):
        h = ((h ^ (part & _MASK)) * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK
        h ^= h >> 31
    return torch.Generator().manual_seed(h & ((1 << 63) - 1))
