"""Tiny Shakespeare (Karpathy's char-rnn corpus, 1,115,394 characters): character-level language modelling.

The file is `data_dir/tinyshakespeare.txt`. If it is missing it is downloaded once from char-rnn's
repository (unless `download=false`); the file is always checked against its sha256, so a truncated or
different file is an error rather than a silently different task.

The vocabulary is the file's distinct characters (65; the file is ASCII, so characters are bytes). The text
is split by position, 90 / 5 / 5 % into train / val / test, and each part is cut into windows of `seq_len + 1`
characters: the input is the first `seq_len`, the target the last `seq_len` (next-character prediction).
Evaluation windows do not overlap; training windows start every `stride` characters (default `seq_len`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from optimlab.errors import ConfigError
from optimlab.tasks.base import Batch, Split, Task
from optimlab.tasks.common import model_factory
from optimlab.tasks.data import check_non_negative, check_positive, checked_file
from optimlab.tasks.models import LSTMLanguageModel
from optimlab.tasks.sequence import token_accuracy, token_loss

FILENAME = "tinyshakespeare.txt"
URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


@dataclass
class ShakespeareOptions:
    seq_len: int = 64  # characters per training sequence
    stride: Optional[int] = None  # start of one training window to the next (default seq_len: no overlap)
    download: bool = True  # download the file into the data directory if it is missing
    embedding_size: int = 64
    hidden: int = 128  # LSTM units per layer
    layers: int = 2
    dropout: float = 0.0


def load_text(data_dir: Path, download: bool = True) -> np.ndarray:
    """The corpus as uint8 codes (checked by sha256)."""
    path = checked_file(Path(data_dir) / FILENAME, SHA256, URL, download=download, what="Tiny Shakespeare")
    return np.frombuffer(path.read_bytes(), dtype=np.uint8)


def windows(tokens: np.ndarray, seq_len: int, stride: int) -> tuple[Tensor, Tensor]:
    """(inputs, targets), each (N, seq_len) int64, from windows of seq_len + 1 tokens every `stride`."""
    if len(tokens) < seq_len + 1:
        raise ConfigError(f"task option 'seq_len' ({seq_len}) is longer than a split of the text ({len(tokens)})")
    chunks = torch.as_tensor(tokens, dtype=torch.int64).unfold(0, seq_len + 1, stride)
    return chunks[:, :-1].contiguous(), chunks[:, 1:].contiguous()


def _loss(outputs: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
    return token_loss(outputs, batch[-1])


def _metrics(outputs: Tensor, batch: Batch) -> dict[str, tuple[Tensor, Tensor]]:
    return {"accuracy": token_accuracy(outputs, batch[-1])["accuracy"]}


def build(options: ShakespeareOptions, data_dir: Path) -> Task:
    check_positive(seq_len=options.seq_len, stride=options.stride, hidden=options.hidden, layers=options.layers)
    check_positive(embedding_size=options.embedding_size)
    check_non_negative(dropout=options.dropout)
    raw = load_text(data_dir, options.download)
    vocab = np.unique(raw)
    lookup = np.zeros(256, dtype=np.int64)
    lookup[vocab] = np.arange(len(vocab))
    tokens = lookup[raw]
    n = len(tokens)
    cut_val, cut_test = int(n * 0.9), int(n * 0.95)
    stride = options.stride or options.seq_len
    train = Split(windows(tokens[:cut_val], options.seq_len, stride))
    val = Split(windows(tokens[cut_val:cut_test], options.seq_len, options.seq_len))
    test = Split(windows(tokens[cut_test:], options.seq_len, options.seq_len))
    factory = model_factory(
        "shakespeare_lstm",
        lambda: LSTMLanguageModel(len(vocab), options.embedding_size, options.hidden, options.layers, options.dropout),
    )
    return Task(
        "shakespeare_lstm",
        train,
        val,
        test,
        factory(),
        loss=_loss,
        metrics=_metrics,
        main_metric="loss",
        higher_is_better=False,
        info={"vocab": bytes(vocab).decode("latin-1"), "vocab_size": len(vocab)},
        model_factory=factory,
    )
