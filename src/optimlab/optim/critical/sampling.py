r"""Admission policies: whether a gradient offered to a *full* memory enters it, and which slot it takes.

While the memory has a free slot every offered gradient is admitted (as in the original). Once it is
full, ``sampling`` decides:

==================== ============================================================================
``'KotH'`` (default) "king of the hill": replace the lowest-priority item if the new key is strictly
                     larger. This keeps the exact top-``topC`` by decayed priority, so
                     ``critical_test`` makes no difference (the original's heap bug, A.8 #1, is not
                     reproduced).
``'random'``         replace a uniformly random item.
``'proportional'``   replace an item drawn with weight :math:`1 - \pi_i / \sum_j \pi_j`
                     (:math:`\pi` the priorities; uniform when the weights are degenerate).
``'mean_diversity'`` admit (replacing the lowest-priority item) with probability
                     :math:`\min(1, \lVert\bar g - d\rVert / \lVert\bar g\rVert)`, :math:`\bar g` the
                     memory's mean.
``'cos_diversity'``  likewise with probability :math:`(1 - \cos(d, \bar g))/2`.
``'cos_similarity'`` likewise with probability :math:`(1 + \cos(d, \bar g))/2`.
==================== ============================================================================

With ``critical_test=True`` (default) a gradient must first beat the lowest priority before the policy
is applied; with ``False``, ``'random'`` and ``'proportional'`` replace an item whatever the key. The
three diversity policies append and then evict the minimum, as the original does, so a gradient whose
key is below the minimum never stays, whatever ``critical_test`` is.

With a synced key (see `priority.py`) the group draws once and measures diversity over all its tensors
together, so its tensors keep making the same decisions; per-tensor keys draw per tensor. Random draws
come from `torch.Generator`\ s seeded from (``seed``, group, tensor, offer count), so they need no state
of their own and a resumed run draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

SAMPLING = ("KotH", "random", "proportional", "mean_diversity", "cos_diversity", "cos_similarity")
_DIVERSITY = ("mean_diversity", "cos_diversity", "cos_similarity")
_BUGGED = ("pure_random", "pure-random", "cos_diversity_keep_backwards")


def resolve_sampling(sampling: str | None) -> str:
    """The canonical policy name (None means 'KotH'); ValueError naming the value if unknown."""
    if sampling is None:
        return "KotH"
    if sampling in SAMPLING:
        return sampling
    hint = " (broken in the original, not offered)" if sampling in _BUGGED else ""
    raise ValueError(f"invalid sampling {sampling!r}{hint}: choose from {', '.join(SAMPLING)}")


def lowest(priorities: list[Tensor], vectorized: bool) -> tuple[Tensor, Tensor]:
    """Per memory, the lowest priority and its slot, as two 1-D tensors (one entry per memory)."""
    if vectorized:
        return torch.stack(priorities).min(dim=1)
    mins, slots = zip(*(torch.min(p, dim=0) for p in priorities))
    return torch.stack(mins), torch.stack(slots)


GeneratorFor = Callable[[int], torch.Generator]


def decide(
    policy: str,
    *,
    keys: list[Tensor],
    priorities: list[Tensor],
    offered: list[Tensor],
    totals: list[Tensor],
    critical_test: bool,
    synced: bool,
    generator_for: GeneratorFor,
    vectorized: bool,
) -> tuple[Tensor, Tensor]:
    """Admission flags (bool) and target slots (int64) for gradients offered to full memories.

    Args:
        keys: the new priority key of each offered gradient (0-dim).
        priorities: each memory's (capacity,) priority vector, all full.
        offered: the offered gradients; totals: each memory's running sum (for the diversity policies).
        generator_for: `generator_for(i)` gives the seeded generator for memory i (-1: one for the group).
    """
    mins, slots = lowest(priorities, vectorized)
    passes = torch.stack([k.to(mins.device) for k in keys]) > mins
    if policy == "KotH":
        return passes, slots
    count, capacity = len(priorities), priorities[0].shape[0]
    if policy in ("random", "proportional"):
        admit = passes if critical_test else torch.ones_like(passes)
        draws = []
        for i in range(count):
            if synced and i > 0:
                draws.append(draws[0])
                continue
            generator = generator_for(-1 if synced else i)
            if policy == "random":
                draws.append(int(torch.randint(capacity, (1,), generator=generator)))
            else:
                draws.append(_proportional_draw(priorities[i], generator))
        return admit, torch.tensor(draws, dtype=torch.int64, device=slots.device)
    accept = _acceptance(policy, offered, totals, capacity, synced)
    uniforms = []
    for i in range(count):
        if synced and i > 0:
            uniforms.append(uniforms[0])
            continue
        uniforms.append(float(torch.rand((), generator=generator_for(-1 if synced else i), dtype=torch.float64)))
    drawn = torch.tensor(uniforms, dtype=torch.float64, device=slots.device) < accept.to(slots.device)
    return passes & drawn, slots


def _proportional_draw(priority: Tensor, generator: torch.Generator) -> int:
    weights = priority.detach().to("cpu", torch.float64)
    weights = 1.0 - weights / weights.sum()
    if not bool(torch.isfinite(weights).all()) or not bool((weights > 0).any()):
        weights = torch.ones_like(weights)
    return int(torch.multinomial(weights.clamp_min(0.0), 1, generator=generator))


def _acceptance(policy: str, offered: list[Tensor], totals: list[Tensor], capacity: int, synced: bool) -> Tensor:
    """Acceptance probability of each offered gradient (float64, one per memory)."""
    means = [t / capacity for t in totals]
    if policy == "mean_diversity":
        dist_sq = torch.stack([torch.sum((m - d).double() ** 2) for m, d in zip(means, offered)])
        mean_sq = torch.stack([torch.sum(m.double() ** 2) for m in means])
        if synced:
            dist_sq, mean_sq = dist_sq.sum().expand(len(means)), mean_sq.sum().expand(len(means))
        ratio = torch.where(mean_sq > 0, (dist_sq / mean_sq).sqrt(), torch.ones_like(mean_sq))
        return ratio.clamp(max=1.0)
    dots = torch.stack([torch.sum(m.double() * d.double()) for m, d in zip(means, offered)])
    d_sq = torch.stack([torch.sum(d.double() ** 2) for d in offered])
    m_sq = torch.stack([torch.sum(m.double() ** 2) for m in means])
    if synced:
        dots, d_sq, m_sq = (x.sum().expand(len(means)) for x in (dots, d_sq, m_sq))
    denominator = (d_sq * m_sq).sqrt()
    cosine = torch.where(denominator > 0, dots / denominator, torch.zeros_like(dots)).clamp(-1.0, 1.0)
    return (1.0 - cosine) / 2 if policy == "cos_diversity" else (1.0 + cosine) / 2
