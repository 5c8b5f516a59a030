"""The training order of a contiguous stream (truncated backpropagation through time).

The training split of a stream task holds consecutive windows of one long stream, in order. With batch
size B the windows are dealt into B contiguous lanes of L = len // B windows (lane r holds windows
r*L ... r*L + L - 1; the remainder is dropped), and batch s holds window s of every lane: row r of
consecutive batches reads consecutive windows, so a model can carry its state from one batch to the next
(`optimlab.tasks.carried_state`). This is the classic `batchify` layout of Zaremba et al.'s PTB code and
PyTorch's word_language_model example. The state is (epoch, position), like `BatchSampler`'s.
"""

from __future__ import annotations

import torch
from torch import Tensor


class StreamSampler:
    def __init__(self, num_windows: int, batch_size: int):
        if batch_size > num_windows:
            raise ValueError(f"batch size {batch_size} exceeds the {num_windows} training windows")
        self.lane_length = num_windows // batch_size
        self.starts = torch.arange(batch_size) * self.lane_length
        self.epoch = 0
        self.position = 0

    def next(self) -> Tensor:
        if self.position == self.lane_length:
            self.epoch += 1
            self.position = 0
        batch = self.starts + self.position
        self.position += 1
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
