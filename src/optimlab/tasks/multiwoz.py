"""Dialogue: the domain of each user turn of MultiWOZ (Budzianowski et al. 2018), Bi-LSTM or RoBERTa-base.

Target: every user turn is labelled with the domain of its dialogue acts (`dialog_act` keys are
`Domain-Act`, e.g. `Restaurant-Inform`; the label is the domain most of the turn's acts name, ties to the
first act's): attraction, booking, general, hospital, hotel, police, restaurant, taxi or train; turns without
acts are dropped. This is the per-turn domain classification that dialogue-act and state-tracking models
start from; the input is the previous system utterance, a `<usr>` marker, then the user utterance
(`task.context=false`: the user utterance alone). Metric: accuracy.

Data: `data_dir/multiwoz/data.json` with `valListFile.txt` and `testListFile.txt` beside it (the MultiWOZ 2.1+
release, github.com/budzianowski/multiwoz: data.json maps dialogue ids to {"log": [turn, ...]}, user and
system turns alternating, each with `text` and `dialog_act`; the list files hold the validation and test
dialogue ids, one per line, `.json` names accepted too as in 2.0). Every other dialogue is training data.
The release has no stable single-file URL with a published checksum, so the files are not downloaded: the
error names the files to place.

- `multiwoz_bilstm`: words (vocabulary of the training split), a max-pooled bidirectional LSTM and a linear
  readout; `length_bucketing` applies.
- `multiwoz_roberta`: RoBERTa-base (Liu et al. 2019) with a classification head, through the `transformers`
  library (`pip install 'optimlab[nlp]'`), loaded from a local folder (`task.roberta_path`, default
  `data_dir/roberta-base`: the output of `save_pretrained`, i.e. config.json, the weights, vocab.json and
  merges.txt); nothing is downloaded.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from optimlab.errors import ConfigError
from optimlab.tasks.base import Split, Task
from optimlab.tasks.common import model_factory
from optimlab.tasks.data import check_non_negative, check_positive
from optimlab.tasks.models.sentence_encoders import BiLSTMClassifier
from optimlab.tasks.text import Vocabulary, pad_sequences, tokenize

DOMAINS = ("attraction", "booking", "general", "hospital", "hotel", "police", "restaurant", "taxi", "train")
USER_MARK = "<usr>"


@dataclass
class MultiWOZOptions:
    context: bool = True  # prepend the previous system utterance
    embedding_size: int = 300  # multiwoz_bilstm
    hidden: int = 256  # multiwoz_bilstm: LSTM units per direction
    dropout: float = 0.1
    roberta_path: Optional[str] = (
        None  # multiwoz_roberta: a local save_pretrained folder (default data_dir/roberta-base)
    )
    max_tokens: int = 128  # multiwoz_roberta: subword tokens per input (longer inputs keep their end)


def turn_domain(acts: dict) -> str | None:
    """The domain most of a turn's acts name (ties: the first act's), lower case; None without acts."""
    domains = [key.split("-", 1)[0].lower() for key in acts]
    domains = [d for d in domains if d in DOMAINS]
    if not domains:
        return None
    counts = collections.Counter(domains)
    best = max(counts.values())
    return next(d for d in domains if counts[d] == best)


def read_multiwoz(folder: Path, context: bool) -> list[list[tuple[str, str, int]]]:
    """Train, val, test lists of (system context, user text, domain id)."""
    data_path = folder / "data.json"
    lists = {}
    for split in ("val", "test"):
        found = [folder / f"{split}ListFile{suffix}" for suffix in (".txt", ".json")]
        path = next((p for p in found if p.exists()), None)
        if path is None:
            raise ConfigError(f"data file not found: {found[0]}; place the MultiWOZ 2.1 release files there")
        lists[split] = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    if not data_path.exists():
        raise ConfigError(f"data file not found: {data_path}; place the MultiWOZ 2.1 data.json there")
    try:
        dialogues = json.loads(data_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ConfigError(f"{data_path} is not valid JSON ({error})") from None
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for dialogue_id in sorted(dialogues):
        split = "val" if dialogue_id in lists["val"] else "test" if dialogue_id in lists["test"] else "train"
        log = dialogues[dialogue_id].get("log", [])
        for index in range(0, len(log), 2):  # user turns are the even ones
            turn = log[index]
            domain = turn_domain(turn.get("dialog_act") or {})
            if domain is None:
                continue
            system = log[index - 1]["text"] if context and index > 0 else ""
            splits[split].append((system, turn["text"], DOMAINS.index(domain)))
    for split, turns in splits.items():
        if not turns:
            raise ConfigError(f"MultiWOZ {split} split in {folder} has no user turns with dialogue acts")
    return [splits["train"], splits["val"], splits["test"]]


def build_bilstm(options: MultiWOZOptions, data_dir: Path) -> Task:
    check_positive(embedding_size=options.embedding_size, hidden=options.hidden)
    check_non_negative(dropout=options.dropout)
    splits = read_multiwoz(Path(data_dir) / "multiwoz", options.context)
    words = [
        [(*tokenize(s), USER_MARK, *tokenize(u)) if s else (USER_MARK, *tokenize(u)) for s, u, _ in t] for t in splits
    ]
    vocabulary = Vocabulary.build(collections.Counter(w for turn in words[0] for w in turn))

    def split(turns, labels) -> Split:
        tokens, lengths = pad_sequences([vocabulary.encode(t) for t in turns])
        return Split((tokens, lengths, torch.tensor([y for *_, y in labels])), lengths, padded=(0,))

    train, val, test = (split(w, s) for w, s in zip(words, splits))
    factory = model_factory(
        "multiwoz_bilstm",
        lambda: BiLSTMClassifier(
            len(vocabulary), options.embedding_size, options.hidden, len(DOMAINS), options.dropout
        ),
    )
    info = {"vocab_size": len(vocabulary), "labels": list(DOMAINS)}
    return Task("multiwoz_bilstm", train, val, test, factory(), info=info, model_factory=factory)


class RobertaClassifier(nn.Module):
    """Logits for (token ids, lengths) from a `transformers` sequence-classification model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
        return self.model(input_ids=ids, attention_mask=mask.long()).logits


def load_roberta(path: Path, classes: int):
    """(tokenizer, model factory) from a local folder; a ConfigError saying what is needed otherwise.

    The factory loads the pretrained weights each time and draws the new classification head from torch's
    generator, so `Task.new_model(seed)` gives the pretrained encoder with a seeded head.
    """
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "task 'multiwoz_roberta' needs the transformers library: pip install 'optimlab[nlp]'"
        ) from None
    needs = f"RoBERTa-base saved with save_pretrained (config.json, weights, vocab.json, merges.txt) in {path}; set task.roberta_path"
    if not (path / "config.json").is_file():
        raise ConfigError(f"task 'multiwoz_roberta' needs {needs}")

    def load(what: str):
        try:
            if what == "tokenizer":
                return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            return transformers.AutoModelForSequenceClassification.from_pretrained(
                str(path), num_labels=classes, local_files_only=True
            )
        except (OSError, ValueError) as error:
            reason = str(error).splitlines()[0]
            raise ConfigError(
                f"task 'multiwoz_roberta' cannot load its {what} from {path} ({reason}); it needs {needs}"
            ) from None

    return load("tokenizer"), lambda: RobertaClassifier(load("model"))


def build_roberta(options: MultiWOZOptions, data_dir: Path) -> Task:
    check_positive(max_tokens=options.max_tokens)
    splits = read_multiwoz(Path(data_dir) / "multiwoz", options.context)
    path = Path(options.roberta_path).expanduser() if options.roberta_path else Path(data_dir) / "roberta-base"
    tokenizer, roberta = load_roberta(path, len(DOMAINS))

    def split(turns) -> Split:
        users = [u for _, u, _ in turns]
        if options.context:  # a sentence pair: <s> system </s></s> user </s>, the longer one truncated first
            encoded = tokenizer(
                [s for s, _, _ in turns], users, truncation="longest_first", max_length=options.max_tokens
            )
        else:
            encoded = tokenizer(users, truncation=True, max_length=options.max_tokens)
        encoded = encoded["input_ids"]
        tokens, lengths = pad_sequences([np.asarray(e, dtype=np.int64) for e in encoded], pad=tokenizer.pad_token_id)
        return Split((tokens, lengths, torch.tensor([y for *_, y in turns])), lengths, padded=(0,))

    train, val, test = (split(t) for t in splits)
    factory = model_factory("multiwoz_roberta", roberta)
    info = {"labels": list(DOMAINS), "roberta_path": str(path)}
    return Task("multiwoz_roberta", train, val, test, factory(), info=info, model_factory=factory)
