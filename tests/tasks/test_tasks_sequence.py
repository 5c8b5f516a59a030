"""Sequence tasks: GRU repeat (generation, padding, trimming, masking) and Tiny Shakespeare (file checks)."""

from __future__ import annotations

import io
import shutil

import pytest
import torch

from conftest import SHAKESPEARE, needs_shakespeare
from optimlab.errors import ConfigError
from optimlab.tasks import build_task
from optimlab.tasks.shakespeare import SHA256

SMALL = {"train_samples": 2000, "val_samples": 200, "test_samples": 200, "state_size": 16, "embedding_size": 8}


@pytest.fixture(scope="module")
def repeat_task(tmp_path_factory):
    torch.manual_seed(0)
    return build_task("gru_repeat", SMALL, tmp_path_factory.mktemp("gru"))


def _strings(split) -> list[tuple[int, ...]]:
    x, lengths = split.tensors[0], split.lengths
    return [tuple(row[:n].tolist()) for row, n in zip(x, lengths)]


def test_repeat_data_layout(repeat_task):
    for split in (repeat_task.train, repeat_task.val, repeat_task.test):
        x, lengths, y = split.tensors
        assert split.padded == (0, 2) and torch.equal(split.lengths, lengths)
        assert x.dtype == y.dtype == torch.int64 and x.shape[1] == 9
        assert torch.equal(x, y)  # a pure copy
        assert lengths.min() >= 2 and lengths.max() <= 9
        assert set(lengths.unique().tolist()) == set(range(2, 10))
        beyond = torch.arange(9)[None, :] >= lengths[:, None]
        assert (x[beyond] == 0).all()  # padding at the end
        assert x.min() >= 0 and x.max() < 30
    assert (len(repeat_task.train), len(repeat_task.val), len(repeat_task.test)) == (2000, 200, 200)


def test_repeat_strings_are_unique_within_and_across_splits(repeat_task):
    train, val, test = (_strings(s) for s in (repeat_task.train, repeat_task.val, repeat_task.test))
    assert len(set(train)) == len(train) and len(set(val)) == len(val) and len(set(test)) == len(test)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)


def test_repeat_data_is_deterministic_and_eval_sets_do_not_depend_on_train_size(repeat_task, tmp_path):
    torch.manual_seed(123)
    again = build_task("gru_repeat", SMALL, tmp_path)
    for a, b in zip(repeat_task.train.tensors + repeat_task.val.tensors, again.train.tensors + again.val.tensors):
        assert torch.equal(a, b)
    bigger = build_task("gru_repeat", {**SMALL, "train_samples": 3000}, tmp_path)
    assert _strings(bigger.val) == _strings(repeat_task.val) and _strings(bigger.test) == _strings(repeat_task.test)
    other = build_task("gru_repeat", {**SMALL, "data_seed": 1}, tmp_path)
    assert _strings(other.val) != _strings(repeat_task.val)


def test_repeat_batches_are_trimmed_and_loss_ignores_padding(repeat_task):
    split = repeat_task.train
    short = torch.nonzero(split.lengths <= 4).flatten()[:16]
    batch = split.batch(short)
    assert batch[0].shape[1] == int(split.lengths[short].max()) <= 4 and batch[2].shape == batch[0].shape
    # The same samples untrimmed (full width, more padding) give the same loss and count.
    full = tuple(t[short] for t in split.tensors)
    assert full[0].shape[1] == 9
    model = repeat_task.model.eval()
    with torch.no_grad():
        trimmed_sum, trimmed_count = repeat_task.loss(repeat_task.forward(model, batch), batch)
        full_sum, full_count = repeat_task.loss(repeat_task.forward(model, full), full)
    assert int(trimmed_count) == int(full_count) == int(split.lengths[short].sum())
    torch.testing.assert_close(trimmed_sum, full_sum)


def test_repeat_metrics_count_tokens_and_exact_sequences(repeat_task):
    batch = repeat_task.val.batch(torch.arange(8))
    _, lengths, targets = batch
    perfect = torch.nn.functional.one_hot(targets, 30).float() * 20
    # Wrong predictions at padding positions must not count.
    perfect[:, :, 0] += 40 * (torch.arange(targets.shape[1])[None, :] >= lengths[:, None])
    metrics = repeat_task.metrics(perfect, batch)
    assert metrics["accuracy"] == (lengths.sum(), lengths.sum())
    assert [int(v) for v in metrics["sequence_accuracy"]] == [8, 8]
    # One wrong symbol in sample 0: one token and one sequence wrong.
    wrong = perfect.clone()
    wrong[0, 0] = torch.nn.functional.one_hot((targets[0, 0] + 1) % 30, 30).float() * 20
    metrics = repeat_task.metrics(wrong, batch)
    assert int(metrics["accuracy"][0]) == int(lengths.sum()) - 1
    assert int(metrics["sequence_accuracy"][0]) == 7
    assert repeat_task.main_metric == "sequence_accuracy" and repeat_task.higher_is_better


def test_repeat_loss_is_token_cross_entropy(repeat_task):
    batch = repeat_task.val.batch(torch.arange(5))
    _, lengths, targets = batch
    logits = torch.randn(*targets.shape, 30)
    total, count = repeat_task.loss(logits, batch)
    expected = sum(
        torch.nn.functional.cross_entropy(logits[i, : lengths[i]], targets[i, : lengths[i]], reduction="sum")
        for i in range(5)
    )
    torch.testing.assert_close(total, expected)
    assert int(count) == int(lengths.sum())


def test_repeat_variants(tmp_path):
    distinct = build_task("gru_repeat", {**SMALL, "with_repeats": False}, tmp_path)
    assert all(len(set(s)) == len(s) for s in _strings(distinct.train))
    lengths = build_task("gru_repeat", {**SMALL, "min_len": 5, "max_len": 5}, tmp_path).train.lengths
    assert set(lengths.tolist()) == {5}
    assert build_task("gru_repeat", {**SMALL, "no_input": True}, tmp_path).model.no_input
    duplicates = build_task("gru_repeat", {**SMALL, "unique": False, "min_len": 1, "max_len": 1}, tmp_path)
    assert len(set(_strings(duplicates.train))) == 30


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"symbols": 2, "min_len": 2, "max_len": 2}, "distinct strings"),
        ({"min_len": 5, "max_len": 4}, "max_len"),
        ({"with_repeats": False, "symbols": 5, "max_len": 6}, "repeats"),
        ({"state_size": 0}, "state_size"),
    ],
)
def test_repeat_bad_options(options, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        build_task("gru_repeat", {**SMALL, **options}, tmp_path)


# --------------------------------------------------------------------------------------------------------
# Tiny Shakespeare

TINY_LM = {"hidden": 16, "layers": 1, "embedding_size": 8, "download": False}


@needs_shakespeare
def test_shakespeare_builds_from_the_shared_file():
    task = build_task("shakespeare_lstm", TINY_LM, SHAKESPEARE.parent)
    text = SHAKESPEARE.read_bytes()
    vocab = sorted(set(text))
    assert task.info["vocab_size"] == len(vocab) == 65
    n = len(text)
    assert len(task.train) == (int(0.9 * n) - 65) // 64 + 1
    x, y = task.train.tensors
    assert x.shape[1] == y.shape[1] == 64 and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(x[1:, 0], y[:-1, -1])  # next character
    decoded = bytes(vocab[i] for i in x[0].tolist())
    assert decoded == text[:64]
    # val and test come after train in the text, and do not overlap it.
    val_first = bytes(vocab[i] for i in task.val.tensors[0][0].tolist())
    assert val_first == text[int(0.9 * n) : int(0.9 * n) + 64]
    assert task.main_metric == "loss" and not task.higher_is_better


@needs_shakespeare
def test_shakespeare_stride_and_loss_counts_tokens():
    task = build_task("shakespeare_lstm", {**TINY_LM, "seq_len": 32, "stride": 16}, SHAKESPEARE.parent)
    assert len(task.train) == (int(0.9 * len(SHAKESPEARE.read_bytes())) - 33) // 16 + 1
    batch = task.train.batch(torch.arange(3))
    total, count = task.loss(task.forward(task.model, batch), batch)
    assert int(count) == 3 * 32
    assert set(task.metrics(task.forward(task.model, batch), batch)) == {"accuracy"}


@needs_shakespeare
def test_shakespeare_good_copy_passes_and_corrupted_copy_fails(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(SHAKESPEARE, good / "tinyshakespeare.txt")
    build_task("shakespeare_lstm", TINY_LM, good)
    bad = tmp_path / "bad"
    bad.mkdir()
    data = bytearray(SHAKESPEARE.read_bytes())
    data[1000] ^= 1
    (bad / "tinyshakespeare.txt").write_bytes(bytes(data))
    with pytest.raises(ConfigError) as error:
        build_task("shakespeare_lstm", TINY_LM, bad)
    message = str(error.value)
    assert str(bad / "tinyshakespeare.txt") in message and SHA256 in message and "\n" not in message


def test_shakespeare_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"not found: .*tinyshakespeare\.txt; place Tiny Shakespeare at"):
        build_task("shakespeare_lstm", TINY_LM, tmp_path)
    # With downloads allowed, a failed download (no network in tests) is the same kind of error.
    with pytest.raises(ConfigError, match=r"downloading it failed .*place Tiny Shakespeare at"):
        build_task("shakespeare_lstm", {**TINY_LM, "download": True}, tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


@needs_shakespeare
def test_shakespeare_download_is_written_once_and_verified(tmp_path, monkeypatch):
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        return io.BytesIO(SHAKESPEARE.read_bytes())

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    build_task("shakespeare_lstm", {**TINY_LM, "download": True}, tmp_path)
    build_task("shakespeare_lstm", {**TINY_LM, "download": True}, tmp_path)
    assert len(calls) == 1 and "tinyshakespeare" in calls[0]
    assert (tmp_path / "tinyshakespeare.txt").read_bytes() == SHAKESPEARE.read_bytes()


def test_shakespeare_download_of_wrong_content_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout=None: io.BytesIO(b"<html>not found</html>"))
    with pytest.raises(ConfigError, match="sha256"):
        build_task("shakespeare_lstm", {**TINY_LM, "download": True}, tmp_path)


def test_cli_missing_data_file_is_one_line_and_exit_code_2(tmp_path, capsys):
    from optimlab.cli import main

    code = main(["train", "task=shakespeare_lstm", f"task.data_dir={tmp_path}", "task.download=false",
                 f"run_dir={tmp_path / 'run'}", "train.steps=1"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "tinyshakespeare.txt" in err
