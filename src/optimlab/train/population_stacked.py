"""A population's trainable parameters in one buffer per dtype, and param groups stepped on blocks of it.

**Buffers.** Member r's trainable parameters are row r of a (members, columns) tensor of their dtype, one
parameter after another (`FlatParameters`); each member's `nn.Parameter`s are views of its row and the
batched forward reads (members, ...) views of the columns of each parameter name. A gradient buffer of the
same layout takes each step's gradients (one copy per name), so that a member's gradients are contiguous
views of its row, as a stand-alone backward makes them.

**Stacked groups.** A param group of the population's optimizer that holds several members' parameters
(members with equal settings) is, for the optimizers listed in `ELEMENTWISE`, stepped on blocks of the
buffers: the rows of its members (adjacent: the population sorts its members by their settings) times
the columns of the group's parameters, one tensor per dtype (`Block`). torch's multi-tensor step then runs
each of its operations as one kernel on one tensor where it ran one per member and parameter (48 for 8
members of a 3-layer MLP), and its Python loop over the group's parameters shrinks alike. The optimizer's
state for a block is one tensor of the block's shape per per-element state tensor (Adam's moments), so each
member's state is views of its row of those, and one shared scalar per scalar (Adam's step count, equal
across the block's members, which step together).

This computes what the members' own tensors compute, bit for bit: the optimizers of `ELEMENTWISE`
compute every element from the same elements of the parameter, its gradient and its state, with scalars
from the group and the step count, and torch's CPU kernels round each element alike wherever it sits in a
tensor (tested for each of them, float32 and float64, against one tensor per member and parameter). Other
optimizers (torch's Adafactor factors its second moment by rows and columns of each parameter; optimlab's
and third-party ones) keep one tensor per member and parameter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

# torch.optim's optimizers whose step computes each element of a parameter from that element of the
# parameter, its gradient and its state only (with scalars from the group and the step count).
ELEMENTWISE: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adamax, torch.optim.NAdam,
    torch.optim.RAdam, torch.optim.Adagrad, torch.optim.Adadelta, torch.optim.RMSprop, torch.optim.Rprop,
    torch.optim.ASGD,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Columns:
    """Where one parameter name lives in the buffer of its dtype."""

    dtype: torch.dtype
    start: int
    stop: int
    shape: torch.Size


class FlatParameters:
    """The members' trainable parameters, one (members, columns) buffer per dtype, and a gradient buffer
    of the same layout. `names` gives the column order (the population puts the names of one param group
    next to each other)."""

    def __init__(self, models: Sequence[nn.Module], names: Sequence[str], device: torch.device):
        named = [dict(model.named_parameters()) for model in models]
        self.members = len(models)
        self.columns: dict[str, Columns] = {}
        widths: dict[torch.dtype, int] = {}
        for name in names:
            param = named[0][name]
            start = widths.get(param.dtype, 0)
            widths[param.dtype] = start + param.numel()
            self.columns[name] = Columns(param.dtype, start, start + param.numel(), param.shape)
        self.buffers = {dtype: torch.empty(self.members, width, dtype=dtype, device=device)
                        for dtype, width in widths.items()}
        self.grads = {dtype: torch.zeros_like(buffer) for dtype, buffer in self.buffers.items()}
        self._views = {name: self._view(self.buffers, name) for name in names}
        self._grad_views = {name: self._view(self.grads, name) for name in names}
        with torch.no_grad():
            for name in names:
                self.view(name).copy_(torch.stack([n[name].detach() for n in named]))

    def view(self, name: str) -> Tensor:
        """The members' `name` as one (members, *shape) view of the buffer."""
        return self._views[name]

    def grad_view(self, name: str) -> Tensor:
        return self._grad_views[name]

    def _view(self, buffers: dict[torch.dtype, Tensor], name: str) -> Tensor:
        columns = self.columns[name]
        return buffers[columns.dtype][:, columns.start : columns.stop].view(self.members, *columns.shape)

    def copy_grads(self, grads: dict[str, Tensor | None]) -> None:
        """This step's gradients into the gradient buffer (a name without a gradient keeps its old values)."""
        with torch.no_grad():
            for name, grad in grads.items():
                if grad is not None:
                    self.grad_view(name).copy_(grad)

    def block(self, rows: range, names: Sequence[str]) -> list[Block] | None:
        """The blocks of `rows` x the columns of `names`, one per dtype; None unless each dtype's columns
        are adjacent (and so one rectangle of its buffer)."""
        blocks = []
        for dtype in dict.fromkeys(self.columns[name].dtype for name in names):
            spans = sorted((self.columns[n].start, self.columns[n].stop, n) for n in names if self.columns[n].dtype == dtype)
            if any(stop != next_start for (_, stop, _), (next_start, _, _) in zip(spans, spans[1:])):
                return None
            first, last = spans[0][0], spans[-1][1]
            tensor = self.buffers[dtype][rows.start : rows.stop, first:last]
            grad = self.grads[dtype][rows.start : rows.stop, first:last]
            blocks.append(Block(tensor, grad, {name: (start - first, stop - first) for start, stop, name in spans}))
        return blocks


@dataclasses.dataclass
class Block:
    """One rectangle of a buffer stepped as one tensor: rows of members x the columns of some names."""

    tensor: Tensor
    grad: Tensor
    spans: dict[str, tuple[int, int]]  # name -> its columns within the block
    members: list[tuple[Tensor, int, str]] = dataclasses.field(default_factory=list)  # (parameter, row, name)


def member_view(value: Any, block: Block, row: int, name: str, shape: torch.Size) -> Any:
    """A member's piece of one of a block's state values: its row's columns of a per-element tensor; a
    scalar or other value as it is (shared by the block's members)."""
    if isinstance(value, Tensor) and value.shape == block.tensor.shape:
        start, stop = block.spans[name]
        return value[row, start:stop].view(shape)
    return value


def stack_state(state: dict, blocks: list[Block]) -> bool:
    """Move the members' optimizer state (keyed by their parameters) into block state (keyed by the
    blocks): per-element tensors assembled into tensors of the block's shape, scalars kept once. False,
    with nothing changed, when the members' states cannot be one block's: some members with state and
    others without, different keys or scalar values, a tensor of another shape."""
    built = []
    for block in blocks:
        values = [state.get(param) or None for param, _, _ in block.members]  # {}: no state yet, as absent
        if all(value is None for value in values):
            built.append(None)
            continue
        if any(value is None for value in values) or len({tuple(value) for value in values}) != 1:
            return False
        merged = {}
        for key in values[0]:
            pieces = [value[key] for value in values]
            if all(isinstance(p, Tensor) and p.shape == param.shape and p.dtype == pieces[0].dtype
                   for p, (param, _, _) in zip(pieces, block.members)):
                stacked = torch.empty(block.tensor.shape, dtype=pieces[0].dtype, device=pieces[0].device)
                for piece, (param, row, name) in zip(pieces, block.members):
                    member_view(stacked, block, row, name, param.shape).copy_(piece)
                merged[key] = stacked
            elif all(_equal(p, pieces[0]) for p in pieces):
                merged[key] = pieces[0].clone() if isinstance(pieces[0], Tensor) else pieces[0]
            else:
                return False
        built.append(merged)
    for block, merged in zip(blocks, built):
        for param, _, _ in block.members:
            state.pop(param, None)
        if merged is not None:
            state[block.tensor] = merged
    return True


def unstack_state(state: dict, blocks: list[Block]) -> None:
    """The inverse of `stack_state`: each member's state as views of its rows of the block state, with its
    own copy of every scalar (the members step apart from now on)."""
    for block in blocks:
        merged = state.pop(block.tensor, None)
        if merged is None:
            continue
        for param, row, name in block.members:
            state[param] = {key: _own(member_view(value, block, row, name, param.shape), value, block)
                            for key, value in merged.items()}


def _own(piece: Any, value: Any, block: Block) -> Any:
    if isinstance(value, Tensor) and value.shape != block.tensor.shape:
        return value.clone()
    return piece


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return False
    return bool(a == b)


__all__ = ["ELEMENTWISE", "Block", "Columns", "FlatParameters", "member_view", "stack_state", "unstack_state"]
