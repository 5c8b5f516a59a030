"""SNLI and MultiWOZ loaders on small files in their real formats; GloVe vectors; the encoders."""

import pytest
import torch

from optimlab.errors import ConfigError
from optimlab.tasks import build_task
from optimlab.tasks.models.sentence_encoders import ENCODERS, SentenceEncoder
from optimlab.tasks.multiwoz import DOMAINS, turn_domain
from optimlab.tasks.text import tokenize

from tasks_text_writers import LABELS, write_glove, write_multiwoz, write_snli, write_tiny_roberta

SMALL = {"hidden": 6, "mlp_hidden": 5, "embedding_size": 4, "download": False}


@pytest.fixture
def snli_dir(tmp_path):
    return tmp_path, write_snli(tmp_path / "snli_1.0")


def test_snli_reads_pairs_and_drops_pairs_without_a_gold_label(snli_dir):
    data_dir, records = snli_dir
    task = build_task("snli_infersent", SMALL, data_dir)
    kept = [r for r in records["train"] if r["gold_label"] != "-"]
    assert len(task.train) == len(kept) < len(records["train"])
    assert task.train.tensors[-1].tolist() == [LABELS.index(r["gold_label"]) for r in kept]
    premise, premise_lengths, hypothesis, hypothesis_lengths, _ = task.train.tensors
    assert premise_lengths[0] == len(tokenize(kept[0]["sentence1"], lowercase=False))
    assert hypothesis_lengths[1] == len(tokenize(kept[1]["sentence2"], lowercase=False))
    assert torch.equal(task.train.lengths, torch.maximum(premise_lengths, hypothesis_lengths))
    assert task.info["embeddings"] == "learned"
    assert len(task.val) == len([r for r in records["dev"] if r["gold_label"] != "-"])


def test_glove_vectors_are_loaded_for_the_vocabulary_and_frozen(snli_dir):
    data_dir, _ = snli_dir
    words = ["A", "the", "cat", "zebra", "dog"]
    vectors = write_glove(data_dir / "glove.test.5d.txt", words, 5)
    task = build_task("snli_lstm", {**SMALL, "glove": "glove.test.5d.txt"}, data_dir)
    assert task.info["embeddings"].startswith("glove (4 of")  # 'zebra' is not in the training vocabulary
    table = task.model.embedding.table
    assert table.weight.shape[1] == 5 and not table.weight.requires_grad
    assert build_task("snli_lstm", {**SMALL, "glove": "absent.txt"}, data_dir).info["embeddings"] == "learned"
    assert len(list((data_dir / "glove-subsets").glob("*.npz"))) == 1  # the vocabulary's vectors, cached
    again = build_task("snli_infersent", {**SMALL, "glove": "glove.test.5d.txt"}, data_dir)
    assert torch.equal(again.model.embedding.table.weight, table.weight)
    rows = {tuple(row.tolist()) for row in table.weight}
    for word in ("A", "the", "cat", "dog"):
        assert tuple(torch.from_numpy(vectors[word]).tolist()) in rows


def test_bad_glove_file_is_a_config_error(snli_dir):
    data_dir, _ = snli_dir
    (data_dir / "bad.txt").write_text("the 0.1 0.2 0.3\ncat 0.5\n")
    with pytest.raises(ConfigError, match="line 2"):
        build_task("snli_lstm", {**SMALL, "glove": "bad.txt"}, data_dir)


def test_missing_snli_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="snli_1.0_train.jsonl"):
        build_task("snli_lstm", SMALL, tmp_path)


@pytest.mark.parametrize("kind", ENCODERS)
def test_sentence_vectors_do_not_depend_on_padding(kind):
    torch.manual_seed(0)
    encoder = SentenceEncoder(kind, 4, 6).eval()
    sentence = torch.randn(1, 5, 4)
    alone = encoder(sentence, torch.tensor([5]))
    padded = torch.cat([sentence, torch.zeros(1, 3, 4)], dim=1)
    batch = torch.cat([padded, torch.randn(1, 8, 4)])
    torch.testing.assert_close(encoder(batch, torch.tensor([5, 8]))[0], alone[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["snli_lstm", "snli_infersent", "snli_convnet"])
def test_snli_models_train_with_length_bucketing(snli_dir, tmp_path, name):
    from optimlab.config import load_config
    from optimlab.train import train

    data_dir, _ = snli_dir
    options = [f"task.{k}={v}" for k, v in SMALL.items()]
    cfg = load_config([f"task={name}", *options, f"task.data_dir={data_dir}", "task.batch_size=4", "train.steps=6",
                       "train.length_bucketing=true", "train.eval_every=3", "log.progress=never", f"run_dir={tmp_path / 'run'}"])  # fmt: skip
    summary = train(cfg)
    assert summary["status"] == "completed" and 0 <= summary["final"]["test/accuracy"] <= 1


def test_turn_domain_is_the_majority_domain_of_the_acts():
    assert turn_domain({"Hotel-Inform": [], "Restaurant-Request": [], "Hotel-Request": []}) == "hotel"
    assert turn_domain({"Train-Inform": [], "Taxi-Inform": []}) == "train"  # a tie: the first act's
    assert turn_domain({"general-thank": []}) == "general"
    assert turn_domain({}) is None


def test_multiwoz_splits_by_the_list_files_and_labels_user_turns(tmp_path):
    data = write_multiwoz(tmp_path / "multiwoz")
    task = build_task("multiwoz_bilstm", {"embedding_size": 4, "hidden": 5}, tmp_path)
    assert len(task.val) == len(task.test) == 2 * 4 and len(task.train) == 8 * 4
    first_user_turns = [data["MUL0000.json"]["log"][i] for i in (0, 2, 4, 6)]
    expected = [DOMAINS.index(turn_domain(t["dialog_act"])) for t in first_user_turns]
    assert task.train.tensors[-1][:4].tolist() == expected
    # With context, the second user turn's input starts with the previous system turn's words.
    no_context = build_task("multiwoz_bilstm", {"embedding_size": 4, "hidden": 5, "context": False}, tmp_path)
    assert task.train.lengths[1] > no_context.train.lengths[1]
    assert task.train.lengths[0] == no_context.train.lengths[0]  # the first turn has no system turn before it


def test_multiwoz_missing_files_and_roberta_weights_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="ListFile"):
        build_task("multiwoz_bilstm", {}, tmp_path)
    write_multiwoz(tmp_path / "multiwoz")
    with pytest.raises(ConfigError, match="roberta"):
        build_task("multiwoz_roberta", {"roberta_path": str(tmp_path / "nowhere")}, tmp_path)


def test_multiwoz_roberta_from_a_local_tiny_model(tmp_path):
    pytest.importorskip("transformers", reason="the nlp extra (transformers) is not installed")
    write_multiwoz(tmp_path / "multiwoz")
    write_tiny_roberta(tmp_path / "tiny")
    task = build_task("multiwoz_roberta", {"roberta_path": str(tmp_path / "tiny"), "max_tokens": 24}, tmp_path)
    ids, lengths, labels = task.train.batch(torch.arange(4))
    assert ids.shape[1] <= 24 and int(lengths.max()) == ids.shape[1]
    assert ids[0, 0] == 0 and ids[0, int(lengths[0]) - 1] == 2  # <s> ... </s>
    logits = task.forward(task.model, (ids, lengths, labels))
    assert logits.shape == (4, len(DOMAINS))
    loss, count = task.loss(logits, (ids, lengths, labels))
    loss.backward()
    assert count == 4 and all(p.grad is not None for p in task.model.parameters() if p.requires_grad)
