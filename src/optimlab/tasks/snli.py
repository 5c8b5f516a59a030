"""Natural language inference on SNLI (Bowman et al. 2015) with the three encoder families of InferSent.

Data: `data_dir/snli_1.0/snli_1.0_{train,dev,test}.jsonl`, the jsonl files of the SNLI 1.0 release (one JSON
object per line; the fields read are `sentence1` (premise), `sentence2` (hypothesis) and `gold_label`;
pairs whose gold label is `-`, where the annotators did not agree, are dropped, as is standard). Missing
files are downloaded once from nlp.stanford.edu (`snli_1.0.zip`, sha256-checked) when allowed.

Sentences are tokenised into words and punctuation (case kept by default: GloVe 840B is cased). The
vocabulary is the training split's words seen at least `min_count` times; other words map to `<unk>`.
Word vectors come from a GloVe text file in the data directory when present (`task.glove`, default
`glove.840B.300d.txt`: `word v1 ... v300` per line; only the vocabulary's words are read) and are frozen by
default, as InferSent's are; without the file the embeddings are learned (`info["embeddings"]` says which).

`snli_lstm`, `snli_infersent`, `snli_convnet`: the pair classifier of Conneau et al. 2017 (arXiv:1705.02364)
with a unidirectional LSTM (last state), a max-pooled BiLSTM, or the hierarchical ConvNet as the sentence
encoder. Metric: accuracy. Each split holds (premise, premise length, hypothesis, hypothesis length,
label); `lengths` (the longer sentence of each pair) enables `train.length_bucketing`.
"""

from __future__ import annotations

import collections
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from optimlab.errors import ConfigError
from optimlab.tasks.base import Split, Task
from optimlab.tasks.common import model_factory
from optimlab.tasks.data import cached_arrays, check_non_negative, check_positive
from optimlab.tasks.models.sentence_encoders import Embedding, PairClassifier, SentenceEncoder
from optimlab.tasks.text import Download, Vocabulary, ensure_files, pad_sequences, read_glove, tokenize

LABELS = ("entailment", "neutral", "contradiction")
FOLDER = "snli_1.0"
FILES = ("snli_1.0_train.jsonl", "snli_1.0_dev.jsonl", "snli_1.0_test.jsonl")
DOWNLOAD = Download(
    "https://nlp.stanford.edu/projects/snli/snli_1.0.zip", "sha256",
    "afb3d70a5af5d8de0d9d81e2637e0fb8c22d1235c2749d83125ca43dab0dbd3e", {f: f"snli_1.0/{f}" for f in FILES},
)  # fmt: skip


@dataclass
class SNLIOptions:
    glove: str = "glove.840B.300d.txt"  # word vectors in the data directory, used when the file exists
    freeze_embeddings: bool = True  # with GloVe vectors: keep them fixed (InferSent)
    embedding_size: int = 300  # learned embeddings (without GloVe); with GloVe, the file's dimension is used
    hidden: int = 2048  # LSTM units (per direction) or ConvNet channels per layer
    mlp_hidden: int = 512
    dropout: float = 0.0
    min_count: int = 1  # training-split occurrences for a word to enter the vocabulary
    lowercase: bool = False
    train_samples: Optional[int] = None  # keep only the first that many training pairs
    download: bool = True


def read_snli(path: Path) -> list[tuple[str, str, int]]:
    """(premise, hypothesis, label id) of every pair with a gold label."""
    pairs = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                label = record["gold_label"]
                if label == "-":
                    continue
                pairs.append((record["sentence1"], record["sentence2"], LABELS.index(label)))
            except (ValueError, KeyError) as error:
                raise ConfigError(f"{path} line {number} is not an SNLI record ({error})") from None
    return pairs


def glove_dimension(path: Path) -> int:
    with open(path, encoding="utf-8", errors="replace") as file:
        first = file.readline().rstrip("\n").rstrip(" ").split(" ")
    # glove.840B has a few words containing spaces; the first line is a plain word in every release.
    if len(first) < 2:
        raise ConfigError(f"GloVe file {path} does not start with a 'word v1 ... vd' line")
    return len(first) - 1


def glove_subset(data_dir: Path, path: Path, vocabulary: Vocabulary, dim: int) -> tuple[torch.Tensor, int]:
    """The vocabulary's GloVe vectors, read once and cached (`glove-subsets/<hash>.npz`)."""
    stat = path.stat()
    key = {"file": path.name, "size": stat.st_size, "mtime": stat.st_mtime_ns, "dim": dim,
           "vocabulary": hashlib.sha256("\n".join(vocabulary.tokens).encode()).hexdigest()}  # fmt: skip

    def make() -> dict[str, np.ndarray]:
        vectors, covered = read_glove(path, vocabulary, dim)
        return {"vectors": vectors.numpy(), "covered": np.array(covered)}

    arrays = cached_arrays(data_dir, "glove-subsets", key, make)
    return torch.from_numpy(arrays["vectors"]), int(arrays["covered"])


def build_snli(name: str, encoder: str, options: SNLIOptions, data_dir: Path) -> Task:
    check_positive(hidden=options.hidden, mlp_hidden=options.mlp_hidden, embedding_size=options.embedding_size)
    check_positive(min_count=options.min_count, train_samples=options.train_samples)
    check_non_negative(dropout=options.dropout)
    paths = ensure_files(
        Path(data_dir) / FOLDER, list(FILES), [DOWNLOAD], download=options.download, what="the SNLI 1.0 jsonl files"
    )
    splits = [read_snli(path) for path in paths]
    if options.train_samples is not None:
        splits[0] = splits[0][: options.train_samples]
    tokenized = [[(tokenize(p, options.lowercase), tokenize(h, options.lowercase), y) for p, h, y in s] for s in splits]
    counts = collections.Counter(w for p, h, _ in tokenized[0] for w in (*p, *h))
    vocabulary = Vocabulary.build(counts, min_count=options.min_count)

    glove_path = Path(data_dir) / options.glove
    vectors, size, covered = None, options.embedding_size, 0
    if options.glove and glove_path.is_file():
        size = glove_dimension(glove_path)
        vectors, covered = glove_subset(data_dir, glove_path, vocabulary, size)

    def split(pairs) -> Split:
        premise, premise_lengths = pad_sequences([vocabulary.encode(p) for p, _, _ in pairs])
        hypothesis, hypothesis_lengths = pad_sequences([vocabulary.encode(h) for _, h, _ in pairs])
        labels = torch.tensor([y for _, _, y in pairs], dtype=torch.int64)
        if not len(labels):
            raise ConfigError(f"an SNLI split has no pairs with a gold label ({paths[0].parent})")
        # Both sentences are padded along dim 1; a batch is trimmed to the longer of its sentences.
        width = max(premise.shape[1], hypothesis.shape[1])
        premise = torch.nn.functional.pad(premise, (0, width - premise.shape[1]))
        hypothesis = torch.nn.functional.pad(hypothesis, (0, width - hypothesis.shape[1]))
        lengths = torch.maximum(premise_lengths, hypothesis_lengths)
        return Split((premise, premise_lengths, hypothesis, hypothesis_lengths, labels), lengths, padded=(0, 2))

    train, val, test = (split(s) for s in tokenized)

    def model():
        embedding = Embedding(len(vocabulary), size, vectors, options.freeze_embeddings)
        return PairClassifier(
            embedding, SentenceEncoder(encoder, size, options.hidden), 3, options.mlp_hidden, options.dropout
        )

    info = {
        "vocab_size": len(vocabulary), "labels": list(LABELS), "encoder": encoder,
        "embeddings": f"glove ({covered} of {len(vocabulary)} words from {glove_path.name})" if vectors is not None else "learned",
    }  # fmt: skip
    factory = model_factory(name, model)
    return Task(name, train, val, test, factory(), info=info, model_factory=factory)


def build_lstm(options: SNLIOptions, data_dir: Path) -> Task:
    return build_snli("snli_lstm", "lstm", options, data_dir)


def build_infersent(options: SNLIOptions, data_dir: Path) -> Task:
    return build_snli("snli_infersent", "infersent", options, data_dir)


def build_convnet(options: SNLIOptions, data_dir: Path) -> Task:
    return build_snli("snli_convnet", "convnet", options, data_dir)
