"""Recurrent state carried from one training batch to the next (truncated backpropagation through time).

A language model trained on a contiguous stream reads the stream in windows; the hidden state at the end of
window `j` is the initial state of window `j + 1` (gradients stop at the window boundary: the state is
detached). The state is keyed by the window it continues, not by a batch row, so it is right whatever the
batch layout, under microbatching (each piece reads and writes only its rows) and with any sampler: a row
whose predecessor was not in the previous batch starts from zeros.

Reads see the state written by the previous step only: writes go to a pending table that `commit()` (called
once per step, before the backward) makes current. That keeps a microbatched step identical to a whole one.
Both tables are part of the checkpoint (`state_dict`), so a resumed run continues bit-identically.
"""

from __future__ import annotations

import torch
from torch import Tensor


class CarriedState:
    """A table key -> tuple of state tensors whose dim 1 is the batch (as `nn.LSTM`'s (h, c))."""

    def __init__(self) -> None:
        self.keys = torch.zeros(0, dtype=torch.int64)
        self.values: tuple[Tensor, ...] = ()
        self._pending: list[tuple[Tensor, tuple[Tensor, ...]]] = []

    def read(self, keys: Tensor, zeros: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """The state stored under each key (rows without one, or with key < 0, get `zeros`' rows)."""
        if not len(self.keys):
            return zeros
        match = keys[:, None] == self.keys.to(keys.device)[None, :]
        found = match.any(dim=1) & (keys >= 0)
        where = match.to(torch.int8).argmax(dim=1)
        return tuple(
            torch.where(found[None, :, None], stored.to(zero.device, zero.dtype)[:, where], zero)
            for stored, zero in zip(self.values, zeros)
        )

    def write(self, keys: Tensor, values: tuple[Tensor, ...]) -> None:
        """Store (detached) `values` under `keys` for the next step; rows with key < 0 are not stored."""
        keep = keys >= 0
        self._pending.append((keys[keep].detach(), tuple(v.detach()[:, keep] for v in values)))

    def commit(self) -> None:
        """The writes since the last commit become the table (the last write of a key wins)."""
        self.keys, self.values = _merge(self._pending)
        self._pending = []

    def clear(self) -> None:
        self.keys, self.values, self._pending = torch.zeros(0, dtype=torch.int64), (), []

    def state_dict(self) -> dict:
        pending_keys, pending_values = _merge(self._pending)
        return {
            "keys": self.keys.cpu(), "values": [v.cpu() for v in self.values],
            "pending_keys": pending_keys.cpu(), "pending_values": [v.cpu() for v in pending_values],
        }  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.keys, self.values = state["keys"], tuple(state["values"])
        pending = tuple(state["pending_values"])
        self._pending = [(state["pending_keys"], pending)] if len(state["pending_keys"]) else []


def _merge(writes: list[tuple[Tensor, tuple[Tensor, ...]]]) -> tuple[Tensor, tuple[Tensor, ...]]:
    writes = [(k, v) for k, v in writes if len(k)]
    if not writes:
        return torch.zeros(0, dtype=torch.int64), ()
    keys = torch.cat([k for k, _ in writes])
    values = tuple(torch.cat(parts, dim=1) for parts in zip(*(v for _, v in writes)))
    unique, inverse = torch.unique(keys, return_inverse=True)
    order = torch.arange(len(keys), device=keys.device)
    last = torch.full((len(unique),), -1, dtype=torch.int64, device=keys.device).scatter_reduce(
        0, inverse, order, "amax"
    )
    return unique, tuple(v[:, last] for v in values)
