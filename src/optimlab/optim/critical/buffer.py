"""`CriticalBuffer`: the per-parameter memory of the top-C past gradients.

The memory of one parameter lives in that parameter's optimizer state (so it round-trips through
`state_dict` and `torch.load(weights_only=True)`) under these keys:

=======================  ======================================  ==========================================
key                      shape, dtype                            meaning
=======================  ======================================  ==========================================
``critical_buffer``      ``(topC, *p.shape)``, ``p.dtype``       the stored gradients, one per slot; an
                                                                 empty slot holds zeros
``critical_priority``    ``(topC,)``, float32 or ``p.dtype``     each slot's (decayed) priority; an empty
                                                                 slot has ``-inf``
``critical_sum``         ``p.shape``, ``p.dtype``                running sum of the slots, recomputed from
                                                                 the slots every ``refresh_every`` offers
``critical_offers``      ``int``                                 gradients offered so far
``critical_admitted``    ``()``, int64 (``diagnostics`` only)    gradients admitted so far
``critical_birth``       ``(topC,)``, int64 (``diagnostics``)    offer index at which each slot was written
=======================  ======================================  ==========================================

Slots fill in order 0, 1, ... while the memory is not full (every offered gradient is admitted then,
as in the original), so the first ``filled`` slots are the occupied ones and ``filled =
min(offers, topC)`` is known on the host without reading any tensor. Once full, a gradient replaces
one slot (the lowest-priority one under the default policy: exact top-C, no heap).

Priorities are float32 for parameters of lower precision (so that norms and offer counters stay exact),
else the parameter's dtype. `Optimizer.load_state_dict` casts floating state to the parameter's dtype;
the critical optimizers restore the saved dtypes afterwards (see `restore_exact_dtypes`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

BUFFER = "critical_buffer"
PRIORITY = "critical_priority"
SUM = "critical_sum"
OFFERS = "critical_offers"
ADMITTED = "critical_admitted"
BIRTH = "critical_birth"

#: State keys whose dtype must survive `Optimizer.load_state_dict` unchanged (it casts every tensor,
#: integer ones included, to the dtype of a floating-point parameter).
EXACT_DTYPE_KEYS = (PRIORITY, ADMITTED, BIRTH)


def priority_dtype(param: Tensor) -> torch.dtype:
    """float32 for half/bfloat16 parameters, else the parameter's own floating dtype."""
    return torch.promote_types(param.dtype, torch.float32)


class CriticalBuffer:
    """A view of one parameter's memory, stored in its optimizer state dict (holds no data itself)."""

    __slots__ = ("state",)

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    @staticmethod
    def initialise(state: dict[str, Any], param: Tensor, capacity: int, diagnostics: bool) -> CriticalBuffer:
        """Create an empty memory of `capacity` slots in `state` if it has none; return its view."""
        if BUFFER not in state:
            state[BUFFER] = torch.zeros((capacity, *param.shape), dtype=param.dtype, device=param.device)
            state[PRIORITY] = torch.full(
                (capacity,), float("-inf"), dtype=priority_dtype(param), device=param.device
            )
            state[SUM] = torch.zeros_like(param, memory_format=torch.contiguous_format)
            state[OFFERS] = 0
        if diagnostics and ADMITTED not in state:
            state[ADMITTED] = torch.zeros((), dtype=torch.int64, device=param.device)
            state[BIRTH] = torch.full((capacity,), -1, dtype=torch.int64, device=param.device)
        return CriticalBuffer(state)

    # --- read-only views -------------------------------------------------------------------------
    @property
    def slots(self) -> Tensor:
        return self.state[BUFFER]

    @property
    def priority(self) -> Tensor:
        return self.state[PRIORITY]

    @property
    def total(self) -> Tensor:
        return self.state[SUM]

    @property
    def offers(self) -> int:
        return self.state[OFFERS]

    @property
    def capacity(self) -> int:
        return self.state[BUFFER].shape[0]

    @property
    def filled(self) -> int:
        return min(self.state[OFFERS], self.capacity)

    @property
    def is_full(self) -> bool:
        return self.state[OFFERS] >= self.capacity

    @property
    def diagnostics(self) -> bool:
        return ADMITTED in self.state

    # --- selection (for the 'min' / 'median' / 'max' aggregators) -------------------------------
    def select(self, which: str) -> Tensor:
        """Index (0-dim int64 tensor) of the filled slot with the min / median / max priority.

        'median' is the item at position ``filled // 2`` in ascending priority order (the middle item
        for an odd count, the upper of the two middle items for an even count).
        """
        filled = self.priority[: self.filled]
        if which == "min":
            return filled.argmin()
        if which == "max":
            return filled.argmax()
        if which == "median":
            return filled.argsort()[self.filled // 2]
        raise ValueError(f"unknown selection {which!r}")

    # --- mutation ----------------------------------------------------------------------------------
    def write_slot(self, slot: int, value: Tensor, key: Tensor) -> None:
        """Admit `value` into `slot` (host-known index), keeping the running sum in step."""
        old = self.slots[slot]
        if self.is_full:  # a free slot holds zeros: nothing to subtract
            self.total.sub_(old)
        old.copy_(value)
        self.total.add_(value)
        self.priority[slot] = key
        if self.diagnostics:
            self.state[ADMITTED].add_(1)
            self.state[BIRTH][slot] = self.offers

    def write_slot_masked(self, slot: Tensor, admit: Tensor, value: Tensor, key: Tensor) -> None:
        """`write_slot` for a full memory without reading `slot` or `admit` on the host.

        `slot` (0-dim int64) and `admit` (0-dim bool) stay on the device; the slot is rewritten with
        either `value` or its old content, and the sum is computed exactly as `write_slot` would.
        """
        index = slot.reshape(1)
        old = self.slots.index_select(0, index).squeeze(0)
        self.slots.index_copy_(0, index, torch.where(admit, value, old).unsqueeze(0))
        self.total.copy_(torch.where(admit, self.total.sub(old).add_(value), self.total))
        old_key = self.priority.index_select(0, index)
        new_key = torch.where(admit, key.to(self.priority.dtype), old_key)
        self.priority.index_copy_(0, index, new_key)
        if self.diagnostics:
            self.state[ADMITTED].add_(admit.to(torch.int64))
            birth = self.state[BIRTH]
            offer = torch.full_like(birth[:1], self.offers)
            birth.index_copy_(0, index, torch.where(admit, offer, birth.index_select(0, index)))

    def count_offer(self) -> None:
        """Called once per offer, after the slot writes (so `filled` now includes the new gradient)."""
        self.state[OFFERS] += 1

    def finish_step(self, decay: float | None, refresh_every: int) -> None:
        """After a step: decay the priorities; refresh the running sum when due."""
        if decay is not None and decay != 1.0:
            self.priority.mul_(decay)
        if self.state[OFFERS] % refresh_every == 0:
            self.refresh()

    def refresh(self) -> None:
        """Recompute the running sum from the slots, discarding accumulated rounding drift."""
        torch.sum(self.slots, dim=0, out=self.total)


def restore_exact_dtypes(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
    """Put back the saved dtype of `EXACT_DTYPE_KEYS` after `Optimizer.load_state_dict` cast them."""
    saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for saved_id, param in zip(saved_ids, params, strict=True):
        saved = state_dict["state"].get(saved_id)
        if not saved:
            continue
        for key in EXACT_DTYPE_KEYS:
            if key in saved:
                optimizer.state[param][key] = saved[key].to(device=param.device, copy=True)
