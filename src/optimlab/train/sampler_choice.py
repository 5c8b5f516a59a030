"""Which sampler orders the training examples (`train.sampler`).

- `auto` (the default): the task's own order. Stream tasks (`task.info["order"] == "stream"`: the word-level
  language models) read their windows in contiguous lanes (`StreamSampler`), so the hidden state can be
  carried from one batch to the next; every other task is shuffled each epoch (`BatchSampler`, length-
  bucketed with `train.length_bucketing=true`).
- `uniform`: shuffled each epoch, for every task (a stream task then starts each window from zeros).
- `loss`, `gradnorm`: importance sampling with unbiasing weights (`optimlab.train.importance`).
- `stratified`: the stratified batches of `direction=gc`, with its unbiasing weights
  (`optimlab.directions.gc_sampler`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from optimlab.config import Config
from optimlab.errors import ConfigError
from optimlab.tasks import Split, Task
from optimlab.train.importance import KINDS, ImportanceSampler
from optimlab.train.sampler import BatchSampler
from optimlab.train.stream_sampler import StreamSampler


def build_sampler(
    cfg: Config, task: Task, train_split: Split, lengths: Tensor | None, world_size: int, hooks: Sequence = ()
):
    choice, batch_size = cfg.train.sampler, cfg.task.batch_size
    try:
        if choice == "stratified":
            if lengths is not None:
                raise ConfigError("train.sampler=stratified draws examples one by one; set train.length_bucketing=false")
            from optimlab.directions.gc_sampler import stratified_sampler

            return stratified_sampler(hooks, len(train_split), batch_size, cfg.seed)
        if choice in KINDS:
            if lengths is not None:
                raise ConfigError(f"train.sampler={choice} draws examples one by one; set train.length_bucketing=false")
            if world_size > 1:
                raise ConfigError(f"train.sampler={choice} keeps its scores in one process; train with one process")
            return ImportanceSampler(len(train_split), batch_size, cfg.seed, choice, cfg.train.sampler_floor)
        if choice == "auto" and task.info.get("order") == "stream":
            if world_size > 1:
                raise ConfigError(
                    f"task {task.name!r} carries its hidden state across batches in one process only; "
                    "use train.sampler=uniform to train it with several processes"
                )
            return StreamSampler(len(train_split), batch_size)
        return BatchSampler(len(train_split), batch_size, cfg.seed, lengths)
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"config key 'task.batch_size': {error}") from None
