"""Word-level text plumbing shared by the language-modelling, NLI and dialogue tasks.

- `ensure_files`: the files a task reads, downloaded once into the data directory (a plain file or members
  of a zip archive) and checked against the digest their publisher or torchtext records, where the machine
  has a network; otherwise a one-line ConfigError saying where to put which file.
- `Vocabulary`: token <-> id, built from the training split only (frequency order, ties alphabetical, so
  it is the same on every machine); unseen tokens map to `<unk>`.
- `read_glove`: word vectors from a GloVe text file (`word v1 v2 ... vd` per line, as glove.840B.300d.txt),
  keeping only the words of a vocabulary.
"""

from __future__ import annotations

import collections
import hashlib
import re
import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from optimlab.errors import ConfigError
from optimlab.tasks.data import download_file

PAD, UNK = "<pad>", "<unk>"


@dataclass(frozen=True)
class Download:
    """Where a task's files come from: one URL, its digest, and (for a zip) which member is which file."""

    url: str
    algorithm: str  # "sha256", or "md5" where that is the only digest published (torchtext's records)
    digest: str
    members: dict[str, str] = field(default_factory=dict)  # file name -> member path in the zip; {} = plain file


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_files(folder: Path, names: list[str], downloads: list[Download], *, download: bool, what: str) -> list[Path]:
    """`folder/name` for each name; missing files are downloaded (and digest-checked) once when allowed.

    Files already in place are used as they are: a user may place their own copy (e.g. from a mirror).
    """
    folder = Path(folder)
    paths = [folder / name for name in names]
    missing = [path for path in paths if not path.exists()]
    if not missing:
        return paths
    sources = ", ".join(d.url for d in downloads) or "its publisher"
    if not download or not downloads:
        raise ConfigError(f"data file not found: {missing[0]}; place {what} there (from {sources})")
    for source in downloads:
        try:
            _fetch(folder, source)
        except OSError as error:
            raise ConfigError(
                f"data file not found: {missing[0]}, and downloading {source.url} failed ({error}); place {what} there"
            ) from None
    still = [path for path in paths if not path.exists()]
    if still:
        raise ConfigError(f"data file not found: {still[0]} (not in {sources}); place {what} there")
    return paths


def _fetch(folder: Path, source: Download) -> None:
    staging = folder / ".download"
    target = staging / source.url.rsplit("/", 1)[-1]
    staging.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        download_file(source.url, target)
    actual = file_digest(target, source.algorithm)
    if actual != source.digest:
        target.unlink()
        raise ConfigError(f"downloaded {source.url} has {source.algorithm} {actual}, expected {source.digest}")
    if not source.members:
        shutil.move(str(target), folder / target.name)
    else:
        with zipfile.ZipFile(target) as archive:
            for name, member in source.members.items():
                if member not in archive.namelist():
                    raise ConfigError(f"{source.url} has no member {member}")
                with archive.open(member) as src, open(folder / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        target.unlink()
    staging.rmdir()


# --------------------------------------------------------------------------------------------------------
# Tokens and vocabularies

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Words and single punctuation marks (for sentences that come untokenised: SNLI, MultiWoZ)."""
    return _TOKEN.findall(text.lower() if lowercase else text)


class Vocabulary:
    """Tokens in a fixed order; id 0 is the first special token."""

    def __init__(self, tokens: list[str]):
        self.tokens = list(tokens)
        self.index = {token: i for i, token in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("vocabulary tokens must be distinct")

    @classmethod
    def build(cls, counts: collections.Counter, specials: tuple[str, ...] = (PAD, UNK), min_count: int = 1):
        """Specials first, then tokens seen at least `min_count` times, most frequent first, ties by spelling."""
        kept = sorted(
            (t for t, c in counts.items() if c >= min_count and t not in specials), key=lambda t: (-counts[t], t)
        )
        return cls([*specials, *kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        unk = self.index[UNK]
        return np.fromiter((self.index.get(t, unk) for t in tokens), dtype=np.int64)


def pad_sequences(sequences: list[np.ndarray], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, longest) int64 padded with `pad`, and the (N,) lengths (at least 1: an empty text is one pad)."""
    lengths = np.array([max(len(s), 1) for s in sequences], dtype=np.int64)
    out = np.full((len(sequences), int(lengths.max(initial=1))), pad, dtype=np.int64)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = seq
    return torch.from_numpy(out), torch.from_numpy(lengths)


def read_glove(path: Path, vocabulary: Vocabulary, dim: int) -> tuple[torch.Tensor, int]:
    """(len(vocabulary), dim) float32 vectors from a GloVe text file, and how many words it covered.

    Words the file lacks keep a small random vector (seeded, so every run sees the same); the padding row
    is zero. Lines are `word v1 ... vd`; only lines whose first field is a vocabulary word are parsed, so the
    5.6 GB glove.840B file is read in one pass without splitting its 2.2M lines (a few of its words contain
    spaces; those never match a token and are skipped).
    """
    generator = np.random.default_rng(0)
    vectors = generator.normal(0.0, 0.1, size=(len(vocabulary), dim)).astype(np.float32)
    vectors[vocabulary.index[PAD]] = 0.0
    found = 0
    with open(path, encoding="utf-8", errors="replace") as file:
        for number, line in enumerate(file, 1):
            row = vocabulary.index.get(line[: line.find(" ")])
            if row is None:
                continue
            fields = line.rstrip("\n").rstrip(" ").split(" ")
            if len(fields) != dim + 1:
                raise ConfigError(f"GloVe file {path} line {number} has {len(fields) - 1} values, expected {dim}")
            vectors[row] = np.asarray(fields[1:], dtype=np.float32)
            found += 1
    return torch.from_numpy(vectors), found
