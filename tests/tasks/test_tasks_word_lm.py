"""Word-level language modelling on small Penn Treebank and WikiText files in their real formats."""

import math

import pytest
import torch

from optimlab.errors import ConfigError
from optimlab.tasks import build_task
from optimlab.tasks.carried_state import CarriedState
from optimlab.tasks.models.word_lm import WordLanguageModel
from optimlab.tasks.word_lm import EOS

from tasks_text_writers import write_ptb, write_wikitext

SMALL = {"bptt": 5, "eval_lanes": 2, "embedding_size": 8, "hidden": 8, "layers": 2, "dropout": 0.0}


def expected_stream(lines, vocabulary):
    words = [w for line in lines for w in (*line, EOS)]
    return [vocabulary.index(w) if w in vocabulary else vocabulary.index("<unk>") for w in words]


@pytest.mark.parametrize(
    "name, folder, writer", [("ptb_lstm", "ptb", write_ptb), ("wikitext2_lstm", "wikitext-2", write_wikitext)]
)
def test_loader_reads_the_real_format(tmp_path, name, folder, writer):
    lines = writer(tmp_path / folder)
    task = build_task(name, {**SMALL, "download": False}, tmp_path)
    train_words = [w for line in lines["train"] for w in (*line, EOS)]
    assert task.info["vocab_size"] == len(set(train_words) | {"<unk>"})
    assert task.info["train_words"] == len(train_words)
    # Rebuild the vocabulary order (specials, then by frequency, ties alphabetical) independently.
    counts = {w: train_words.count(w) for w in set(train_words)}
    vocabulary = [EOS, "<unk>"] + sorted((w for w in counts if w not in (EOS, "<unk>")), key=lambda w: (-counts[w], w))
    stream = expected_stream(lines["train"], vocabulary)
    inputs, targets, keys = task.train.tensors
    assert inputs[0].tolist() == stream[:5] and targets[0].tolist() == stream[1:6]
    assert inputs[1].tolist() == stream[5:10] and keys.tolist() == list(range(len(keys)))
    assert len(keys) == (len(stream) - 1) // 5
    test = expected_stream(lines["test"], vocabulary)
    lane = (len(test) - 1) // 2
    assert task.test.tensors[0].shape == (2, lane)
    assert task.test.tensors[0][1].tolist() == test[lane : 2 * lane]
    assert task.test.tensors[1][1].tolist() == test[lane + 1 : 2 * lane + 1]
    if name == "ptb_lstm":
        assert vocabulary.index("<unk>") in task.test.tensors[0][0].tolist()  # 'zebra' was unseen
    # The second build reads the cached word streams and vocabulary: the same task.
    assert len(list((tmp_path / f"{folder}-words").glob("*.npz"))) == 1
    again = build_task(name, {**SMALL, "download": False}, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again.train.tensors, task.train.tensors))
    assert again.info["vocab_size"] == task.info["vocab_size"]


def test_missing_files_are_a_config_error_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match="ptb.train.txt"):
        build_task("ptb_lstm", {**SMALL, "download": False}, tmp_path)
    with pytest.raises(ConfigError, match="downloading"):  # the tests refuse network access
        build_task("wikitext103_lstm", SMALL, tmp_path)


def test_tied_weights_share_the_matrix_and_need_equal_sizes(tmp_path):
    write_ptb(tmp_path / "ptb")
    task = build_task("ptb_lstm", {**SMALL, "tie_weights": True, "download": False}, tmp_path)
    assert task.model.readout.weight is task.model.embedding.weight
    with pytest.raises(ConfigError, match="tie_weights"):
        build_task("ptb_lstm", {**SMALL, "tie_weights": True, "hidden": 6, "download": False}, tmp_path)


def test_perplexity_is_exp_of_the_mean_token_loss(tmp_path):
    from optimlab.train.evaluate import evaluate

    write_ptb(tmp_path / "ptb")
    task = build_task("ptb_lstm", {**SMALL, "download": False}, tmp_path)
    values = evaluate(
        task.model, task, task.val, 100, None, torch.device("cpu"), torch.optim.SGD(task.model.parameters()), "val"
    )
    assert values["val/perplexity"] == pytest.approx(math.exp(values["val/loss"]), rel=1e-12)
    # A fresh model is close to uniform over the vocabulary.
    assert values["val/perplexity"] == pytest.approx(task.info["vocab_size"], rel=0.2)


def test_chunked_readout_equals_whole_cross_entropy(monkeypatch):
    torch.manual_seed(0)
    model = WordLanguageModel(11, 6, 6, 1, 0.0, tie_weights=True).eval()
    tokens, targets = torch.randint(0, 11, (3, 17)), torch.randint(0, 11, (3, 17))
    whole, _ = model(tokens, targets)
    monkeypatch.setattr("optimlab.tasks.models.word_lm._LOGITS_PER_CHUNK", 11 * 3 * 4)  # 4 positions at a time
    chunked, _ = model(tokens, targets)
    features, _ = model.lstm(model.embedding(tokens))
    reference = torch.nn.functional.cross_entropy(model.readout(features).transpose(1, 2), targets, reduction="none")
    torch.testing.assert_close(chunked, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(whole, reference, rtol=0, atol=1e-6)


def test_carried_state_continues_the_stream_exactly():
    """Two consecutive windows with the carried state score the same as one window of twice the length."""
    torch.manual_seed(0)
    model = WordLanguageModel(13, 6, 6, 2, 0.0)
    stream = torch.randint(0, 13, (2, 21))
    whole, _ = model(stream[:, :20], stream[:, 1:21], torch.tensor([-1, -1]))
    keys = torch.tensor([0, 7])
    first, _ = model(stream[:, :10], stream[:, 1:11], keys)
    model.carried.commit()
    second, _ = model(stream[:, 10:20], stream[:, 11:21], keys + 1)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=1e-6)
    # A row whose predecessor was not stored starts from zeros.
    model.carried.commit()
    fresh, _ = model(stream[:, 10:20], stream[:, 11:21], torch.tensor([100, 101]))
    zero, _ = model(stream[:, 10:20], stream[:, 11:21], torch.tensor([-1, -1]))
    torch.testing.assert_close(fresh, zero)


def test_carried_state_merges_microbatch_writes_and_round_trips():
    store = CarriedState()
    h = torch.arange(12.0).view(1, 6, 2)
    store.write(torch.tensor([3, 1, -1]), (h[:, :3],))
    store.write(torch.tensor([5, 3]), (h[:, 3:5],))  # key 3 written again: the last write wins
    saved = store.state_dict()
    store.commit()
    assert store.keys.tolist() == [1, 3, 5]
    torch.testing.assert_close(store.values[0][0], torch.stack([h[0, 1], h[0, 4], h[0, 3]]))
    other = CarriedState()
    other.load_state_dict(saved)
    other.commit()
    assert other.keys.tolist() == [1, 3, 5] and torch.equal(other.values[0], store.values[0])
    zeros = (torch.zeros(1, 2, 2),)
    read = store.read(torch.tensor([5, 2]), zeros)[0]
    assert torch.equal(read[0, 0], h[0, 3]) and torch.equal(read[0, 1], torch.zeros(2))


def test_download_checks_the_digest_and_extracts_the_members(tmp_path, monkeypatch):
    """`ensure_files` with the network replaced by a local copy: digest check, zip members, a bad digest."""
    import hashlib
    import shutil
    import zipfile

    from optimlab.tasks.text import Download, ensure_files

    served = tmp_path / "served"
    write_wikitext(served / "wikitext-2")
    archive = tmp_path / "wikitext-2-v1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"):
            zf.write(served / "wikitext-2" / name, f"wikitext-2/{name}")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    fetched = []
    monkeypatch.setattr(
        "optimlab.tasks.text.download_file", lambda url, path: (fetched.append(url), shutil.copy(archive, path))
    )
    names = ["wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"]
    members = {n: f"wikitext-2/{n}" for n in names}
    source = Download("https://example.org/wikitext-2-v1.zip", "md5", md5, members)
    paths = ensure_files(tmp_path / "data" / "wikitext-2", names, [source], download=True, what="WikiText-2")
    assert [p.read_bytes() for p in paths] == [(served / "wikitext-2" / n).read_bytes() for n in names]
    assert not (tmp_path / "data" / "wikitext-2" / ".download").exists()
    ensure_files(tmp_path / "data" / "wikitext-2", names, [source], download=True, what="WikiText-2")
    assert len(fetched) == 1  # downloaded once
    wrong = Download(source.url, "md5", "0" * 32, members)
    with pytest.raises(ConfigError, match="expected 0000"):
        ensure_files(tmp_path / "other", names, [wrong], download=True, what="WikiText-2")
    assert not list((tmp_path / "other" / ".download").glob("*.zip"))  # the bad file is not kept
