"""`train.sampler=stratified`: GC-SGD without its extra gradient per step.

With `direction=gc` alone, each step's loop computes the gradient of a uniform batch and the direction then
replaces it by the weighted gradient of a stratified batch drawn from its own stream: one more forward and
backward per step, and the uniform batch's gradient is thrown away. With this sampler the training batch *is*
that stratified batch (drawn by the same code, from the same stream: `GradientClustering.sample` seeded by
the direction's stream counter) and the loop's weighted loss (`optimlab.train.importance.weighted_task`,
weights `M N_k / N`, or 1 with proportional allocation) gives the same estimator in the loop's single
backward; the direction keeps the gradient in `.grad` (`GradientClustering.use_loop_batches`).

The direction's scheduled clusterings run when the batch is drawn, just before the step (the hook alone runs
them just after the draw of a batch it does not use), so every batch is drawn from and weighted by the
partition of its own step. Before the first clustering, batches are uniform (without replacement) with
weights 1, the plain gradient, as for the direction alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from optimlab.directions.clustering import _STREAM_SEED, GradientClustering
from optimlab.errors import ConfigError
from optimlab.train.importance import WeightedSampler

_UNIFORM_SEED = 7_368_787  # offset of the pre-clustering uniform draws from the run seed


class StratifiedSampler(WeightedSampler):
    kind = "stratified"

    def __init__(
        self, direction: GradientClustering, num_samples: int, batch_size: int, seed: int, before_draw: Callable[[int], None]
    ):
        if batch_size > num_samples:
            raise ValueError(f"batch size {batch_size} exceeds the {num_samples} training samples")
        self.direction, self.num_samples, self.batch_size, self.seed = direction, num_samples, batch_size, seed
        self.before_draw = before_draw  # the direction's updates due at a step, given the step
        self.draws = 0

    def next(self) -> Tensor:
        self.before_draw(self.draws)
        step = self.draws
        self.draws += 1
        gc = self.direction
        if not gc.ready:
            generator = torch.Generator().manual_seed(self.seed * _UNIFORM_SEED + step)
            return torch.randperm(self.num_samples, generator=generator)[: self.batch_size]
        generator = torch.Generator().manual_seed(gc.seed * _STREAM_SEED + gc.stream)
        gc.stream += 1
        return gc.sample(generator, self.batch_size)

    def weights(self, indices: Tensor) -> Tensor:
        """GC's unbiasing weights of the drawn examples (1 before the first clustering), float64."""
        if not self.direction.ready:
            return torch.ones(len(indices), dtype=torch.float64)
        return self.direction.weights(indices)

    def state_dict(self) -> dict:
        return {"draws": self.draws}  # the partition and the stream counter are the direction's (hook) state

    def load_state_dict(self, state: dict) -> None:
        self.draws = int(state["draws"])


def stratified_sampler(hooks: Sequence, num_samples: int, batch_size: int, seed: int) -> StratifiedSampler:
    """The sampler of a run's `direction=gc` hook, which from now on leaves the scheduled updates to it."""
    from optimlab.directions.hook import DirectionHook

    found = [h for h in hooks if isinstance(h, DirectionHook) and isinstance(h.direction, GradientClustering)]
    if not found or not found[0].apply:
        raise ConfigError("config key 'train.sampler': stratified draws direction=gc's batches; set direction=gc (applied)")
    hook = found[0]
    hook.updates_at_draw = True
    hook.direction.use_loop_batches()
    return StratifiedSampler(hook.direction, num_samples, batch_size, seed, hook.update)
