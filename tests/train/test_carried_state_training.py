"""Training a word-level language model: stream order, the carried hidden state, exact resume."""

import sys
from pathlib import Path

import pytest
import torch

from optimlab.config import load_config
from optimlab.train import train
from optimlab.train.carried_state_hook import CarriedStateHook
from optimlab.train.checkpoint import list_checkpoints, save_checkpoint
from optimlab.train.distributed import World
from optimlab.train.run import build_run

sys.path.insert(0, str(Path(__file__).parents[1] / "tasks"))
from tasks_text_writers import write_ptb  # noqa: E402


@pytest.fixture
def lm_overrides(tmp_path):
    write_ptb(tmp_path / "data" / "ptb", counts=(120, 12, 12))
    return [
        "task=ptb_lstm", f"task.data_dir={tmp_path / 'data'}", "task.download=false", "task.bptt=6",
        "task.embedding_size=8", "task.hidden=8", "task.dropout=0.2", "task.batch_size=4", "task.eval_lanes=2",
        "optim=sgd", "optim.lr=1.0", "train.clip_grad_norm=0.25", "train.log_every=3", "train.eval_every=9",
        "train.checkpoint_every=5", "log.progress=never",
    ]  # fmt: skip


def test_stream_batches_read_contiguous_lanes_and_carry_the_state(lm_overrides, tmp_path):
    cfg = load_config([*lm_overrides, f"run_dir={tmp_path / 'run'}"])
    run = build_run(cfg, torch.device("cpu"), World())
    hooks = [h for h in run.hooks if isinstance(h, CarriedStateHook)]
    assert len(hooks) == 1
    lane = len(run.train_split) // 4
    first, second = run.next_batch(0), run.next_batch(1)
    assert first.indices.tolist() == [0, lane, 2 * lane, 3 * lane]
    assert second.indices.tolist() == [1, lane + 1, 2 * lane + 1, 3 * lane + 1]
    # Row r of the second batch continues row r of the first in the training stream.
    assert torch.equal(first.batch[1][:, -1], second.batch[0][:, 0])
    hooks[0].before_backward(first)
    run.backward(first)
    hooks[0].before_backward(second)  # commit: the first batch's final states become readable
    assert run.model.carried.keys.tolist() == (first.indices + 1).tolist()


def test_resume_with_the_carried_state_is_bit_identical(lm_overrides, tmp_path, capsys):
    straight = train(load_config([*lm_overrides, "train.steps=23", f"run_dir={tmp_path / 'straight'}"]))
    train(load_config([*lm_overrides, "train.steps=12", f"run_dir={tmp_path / 'resumed'}"]))
    saved = torch.load(list_checkpoints(tmp_path / "resumed" / "checkpoints")[-1], weights_only=True)
    assert len(saved["hooks"]["carried_state"][""]["keys"]) == 4  # the hidden state is in the checkpoint
    resumed = train(load_config([*lm_overrides, "train.steps=23", f"run_dir={tmp_path / 'resumed'}"]))
    assert resumed["params_sha256"] == straight["params_sha256"]
    assert resumed["final"]["val/perplexity"] == straight["final"]["val/perplexity"]

    # The state matters: resuming without it diverges from the straight run.
    train(load_config([*lm_overrides, "train.steps=12", f"run_dir={tmp_path / 'dropped'}"]))
    folder = tmp_path / "dropped" / "checkpoints"
    for path in list_checkpoints(folder):
        checkpoint = torch.load(path, weights_only=True)
        del checkpoint["hooks"]["carried_state"]
        save_checkpoint(folder, checkpoint["progress"]["step"], checkpoint, keep=10)  # with its new checksum
    dropped = train(load_config([*lm_overrides, "train.steps=23", f"run_dir={tmp_path / 'dropped'}"]))
    assert "resumed from step 12" in capsys.readouterr().err
    assert dropped["params_sha256"] != straight["params_sha256"]


def test_uniform_sampler_trains_a_stream_task_without_carrying(lm_overrides, tmp_path):
    cfg = load_config([*lm_overrides, "train.sampler=uniform", f"run_dir={tmp_path / 'run'}"])
    run = build_run(cfg, torch.device("cpu"), World())
    assert type(run.sampler).__name__ == "BatchSampler"
