"""A slow, obviously correct transcription of the original critical-gradient optimizers (spec A.2-A.4).

The memory is a Python list of ``[priority, tensor]`` items: every offered gradient is appended and
then the lowest-priority item is evicted (the original's ``critical_test=False`` path, which is the
exact top-C); priorities decay after every step. The step algorithms follow the spec's pseudo-code
line by line, in float64, with the original's bugs fixed where optimlab fixes them (``kappa`` passed
to every aggregation, momentum applied whatever ``kappa`` is).

The ablation options are included so that each can be checked too: ``priority`` (norm, recency,
inverse_norm), ``update`` (aggregate, buffer_only), ``offer`` (after_aggregate, before_aggregate) and
``weight_decay_mode``. Only the deterministic 'KotH' admission policy is modelled.
"""

from __future__ import annotations

import math

import torch


class ReferenceMemory:
    def __init__(self, capacity: int, decay: float, priority: str) -> None:
        self.capacity = capacity
        self.decay = decay
        self.priority = priority
        self.items: list[list] = []  # [priority, tensor], in insertion order

    def offer(self, key: float, tensor: torch.Tensor) -> None:
        self.items.append([key, tensor.clone()])
        if len(self.items) > self.capacity:
            # evict the minimum; on a tie the newest item goes (a new gradient must be strictly larger)
            lowest = min(range(len(self.items)), key=lambda i: (self.items[i][0], -i))
            del self.items[lowest]

    def decay_priorities(self) -> None:
        if self.priority != "recency":
            for item in self.items:
                item[0] *= self.decay

    def by_priority(self) -> list[list]:
        return sorted(self.items, key=lambda item: item[0])

    def selected(self, which: str) -> torch.Tensor:
        ordered = self.by_priority()
        index = {"min": 0, "max": len(ordered) - 1, "median": len(ordered) // 2}[which]
        return ordered[index][1]

    def total(self) -> torch.Tensor:
        result = torch.zeros_like(self.items[0][1])
        for _, tensor in self.items:
            result = result + tensor
        return result


def reference_aggregate(d: torch.Tensor, memory: ReferenceMemory, aggr: str, kappa: float, update: str):
    n = len(memory.items)
    current = d if update == "aggregate" else torch.zeros_like(d)
    if aggr in ("sum", "mid"):
        a = current + kappa * (memory.total() / n)
        return 0.5 * a if aggr == "mid" else a
    if aggr == "mean":
        if update == "aggregate":
            return (d + kappa * memory.total()) / (n + 1)
        return kappa * (memory.total() / n)
    a = current + kappa * memory.selected(aggr.removesuffix("-mean"))
    return 0.5 * a if aggr.endswith("-mean") else a


class ReferenceCritical:
    """The memory part shared by the three reference optimizers."""

    def __init__(self, params, *, topC=10, decay=0.7, kappa=1.0, aggr="sum", synced=True, priority="norm",
                 update="aggregate", offer="after_aggregate", weight_decay=0.0, weight_decay_mode="before_buffer"):
        self.params = list(params)
        self.topC, self.decay, self.kappa, self.aggr = topC, decay, kappa, aggr
        self.synced, self.priority, self.update, self.offer = synced, priority, update, offer
        self.weight_decay, self.weight_decay_mode = weight_decay, weight_decay_mode
        self.memories: dict[int, ReferenceMemory] = {}
        self.offers: dict[int, int] = {}

    def keys(self) -> list[float]:
        norms = [math.sqrt(float((p.grad.double() ** 2).sum())) for p in self.params]
        if self.synced in (True, "sum_of_norms"):
            keys = [sum(norms)] * len(norms)
        elif self.synced == "global_l2":
            keys = [math.sqrt(sum(n * n for n in norms))] * len(norms)
        else:
            keys = norms
        if self.priority == "inverse_norm":
            keys = [1.0 / k for k in keys]
        if self.priority == "recency":
            keys = [float(self.offers.get(i, 0) + 1) for i in range(len(self.params))]
        return keys

    def directions(self) -> list[torch.Tensor]:
        """Aggregated gradients (weight decay before buffering already added) for every parameter."""
        keys = self.keys()
        out = []
        for i, p in enumerate(self.params):
            d = p.grad.clone()
            if self.weight_decay_mode == "before_buffer" and self.weight_decay != 0:
                d = d + self.weight_decay * p.detach()
            if self.kappa == 0:
                out.append(d)
                continue
            if i not in self.memories:  # first step: create, insert, plain update
                self.memories[i] = ReferenceMemory(self.topC, self.decay, self.priority)
                self.memories[i].offer(keys[i], d)
                a = d
            elif self.offer == "after_aggregate":
                a = reference_aggregate(d, self.memories[i], self.aggr, self.kappa, self.update)
                self.memories[i].offer(keys[i], d)
            else:
                self.memories[i].offer(keys[i], d)
                a = reference_aggregate(d, self.memories[i], self.aggr, self.kappa, self.update)
            self.memories[i].decay_priorities()
            self.offers[i] = self.offers.get(i, 0) + 1
            out.append(a)
        return out

    def decoupled(self, lr: float) -> None:
        if self.weight_decay_mode == "decoupled" and self.weight_decay != 0:
            for p in self.params:
                p.data = p.data * (1 - lr * self.weight_decay)

    def l2(self, p: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if self.weight_decay_mode == "after_aggregate" and self.weight_decay != 0:
            return a + self.weight_decay * p.detach()
        return a


class ReferenceSGD_C(ReferenceCritical):  # noqa: N801
    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False, **memory):
        memory.setdefault("aggr", "sum")
        super().__init__(params, **memory)
        self.lr, self.momentum, self.dampening, self.nesterov = lr, momentum, dampening, nesterov
        self.buffers: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def step(self) -> None:
        directions = self.directions()
        self.decoupled(self.lr)
        for i, (p, d) in enumerate(zip(self.params, directions)):
            d = self.l2(p, d)
            if self.momentum != 0:
                if i not in self.buffers:
                    self.buffers[i] = d.clone()
                else:
                    self.buffers[i] = self.momentum * self.buffers[i] + (1 - self.dampening) * d
                d = d + self.momentum * self.buffers[i] if self.nesterov else self.buffers[i]
            p.data = p.data - self.lr * d


class ReferenceAdam_C(ReferenceCritical):  # noqa: N801
    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, amsgrad=False, **memory):
        memory.setdefault("aggr", "mean")
        memory.setdefault("weight_decay_mode", "after_aggregate")
        super().__init__(params, **memory)
        self.lr, self.betas, self.eps, self.amsgrad = lr, betas, eps, amsgrad
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.vmax = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        directions = self.directions()
        self.decoupled(self.lr)
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        for i, (p, g) in enumerate(zip(self.params, directions)):
            g = self.l2(p, g)
            self.m[i] = b1 * self.m[i] + (1 - b1) * g
            self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
            v = self.v[i]
            if self.amsgrad:
                self.vmax[i] = torch.maximum(self.vmax[i], self.v[i])
                v = self.vmax[i]
            denom = v.sqrt() / math.sqrt(bc2) + self.eps
            p.data = p.data - (self.lr / bc1) * self.m[i] / denom


class ReferenceRMSprop_C(ReferenceCritical):  # noqa: N801
    def __init__(self, params, lr, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, **memory):
        memory.setdefault("aggr", "mean")
        memory.setdefault("weight_decay_mode", "after_aggregate")
        super().__init__(params, **memory)
        self.lr, self.alpha, self.eps, self.momentum, self.centered = lr, alpha, eps, momentum, centered
        self.square_avg = [torch.zeros_like(p) for p in self.params]
        self.grad_avg = [torch.zeros_like(p) for p in self.params]
        self.buf = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        directions = self.directions()
        self.decoupled(self.lr)
        a = self.alpha
        for i, (p, g) in enumerate(zip(self.params, directions)):
            g = self.l2(p, g)
            self.square_avg[i] = a * self.square_avg[i] + (1 - a) * g * g
            if self.centered:
                self.grad_avg[i] = a * self.grad_avg[i] + (1 - a) * g
                avg = (self.square_avg[i] - self.grad_avg[i] ** 2).sqrt() + self.eps
            else:
                avg = self.square_avg[i].sqrt() + self.eps
            if self.momentum > 0:
                self.buf[i] = self.momentum * self.buf[i] + g / avg
                p.data = p.data - self.lr * self.buf[i]
            else:
                p.data = p.data - self.lr * g / avg
