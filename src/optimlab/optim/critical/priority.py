"""Priority keys: the number each offered gradient is ranked by.

Keys are computed from the raw gradients (before weight decay), as in the original.

``priority`` selects what is ranked:

- ``'norm'`` (default): the gradient's L2 norm; the memory keeps the largest (decayed) norms.
- ``'recency'``: the offer count, so the memory is a moving window of the ``topC`` most recent
  gradients (the original's ``*_FIFO`` ablation). Priorities do not decay in this mode.
- ``'inverse_norm'``: 1 / norm, so the memory keeps the smallest norms (the ``*_C_bottom`` ablation).

``synced`` selects whose norm:

- ``True`` / ``'sum_of_norms'`` (default, the original's ``synced=True``): one key per parameter group,
  the *sum* of the per-tensor L2 norms; every tensor of the group makes the same decision.
- ``'global_l2'``: one key per group, the true L2 norm of all the group's gradients together.
- ``False`` / ``'per_tensor'``: each tensor ranks by its own norm and decides on its own.
"""

from __future__ import annotations

import torch
from torch import Tensor

PRIORITIES = ("norm", "recency", "inverse_norm")
SYNC_MODES = ("sum_of_norms", "global_l2", "per_tensor")
_SYNC_ALIASES = {True: "sum_of_norms", False: "per_tensor"}


def resolve_synced(synced: bool | str) -> str:
    """The canonical sync mode for a `synced` argument; ValueError naming the value if invalid."""
    if isinstance(synced, bool):
        return _SYNC_ALIASES[synced]
    if synced in SYNC_MODES:
        return synced
    raise ValueError(f"invalid synced value {synced!r}: use True, False or one of {', '.join(SYNC_MODES)}")


def tensor_norms(grads: list[Tensor], vectorized: bool) -> list[Tensor]:
    """The L2 norm of each tensor, as 0-dim tensors on its device."""
    if vectorized:
        return list(torch._foreach_norm(grads))
    return [torch.linalg.vector_norm(g) for g in grads]


def priority_keys(
    grads: list[Tensor],
    offers: list[int],
    *,
    priority: str,
    synced: str,
    vectorized: bool,
    norms: list[Tensor] | None = None,
) -> list[Tensor]:
    """One 0-dim key per gradient (shared by the whole group when `synced` is not 'per_tensor').

    `norms`: the gradients' `tensor_norms`, when the caller has computed them already."""
    if priority == "recency":
        return [torch.tensor(float(n + 1), dtype=torch.float64, device=g.device) for g, n in zip(grads, offers)]
    if norms is None:
        norms = tensor_norms(grads, vectorized)
    if synced == "per_tensor":
        keys = norms
    else:
        if len({n.device for n in norms}) > 1:
            norms = [n.to(grads[0].device) for n in norms]
        stacked = torch.stack(norms)
        key = stacked.sum() if synced == "sum_of_norms" else torch.linalg.vector_norm(stacked)
        keys = [key] * len(grads)
    if priority == "inverse_norm":
        keys = [torch.reciprocal(k) for k in keys]
    return keys
