"""Stratified mini-batches over a partition of the training examples, and their unbiasing weights.

With M non-empty clusters of sizes N_k (N examples), a batch of B slots is allocated to clusters and each
slot draws a member of its cluster; the estimate is `(1/B) sum_i w_i g_i`:

- `equal` allocation (Faghri et al. 2020): the clusters, in a fresh random order, take the slots in turn, so
  each gets floor(B/M) or ceil(B/M) slots with expected count B/M; weights `w_i = M N_k / N`.
- `proportional` allocation: systematic sampling with a random offset gives cluster k an expected
  B N_k / N slots (the counts differ from it by less than one); weights 1.

Either way `E[estimate] = sum_k (N_k / N) mean_k(g) = full gradient`. Within a cluster the members are taken
from a fresh random permutation (cycling when a cluster has fewer members than slots), so all members are
exchangeable. The estimate's variance is `(M/B) sum_k (N_k/N)^2 var_k` (equal, B a multiple of M) or
`(1/B) sum_k (N_k/N) var_k` (proportional): minimised by a size-weighted, respectively plain, k-means
partition in gradient space.
"""

from __future__ import annotations

import torch
from torch import Tensor


def stratified_batch(
    labels: Tensor, clusters: int, batch_size: int, generator: torch.Generator, allocation: str = "equal"
) -> tuple[Tensor, Tensor]:
    """(indices (B,), weights (B,)) of one stratified batch; `labels` (N,) in [0, clusters)."""
    sizes = torch.bincount(labels, minlength=clusters)
    nonempty = (sizes > 0).nonzero().squeeze(1)
    m, n = len(nonempty), len(labels)
    slots = torch.arange(batch_size)
    if allocation == "equal":
        order = nonempty[torch.randperm(m, generator=generator)]
        slot_cluster = order[slots % m]
        weights = m * sizes[slot_cluster].double() / n
    elif allocation == "proportional":
        bounds = torch.cumsum(sizes[nonempty].double() * batch_size / n, 0)
        offset = torch.rand((), generator=generator, dtype=torch.float64)
        position = torch.searchsorted(bounds, offset + slots.double(), right=True).clamp_max(m - 1)
        slot_cluster = nonempty[position]
        weights = torch.ones(batch_size, dtype=torch.float64)
    else:
        raise ValueError(f"allocation must be 'equal' or 'proportional', got {allocation!r}")
    # members grouped by cluster, in a random order within each cluster
    keys = torch.rand(n, generator=generator, dtype=torch.float64)
    members = torch.argsort(labels.double() + keys)
    starts = torch.cumsum(sizes, 0) - sizes
    one_hot = torch.nn.functional.one_hot(slot_cluster, clusters)
    rank = (one_hot.cumsum(0) * one_hot).sum(1) - 1  # the slot's position among its cluster's slots
    indices = members[starts[slot_cluster] + rank % sizes[slot_cluster]]
    return indices, weights
