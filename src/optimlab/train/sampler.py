"""Deterministic, resumable batch sampling.

The order of batches is a pure function of (seed, epoch), and the sampler's whole state is (epoch, position),
so a checkpoint restores it exactly; no generator state needs saving. Every rank draws the same global batch
and keeps its own contiguous slice of it, so a distributed run sees the same global batches as a
single-process run.
"""

from __future__ import annotations

import torch
from torch import Tensor


def epoch_order(num_samples: int, batch_size: int, seed: int, epoch: int, lengths: Tensor | None) -> Tensor:
    """The batches of one pass over the data, as a (num_batches, batch_size) index tensor.

    Without `lengths`: a random permutation, cut into batches (the ragged remainder is dropped so every
    step sees a full batch). With `lengths` (length bucketing): shuffle, stable-sort by length so that
    samples of similar length share a batch, cut into batches, then shuffle the batches.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_samples, generator=generator)
    num_batches = num_samples // batch_size
    if lengths is not None:
        order = order[torch.argsort(lengths[order], stable=True)]
        batches = order[: num_batches * batch_size].view(num_batches, batch_size)
        return batches[torch.randperm(num_batches, generator=generator)]
    return order[: num_batches * batch_size].view(num_batches, batch_size)


class BatchSampler:
    """An endless stream of global batches of indices, epoch after epoch."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, lengths: Tensor | None = None):
        if batch_size > num_samples:
            raise ValueError(f"batch size {batch_size} exceeds the {num_samples} training samples")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.lengths = lengths
        self.epoch = 0
        self.position = 0
        self._batches = epoch_order(num_samples, batch_size, seed, 0, lengths)

    def next(self) -> Tensor:
        if self.position == len(self._batches):
            self.epoch += 1
            self.position = 0
            self._batches = epoch_order(self.num_samples, self.batch_size, self.seed, self.epoch, self.lengths)
        batch = self._batches[self.position]
        self.position += 1
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = epoch_order(self.num_samples, self.batch_size, self.seed, self.epoch, self.lengths)


def rank_slice(indices: Tensor, rank: int, world_size: int) -> Tensor:
    """This rank's contiguous share of a global batch (the first `len % world_size` ranks get one more)."""
    if world_size == 1:
        return indices
    return torch.tensor_split(indices, world_size)[rank]
