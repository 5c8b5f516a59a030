"""The base update of parameters that tile one piece of memory, run on one tensor covering them.

A population of runs keeps each member's parameters as adjacent views of one buffer
(`optimlab.train.population_stacked`), and its critical-gradient optimizer holds one param group per member.
The groups that share a learning rate get one base-optimizer call (`CriticalOptimizer._update_many`), but
torch's multi-tensor kernels run on the CPU as one kernel per tensor, and Adam's step reads every tensor's
step count on the host: three members of a 3-layer MLP are 18 small kernels per operation. When the
parameters of such a call follow each other in one storage, `covering` gives one 1-D tensor over all of them;
the base optimizer's per-element state is kept the same way (each parameter's state a view of one block),
and the update runs once on the covering tensors.

Bit for bit the same: the base optimizers here (torch's SGD with momentum, Adam, AdamW, RMSprop) compute
every element from the same element of the parameter, the direction and the state, with scalars from the
group and the step count, and torch's CPU kernels round each element alike wherever it sits in a tensor
(tested against the call per tensor, float32 and float64).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def covering(tensors: Sequence[Tensor]) -> Tensor | None:
    """A 1-D tensor over the memory of `tensors`, or None unless they are contiguous, of one dtype and
    device, in one storage, and each starts where the one before it ends (list order)."""
    first = tensors[0]
    storage = first.untyped_storage()
    size = first.element_size()
    address = first.data_ptr()
    for tensor in tensors:
        if (tensor.dtype != first.dtype or tensor.device != first.device or not tensor.is_contiguous()
                or tensor.data_ptr() != address or tensor.untyped_storage().data_ptr() != storage.data_ptr()):
            return None
        address += tensor.numel() * size
    total = (address - first.data_ptr()) // size
    return first.new_empty(0).set_(storage, first.storage_offset(), (total,))


def split(block: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    """Views of the 1-D `block`, one per parameter in order, each of its parameter's shape."""
    views, offset = [], 0
    for p in params:
        views.append(block[offset : offset + p.numel()].view(p.shape))
        offset += p.numel()
    return views


def flat_cat(tensors: Sequence[Tensor]) -> Tensor:
    """`tensors` one after another in one new 1-D tensor."""
    return torch.cat([t.reshape(-1) for t in tensors])
