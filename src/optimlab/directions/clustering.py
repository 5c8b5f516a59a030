"""Gradient clustering (GC): stratified sampling over a size-weighted k-means partition in gradient space.

Faghri, Duvenaud, Fleet & Ba 2020, "A Study of Gradient Variance in Deep Learning" (fartashf/gvar_code,
"gluster"). Examples whose gradients are alike share a cluster; a stratified batch draws from every
cluster and re-weights, which is unbiased and, when gradients cluster (duplicated examples, class
imbalance), has a lower variance than uniform sampling (`stratified.py`).

Clustering works in the space of the Linear/Conv1d/Conv2d layers' weight-and-bias gradients. Each centre is
rank-1 per layer, distances are summed over layers (one cluster per example for all layers) and computed
from the layers' inputs and output gradients (`rank1.py`); no per-example gradient is formed for distances.

- **Assignment**: `argmin_k d_ik (N_k + 1)` with size weighting (the objective `sum_k N_k sum_{i in k} d_ik`
  that the equal-allocation variance is), plain `argmin_k d_ik` without. Passes run in eval mode.
- **Update**: each centre becomes the best rank-1 approximation (top singular pair) of its cluster's mean
  gradient, accumulated from per-example layer gradients during the same pass (the original takes the mean
  input and mean output gradient instead, which is not the best rank-1 fit).
- **Full-batch GC** (`mode="batch"`, the infrequent update every `snapshot_every` steps): `citers` passes of
  assignment and update over the training split. After each pass, a cluster with fewer than `min_size`
  members takes a random half of the members of the cluster with the largest distortion.
- **Online GC** (`mode="online"`): an EM step on a fresh batch every `online_every` steps (the frequent
  update): assign, then running averages `N_k <- beta N_k + (1 - beta) n_k` of the sizes and of the cluster
  gradient sums; a cluster that becomes too small restarts at the batch example farthest from its centre.
  The infrequent update is an assignment-only pass that labels every example for the sampler.

Centres start from k-means++ seeds among a few random examples' gradients. The training direction
is the weighted gradient of a stratified batch from the direction's own stream (one extra mini-batch
gradient per step, counted); until the first clustering it is the plain gradient. With
`train.sampler=stratified` (`gc_sampler.py`) the training batch is itself the stratified batch and the loop's
weighted backward computes the direction: no extra gradient (`loop_batches`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from optimlab.directions.base import (
    Batch,
    Direction,
    Gradient,
    Objective,
    Schedule,
    batch_gradient,
    side_effect_free,
    weighted_gradient,
)
from optimlab.directions.layers import capture, supported_layers
from optimlab.directions.rank1 import layer_terms, per_example_matrices, rank1_fit
from optimlab.directions.stratified import stratified_batch

_STREAM_SEED = 1_000_003


class GradientClustering(Direction):
    name = "gc"
    step_grad_evals = 1.0  # the stratified batch's gradient

    def __init__(
        self,
        model: nn.Module,
        *,
        clusters: int = 10,
        mode: str = "batch",
        citers: int = 2,
        snapshot_every: int = 1000,
        online_every: int = 10,
        beta: float = 0.99,
        min_size: int = 1,
        size_weighting: bool = True,
        allocation: str = "equal",
    ):
        super().__init__()
        if mode not in ("batch", "online"):
            raise ValueError(f"mode must be 'batch' or 'online', got {mode!r}")
        if allocation not in ("equal", "proportional"):
            raise ValueError(f"allocation must be 'equal' or 'proportional', got {allocation!r}")
        self.layers = supported_layers(model)
        if not self.layers:
            raise ValueError("gradient clustering needs a Linear, Conv1d or Conv2d layer")
        self.clusters, self.mode, self.citers = clusters, mode, citers
        self.infrequent_schedule = Schedule(snapshot_every)
        self.frequent_schedule = Schedule(online_every if mode == "online" else 0)
        self.beta, self.min_size = beta, min_size
        self.size_weighting, self.allocation = size_weighting, allocation
        self.centres: dict[str, tuple[Tensor, Tensor]] = {}  # layer -> (c_in (K, d_in), c_out (K, d_out))
        self.sums: dict[str, Tensor] = {}  # online: running cluster gradient sums (K, d_out, d_in)
        self.sizes = torch.zeros(clusters, dtype=torch.float64)  # N_k used by the size weighting
        self.distortion = torch.zeros(clusters, dtype=torch.float64)
        self.labels: Tensor | None = None  # the sampler's partition of the training split
        self.stream = 0  # stratified batches drawn for training
        self.updates = 0  # clusterings / EM steps done (seeds their randomness)
        self.loop_batches = False  # True: the training loop draws the stratified batches (train.sampler=stratified)

    def use_loop_batches(self) -> None:
        """The training batches are this direction's stratified batches, weighted in the loop's loss: the
        gradient in `.grad` is the training direction, at no extra cost."""
        self.loop_batches = True
        self.step_grad_evals = 0.0

    # -- the estimator ---------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.labels is not None

    def counts(self) -> Tensor:
        return torch.bincount(self.labels, minlength=self.clusters)

    def weights(self, indices: Tensor) -> Tensor:
        """The unbiasing weight of each example of a stratified batch."""
        if self.allocation == "proportional":
            return torch.ones(len(indices), dtype=torch.float64)
        counts = self.counts()
        return (counts > 0).sum() * counts[self.labels[indices.cpu()]].double() / len(self.labels)

    def sample(self, generator: torch.Generator, batch_size: int) -> Tensor:
        if self.labels is None:
            return super().sample(generator, batch_size)
        return stratified_batch(self.labels, self.clusters, batch_size, generator, self.allocation)[0]

    def direction(self, model: nn.Module, objective: Objective, batch: Batch, indices: Tensor | None = None) -> Gradient:
        """The weighted gradient of a batch drawn by `sample` (its `indices` give the weights); pure."""
        with side_effect_free(model):
            if self.labels is None:
                return batch_gradient(model, objective, batch)
            if indices is None:
                raise ValueError("the gradient-clustering direction needs the batch's example indices")
            return weighted_gradient(model, objective, batch, self.weights(indices).to(batch[0].device))

    def training_direction(
        self, model: nn.Module, objective: Objective, batch: Batch, indices: Tensor, gradient: Gradient
    ) -> Gradient:
        if self.loop_batches:
            return gradient  # the loop's weighted gradient of this direction's stratified batch
        generator = torch.Generator().manual_seed(self.seed * _STREAM_SEED + self.stream)
        self.stream += 1
        own = self.sample(generator, self.batch_size)
        return self.direction(model, objective, self._batch(own), own)

    # -- distances ---------------------------------------------------------------------------------------
    def distances(
        self, model: nn.Module, objective: Objective, batch: Batch, *, matrices: bool = True
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """((B, K) squared distances of the batch's per-example layer gradients to the centres, summed over
        layers; {layer: (B, d_out, d_in) per-example gradients} for the update, when `matrices`). The model
        in its current mode; no side effects."""
        total = 0
        per_example = {}
        with side_effect_free(model), capture(model, self.layers) as recorder:
            loss_sum, _ = objective(model, batch)
            recorder.backward(loss_sum)
        for name, a, d in recorder.pairs():
            c_in, c_out = self.centres[name]
            a, d = a.to(c_in.dtype), d.to(c_in.dtype)
            g = per_example_matrices(a, d) if matrices else None
            total = total + layer_terms(a, d, c_in, c_out, g=g)
            if matrices:
                per_example[name] = g
        return total, per_example

    def assign(self, distances: Tensor) -> Tensor:
        weighted = distances * (self.sizes + 1).to(distances)[None, :] if self.size_weighting else distances
        return weighted.argmin(dim=1)

    # -- scheduled updates ---------------------------------------------------------------------------------
    def due(self, step: int) -> tuple[bool, bool]:
        return self.frequent_schedule.due(step), self.infrequent_schedule.due(step)

    def infrequent(self, step: int, model: nn.Module, objective: Objective) -> None:
        if not self.centres:
            self._initialise(model, objective)
        if self.mode == "batch":
            for _ in range(self.citers):
                self._batch_pass(model, objective, update=True)
        else:
            self._batch_pass(model, objective, update=False)
        self.updates += 1

    def frequent(self, step: int, model: nn.Module, objective: Objective) -> None:
        """One online EM step on a fresh uniform batch from the direction's own generator."""
        if not self.centres:
            self._initialise(model, objective)
        generator = self._generator()
        index = torch.randperm(len(self.train_split), generator=generator)[: self.batch_size]
        with _eval(model):
            distances, grads = self.distances(model, objective, self._batch(index))
        labels = self.assign(distances)
        counts = torch.bincount(labels.cpu(), minlength=self.clusters).double()
        b = self.beta
        self.sizes = b * self.sizes + (1 - b) * counts
        nearest = distances.gather(1, labels[:, None]).squeeze(1).cpu()
        self.distortion = b * self.distortion + (1 - b) * torch.zeros_like(self.distortion).index_add_(0, labels.cpu(), nearest.double())
        for name, g in grads.items():
            batch_sums = torch.zeros_like(self.sums[name]).index_add_(0, labels, g.double())
            self.sums[name] = b * self.sums[name] + (1 - b) * batch_sums
        share = self.sizes * len(self.train_split) / len(index)  # estimated members in the whole split
        for k in (share < self.min_size).nonzero().squeeze(1).tolist():
            far = int(nearest.argmax())  # restart at the example farthest from its centre
            for name, g in grads.items():
                self.sums[name][k] = g[far].double() * (1 - b)
            self.sizes[k] = 1 - b
            nearest[far] = -1.0
        self._fit(self.sums, self.sizes)
        self.costs.add(grad_evals=1.0, examples=len(index))
        self.updates += 1

    # -- passes -------------------------------------------------------------------------------------------
    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * _STREAM_SEED + 7 + 7919 * self.updates)

    def _initialise(self, model: nn.Module, objective: Objective) -> None:
        """k-means++ seeding (Arthur & Vassilvitskii 2007) among `8 * clusters` random examples: each next
        seed is drawn with probability proportional to its squared gradient distance to the nearest seed;
        the centres are the rank-1 fits of the seeds' gradients."""
        generator = self._generator()
        candidates = torch.randperm(len(self.train_split), generator=generator)[: 8 * self.clusters]
        with _eval(model), side_effect_free(model), capture(model, self.layers) as recorder:
            loss_sum, _ = objective(model, self._batch(candidates))
            recorder.backward(loss_sum)
        grads = {name: per_example_matrices(a, d) for name, a, d in recorder.pairs()}
        flat = torch.cat([g.flatten(1) for g in grads.values()], dim=1).cpu()
        squared = torch.cdist(flat, flat).pow(2)
        chosen = [int(torch.randint(len(candidates), (1,), generator=generator))]
        for _ in range(1, self.clusters):
            nearest = squared[:, chosen].min(dim=1).values
            if float(nearest.sum()) <= 0:  # fewer distinct gradients than clusters: repeat seeds
                chosen.append(chosen[len(chosen) % len(chosen)])
                continue
            chosen.append(int(torch.multinomial(nearest, 1, generator=generator)))
        seeds = torch.tensor(chosen, device=flat.device)
        for name, g in grads.items():
            picked = g[seeds.to(g.device)].double()
            self.centres[name] = tuple(t.to(g.dtype) for t in rank1_fit(picked))
            self.sums[name] = picked * (1 - self.beta)
        self.sizes = torch.full((self.clusters,), 1 - self.beta if self.mode == "online" else 0.0, dtype=torch.float64)
        self.costs.add(grad_evals=1.0, examples=len(candidates))


    def _batch_pass(self, model: nn.Module, objective: Objective, *, update: bool) -> None:
        """Assign every training example (and, with `update`, refit the centres to the assignment)."""
        n = len(self.train_split)
        labels = torch.empty(n, dtype=torch.long)
        distortion = torch.zeros(self.clusters, dtype=torch.float64)
        sums = {name: c_in.new_zeros(self.clusters, c_out.shape[1], c_in.shape[1], dtype=torch.float64)
                for name, (c_in, c_out) in self.centres.items()}  # fmt: skip
        with _eval(model):
            for start in range(0, n, self.batch_size):
                index = torch.arange(start, min(start + self.batch_size, n))
                distances, grads = self.distances(model, objective, self._batch(index), matrices=update)
                assigned = self.assign(distances)
                labels[index] = assigned.cpu()
                nearest = distances.gather(1, assigned[:, None]).squeeze(1).cpu()
                distortion.index_add_(0, assigned.cpu(), nearest.double())
                if update:
                    for name, g in grads.items():
                        sums[name].index_add_(0, assigned, g.double())
        self.costs.add(full_passes=1.0, examples=n)
        if update:
            labels, sums, distortion = self._repair(model, objective, labels, sums, distortion)
            self._fit(sums, torch.bincount(labels, minlength=self.clusters).double())
        self.labels, self.distortion = labels, distortion
        if self.mode == "batch":
            self.sizes = torch.bincount(labels, minlength=self.clusters).double()

    def _repair(self, model, objective, labels, sums, distortion):
        """Clusters under `min_size` take a random half of the most distorted cluster's members."""
        generator = self._generator()
        for _ in range(self.clusters):
            counts = torch.bincount(labels, minlength=self.clusters)
            small = (counts < self.min_size).nonzero().squeeze(1)
            splittable = counts >= 2 * max(self.min_size, 1)
            if len(small) == 0 or not bool(splittable.any()):
                break
            k = int(small[0])
            j = int(torch.where(splittable, distortion, torch.full_like(distortion, -1.0)).argmax())
            members = (labels == j).nonzero().squeeze(1)
            moved = members[torch.randperm(len(members), generator=generator)[: len(members) // 2]]
            labels[moved] = k
            distortion[k] = distortion[j] = distortion[j] / 2
            with _eval(model):
                for start in range(0, len(moved), self.batch_size):
                    index = moved[start : start + self.batch_size]
                    _, grads = self.distances(model, objective, self._batch(index))
                    for name, g in grads.items():
                        part = g.sum(0).double()
                        sums[name][j] -= part
                        sums[name][k] += part
            self.costs.add(examples=len(moved))
        return labels, sums, distortion

    def _fit(self, sums: dict[str, Tensor], sizes: Tensor) -> None:
        """Centres of the non-empty clusters <- rank-1 fits of their mean gradients."""
        live = sizes > 0
        for name, total in sums.items():
            if name not in self.centres:
                continue
            c_in, c_out = self.centres[name]
            means = total[live] / sizes[live].to(total.device)[:, None, None]
            new_in, new_out = rank1_fit(means)
            c_in, c_out = c_in.clone(), c_out.clone()
            c_in[live], c_out[live] = new_in.to(c_in.dtype), new_out.to(c_out.dtype)
            self.centres[name] = (c_in, c_out)
        if self.mode == "online":
            self.sums = sums

    # -- reporting and state ---------------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        values = super().stats()
        if self.labels is not None:
            counts = self.counts()
            values.update({
                "nonempty_clusters": float((counts > 0).sum()),
                "largest_cluster": float(counts.max()),
                "distortion": float(self.distortion.sum()),
            })  # fmt: skip
        return values

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "centres": {name: list(c) for name, c in self.centres.items()},
            "sums": dict(self.sums),
            "sizes": self.sizes,
            "distortion": self.distortion,
            "labels": self.labels,
            "stream": self.stream,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.centres = {name: tuple(t.to(self.device) for t in c) for name, c in state["centres"].items()}
        self.sums = {name: t.to(self.device) for name, t in state["sums"].items()}
        self.sizes, self.distortion, self.labels = state["sizes"], state["distortion"], state["labels"]
        self.stream, self.updates = int(state["stream"]), int(state["updates"])


class _eval:
    """The model in eval mode inside the block, its modules' modes restored after."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc) -> None:
        for module, training in self.modes:
            module.training = training
