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
from optimlab.optim.critical.priority import priority_keys, resolve_synced, tensor_norms
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


@dataclass(frozen=True)
class MemoryJob:
    """One param group's share of a memory step (see `memory_directions` for the fields)."""

    states: list[dict[str, Any]]
    positions: list[int]
    grads: list[Tensor]
    offered: list[Tensor]
    options: MemoryStepOptions
    group_index: int


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
    job = MemoryJob(states, positions, grads, offered, options, group_index)
    return memory_directions_many([job], vectorized=vectorized, on_host=on_host)[0]


def memory_directions_many(jobs: list[MemoryJob], *, vectorized: bool, on_host: bool) -> list[list[Tensor]]:
    """`memory_directions` for several param groups at once: the directions of each job, in order.

    Every job computes exactly what it computes alone (its own keys, decisions and running sums: the
    groups share no arithmetic), but the element-wise work of all jobs runs as one `torch._foreach_*` call
    per operation, the default policy's decisions of all groups are one batched comparison and one host
    read, and the priorities decay in one call per distinct ``decay``. A population of runs, whose shared
    optimizer holds one param group per member, so pays the per-operation overhead once per step instead
    of once per member.
    """
    flat = _Flat(jobs)
    buffers = [
        CriticalBuffer.initialise(state, d, job.options.capacity, job.options.diagnostics)
        for job in jobs
        for state, d in zip(job.states, job.offered)
    ]
    was_empty = [b.offers == 0 for b in buffers]
    after = [k for k, job in enumerate(jobs) if job.options.offer == "after_aggregate"]
    before = [k for k, job in enumerate(jobs) if job.options.offer != "after_aggregate"]
    directions: list[list[Tensor]] = [[] for _ in jobs]
    for k, out in zip(after, _directions(jobs, after, flat, buffers, was_empty, vectorized, on_host)):
        directions[k] = out
    # The norms are taken after the aggregate, which has just read the gradients into the cache.
    keys = _keys(jobs, flat, buffers, vectorized)
    _offer(jobs, flat, buffers, keys, vectorized, on_host)
    for k, out in zip(before, _directions(jobs, before, flat, buffers, was_empty, vectorized, on_host)):
        directions[k] = out
    _finish(jobs, buffers, vectorized)
    return directions


class _Flat:
    """The jobs' tensors as one list: job k holds positions ``start[k] : start[k + 1]``."""

    def __init__(self, jobs: list[MemoryJob]) -> None:
        self.start = [0]
        for job in jobs:
            self.start.append(self.start[-1] + len(job.grads))
        self.grads = [g for job in jobs for g in job.grads]
        self.offered = [d for job in jobs for d in job.offered]

    def range(self, k: int) -> range:
        return range(self.start[k], self.start[k + 1])


def _keys(jobs: list[MemoryJob], flat: _Flat, buffers: list[CriticalBuffer], vectorized: bool) -> list[Tensor]:
    """Each tensor's priority key, per group as `priority_keys` computes it; the norms of all groups come
    from one `_foreach_norm` call (per tensor, the same kernel as a call per group)."""
    norms = None
    if vectorized and any(job.options.priority != "recency" for job in jobs):
        norms = tensor_norms(flat.grads, vectorized=True)
    keys: list[Tensor] = []
    for k, job in enumerate(jobs):
        span = flat.range(k)
        keys += priority_keys(
            job.grads,
            [buffers[i].offers for i in span],
            priority=job.options.priority,
            synced=job.options.synced,
            vectorized=vectorized,
            norms=None if norms is None else norms[span.start : span.stop],
        )
    return keys


def _directions(
    jobs: list[MemoryJob],
    which_jobs: list[int],
    flat: _Flat,
    buffers: list[CriticalBuffer],
    was_empty: list[bool],
    vectorized: bool,
    on_host: bool,
) -> list[list[Tensor]]:
    """The directions of the jobs `which_jobs`: the aggregates of their memories as they are now."""
    out: dict[int, Tensor] = {}
    # Tensors aggregated together: same aggregator, kappa and update (aggregate_foreach buckets the fill
    # counts itself).
    batches: dict[tuple[str, float, bool], list[int]] = {}
    selected: dict[int, Tensor] = {}
    for k in which_jobs:
        options = jobs[k].options
        which = selection(options.aggr)
        for i in flat.range(k):
            d, g = flat.offered[i], flat.grads[i]
            if was_empty[i]:  # a first step uses the plain gradient (copied: the base optimizer may write into it)
                out[i] = d.clone() if d is g else d
                continue
            if which is not None:
                selected[i] = _selected_item(buffers[i], which, on_host)
            batches.setdefault((options.aggr, options.kappa, options.update == "aggregate"), []).append(i)
    for (aggr, kappa, with_current), index in batches.items():
        chosen = [selected[i] for i in index] if selection(aggr) is not None else None
        d = [flat.offered[i] for i in index]
        totals = [buffers[i].total for i in index]
        filled = [buffers[i].filled for i in index]
        if vectorized:
            results = aggregate_foreach(d, totals, filled, chosen, aggr=aggr, kappa=kappa, with_current=with_current)
        else:
            results = [
                aggregate(
                    d[j],
                    totals[j],
                    filled[j],
                    None if chosen is None else chosen[j],
                    aggr=aggr,
                    kappa=kappa,
                    with_current=with_current,
                )
                for j in range(len(index))
            ]
        out.update(zip(index, results))
    return [[out[i] for i in flat.range(k)] for k in which_jobs]


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
        job = MemoryJob(states, positions, grads, offered(), options, group_index)
        was_empty = [n == 0 for n in filled]
        directions = _directions([job], [0], _Flat([job]), buffers, was_empty, vectorized=True, on_host=True)[0]
        _write_slots_foreach(buffers, writes, job.offered, keys)
    for buffer in buffers:
        buffer.count_offer()
    _finish([MemoryJob(states, positions, grads, grads, options, group_index)], buffers, vectorized=True)
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
    jobs: list[MemoryJob],
    flat: _Flat,
    buffers: list[CriticalBuffer],
    keys: list[Tensor],
    vectorized: bool,
    on_host: bool,
) -> None:
    """Offer every job's tensors to their memories: decide, then write the admitted ones."""
    writes: list[tuple[int, int]] = []  # (flat index, slot)
    on_device: list[Decision] = []
    koth = [k for k, job in enumerate(jobs) if job.options.sampling == "KotH"] if vectorized and on_host else []
    if koth:
        writes += _koth_decisions(koth, flat, buffers, keys)
    for k, job in enumerate(jobs):
        if k in koth:
            continue
        span = flat.range(k)
        own, device = _decisions(
            buffers[span.start : span.stop],
            job.offered,
            keys[span.start : span.stop],
            job.positions,
            job.options,
            job.group_index,
            vectorized,
            on_host,
        )
        writes += [(span.start + i, s) for i, s in own]
        on_device += [(span.start + i, slot, admit) for i, slot, admit in device]
    for i, slot, admit in on_device:
        buffers[i].write_slot_masked(slot, admit, flat.offered[i], keys[i])
    if vectorized:
        _write_slots_foreach(buffers, writes, flat.offered, keys)
    else:
        for i, s in writes:
            buffers[i].write_slot(s, flat.offered[i], keys[i])
    for buffer in buffers:
        buffer.count_offer()


def _koth_decisions(
    koth: list[int], flat: _Flat, buffers: list[CriticalBuffer], keys: list[Tensor]
) -> list[tuple[int, int]]:
    """The default policy ('KotH': replace the lowest priority if the key is larger) for the jobs `koth`, on
    the host: free slots first, then one comparison per kind of memory (device, dtype, capacity) over the
    full memories of every job, read once. The same minima and comparisons as `sampling.decide`."""
    writes = []
    full: dict[tuple[torch.device, torch.dtype, int], list[int]] = {}
    for k in koth:
        for i in flat.range(k):
            buffer = buffers[i]
            if buffer.is_full:
                full.setdefault((buffer.priority.device, buffer.priority.dtype, buffer.capacity), []).append(i)
            else:
                writes.append((i, buffer.filled))
    for index in full.values():
        admit, slot = decide(
            "KotH",
            keys=[keys[i] for i in index],
            priorities=[buffers[i].priority for i in index],
            offered=[],
            totals=[],
            critical_test=True,
            synced=True,
            generator_for=_no_draws,
            vectorized=True,
        )
        flags, slots = torch.stack((admit.to(slot.dtype), slot)).tolist()
        writes.extend((i, s) for i, a, s in zip(index, flags, slots) if a)
    return writes


def _no_draws(_: int) -> torch.Generator:
    raise AssertionError("the KotH policy draws nothing")


def _write_slots_foreach(
    buffers: list[CriticalBuffer], writes: list[tuple[int, int]], offered: list[Tensor], keys: list[Tensor]
) -> None:
    """`CriticalBuffer.write_slot` for many memories: one foreach call per operation."""
    if not writes:
        return
    slots = [buffers[i].slots[s] for i, s in writes]
    totals = [buffers[i].total for i, _ in writes]
    values = [offered[i] for i, _ in writes]
    replacing = [k for k, (i, _) in enumerate(writes) if buffers[i].is_full]
    if replacing:
        torch._foreach_sub_([totals[k] for k in replacing], [slots[k] for k in replacing])
    # Overwrite the slot right after reading it (still in cache), then finish the sum: (S - old) + d.
    torch._foreach_copy_(slots, values)
    torch._foreach_add_(totals, values)
    _record_admissions(buffers, writes, keys)


def _record_admissions(buffers: list[CriticalBuffer], writes: list[tuple[int, int]], keys: list[Tensor]) -> None:
    """The bookkeeping of the slot writes: each new slot's priority (one copy for all), and the diagnostics."""
    if not writes:
        return
    torch._foreach_copy_([buffers[i].priority[s] for i, s in writes], [keys[i] for i, _ in writes])
    for i, s in writes:
        buffer = buffers[i]
        if buffer.diagnostics:
            buffer.state["critical_admitted"].add_(1)
            buffer.state["critical_birth"][s] = buffer.offers


def _finish(jobs: list[MemoryJob], buffers: list[CriticalBuffer], vectorized: bool) -> None:
    """Decay every priority (one call per distinct ``decay`` when vectorized); refresh the sums when due."""
    start = 0
    by_decay: dict[float, list[Tensor]] = {}
    for job in jobs:
        options = job.options
        mine = buffers[start : start + len(job.grads)]
        start += len(job.grads)
        decay = None if options.priority == "recency" else options.decay
        if vectorized and decay is not None and decay != 1.0:
            by_decay.setdefault(decay, []).extend(b.priority for b in mine)
            decay = None
        for buffer in mine:
            buffer.finish_step(decay, options.refresh_every)
    for decay, priorities in by_decay.items():
        torch._foreach_mul_(priorities, decay)


_MASK = (1 << 64) - 1


def _generator(seed: int, group_index: int, position: int, offer: int) -> torch.Generator:
    """A CPU generator seeded from the draw's coordinates (a counter-based stream: no saved state)."""
    h = 0x9E3779B97F4A7C15
    for part in (seed, group_index, position, offer):
        h = ((h ^ (part & _MASK)) * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK
        h ^= h >> 31
    return torch.Generator().manual_seed(h & ((1 << 63) - 1))
