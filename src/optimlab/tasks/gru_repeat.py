"""The GRU repeat (copy) task of Csordás et al. 2024 (experiment-framework spec §2.1-2.2), generated locally.

A sample is a random string of L symbols (L uniform in {min_len..max_len}, default 2..9; 30 symbols); the
target is the same string. The model (`models/gru_repeat.py`) encodes it with a GRU and decodes it with the
same GRU, teacher-forced (or from a constant NO_INPUT token with `no_input=true`).

Batches are (inputs, lengths, targets): inputs and targets (N, max_len) int64 padded at the end with
`PAD = 0` (a real symbol id; padding is masked by `lengths`, never by value). The splits carry `lengths`
and `padded=(0, 2)`, so the trainer can bucket by length and trim each batch to its longest string.

As in the original, strings are unique (`unique=true`): test strings are drawn first, then validation
strings not in test, then training strings in neither, so evaluation measures generalisation to unseen
strings. Deduplication removes repeats after lengths are drawn uniformly, which makes the shortest lengths
rarer when there are few distinct strings of that length (30^2 = 900 of length 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from optimlab.errors import ConfigError
from optimlab.tasks.base import Batch, Split, Task
from optimlab.tasks.common import model_factory
from optimlab.tasks.data import cached_arrays, check_positive, rng
from optimlab.tasks.models import GRURepeat
from optimlab.tasks.sequence import length_mask, token_accuracy, token_loss

PAD = 0


@dataclass
class GRURepeatOptions:
    symbols: int = 30  # alphabet size (the original task's default)
    min_len: int = 2  # string lengths are uniform in {min_len..max_len} (before deduplication)
    max_len: int = 9
    with_repeats: bool = True  # false: the symbols of a string are distinct
    unique: bool = True  # no string appears twice, in a split or across splits
    train_samples: int = 20000
    val_samples: int = 1000
    test_samples: int = 1000
    data_seed: int = 0
    state_size: int = 128  # GRU hidden size (the paper sweeps 48..1024)
    embedding_size: int = 64
    no_input: bool = False  # decoder input: false = SOS + previous targets (teacher forcing); true = NO_INPUT


def _draw(g: np.random.Generator, n: int, options: GRURepeatOptions) -> tuple[np.ndarray, np.ndarray]:
    lengths = g.integers(options.min_len, options.max_len + 1, size=n)
    if options.with_repeats:
        strings = g.integers(0, options.symbols, size=(n, options.max_len))
    else:  # distinct symbols: the first max_len entries of a random permutation per row
        strings = np.argsort(g.random((n, options.symbols)), axis=1)[:, : options.max_len]
    strings[np.arange(options.max_len)[None, :] >= lengths[:, None]] = PAD
    return strings.astype(np.int64), lengths.astype(np.int64)


def _split(g: np.random.Generator, n: int, options: GRURepeatOptions, seen: set[bytes]) -> dict[str, np.ndarray]:
    """n strings; with `unique`, none in `seen` and no two equal (and `seen` is updated)."""
    if not options.unique:
        strings, lengths = _draw(g, n, options)
        return {"strings": strings, "lengths": lengths}
    kept_strings, kept_lengths, have = [], [], 0
    for _ in range(100):
        strings, lengths = _draw(g, max(64, int((n - have) * 1.2)), options)
        keep = np.zeros(len(strings), dtype=bool)
        for i, row in enumerate(strings):  # the key includes the length: "0" and "00" differ
            key = row[: lengths[i]].tobytes()
            if key not in seen:
                seen.add(key)
                keep[i] = True
                have += 1
                if have == n:
                    break
        kept_strings.append(strings[keep])
        kept_lengths.append(lengths[keep])
        if have == n:
            return {"strings": np.concatenate(kept_strings), "lengths": np.concatenate(kept_lengths)}
    raise ConfigError(
        f"cannot draw {n} distinct strings of lengths {options.min_len}..{options.max_len} over "
        f"{options.symbols} symbols; use fewer samples, longer strings or unique=false"
    )


def generate(options: GRURepeatOptions) -> dict[str, np.ndarray]:
    seen: set[bytes] = set()
    data = {}
    # Test first, then validation: the evaluation sets do not depend on the training set size.
    for stream, split in enumerate(("test", "val", "train"), start=1):
        n = getattr(options, f"{split}_samples")
        part = _split(rng(options.data_seed, stream), n, options, seen)
        data.update({f"{split}_{key}": value for key, value in part.items()})
    return data


def _check(options: GRURepeatOptions) -> None:
    check_positive(
        symbols=options.symbols, min_len=options.min_len, train_samples=options.train_samples,
        val_samples=options.val_samples, test_samples=options.test_samples, state_size=options.state_size,
        embedding_size=options.embedding_size,
    )  # fmt: skip
    if options.max_len < options.min_len:
        raise ConfigError(f"task option 'max_len' ({options.max_len}) must be >= 'min_len' ({options.min_len})")
    if not options.with_repeats and options.max_len > options.symbols:
        raise ConfigError(f"strings without repeats cannot be longer than 'symbols' ({options.symbols})")


def _forward(model: torch.nn.Module, batch: Batch) -> Tensor:
    inputs, lengths, targets = batch
    return model(inputs, lengths, targets)


def _loss(outputs: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
    _, lengths, targets = batch
    return token_loss(outputs, targets, length_mask(lengths, targets.shape[1], outputs.device))


def _metrics(outputs: Tensor, batch: Batch) -> dict[str, tuple[Tensor, Tensor]]:
    _, lengths, targets = batch
    return token_accuracy(outputs, targets, length_mask(lengths, targets.shape[1], outputs.device))


def build(options: GRURepeatOptions, data_dir: Path) -> Task:
    _check(options)
    args = {k: v for k, v in vars(options).items() if k not in ("state_size", "embedding_size", "no_input")}
    # Small sets generate in milliseconds; cache only the large ones.
    total = options.train_samples + options.val_samples + options.test_samples
    if total > 100_000:
        data = cached_arrays(data_dir, "gru_repeat", args, lambda: generate(options))
    else:
        data = generate(options)

    def split(name: str) -> Split:
        strings = torch.as_tensor(data[f"{name}_strings"])
        lengths = torch.as_tensor(data[f"{name}_lengths"])
        # The target is the input (a pure copy); they share storage, which is safe since nothing writes to it.
        return Split((strings, lengths, strings), lengths=lengths, padded=(0, 2))

    factory = model_factory(
        "gru_repeat", lambda: GRURepeat(options.symbols, options.state_size, options.embedding_size, options.no_input)
    )
    return Task(
        "gru_repeat",
        split("train"),
        split("val"),
        split("test"),
        factory(),
        loss=_loss,
        metrics=_metrics,
        forward=_forward,
        main_metric="sequence_accuracy",
        info={"symbols": options.symbols, "sos": options.symbols, "no_input_token": options.symbols + 1},
        model_factory=factory,
    )
