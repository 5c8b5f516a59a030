"""Every optimizer that `optimlab list optimizers` lists trains through the trainer: a few steps on the toy
task (a hidden 2-D weight, biases, an output layer) end with a finite loss and moved parameters."""

from __future__ import annotations

import math

import pytest

from optimlab.config import load_config
from optimlab.optim.registry import available
from optimlab.tasks import build_task
from optimlab.train import train
from optimlab.train.checkpoint import list_checkpoints, read_checkpoint
from optimlab.train.records import params_sha256

STEPS = 5


def _overrides(tmp_path, name: str) -> list[str]:
    return [
        "task=toy", "task.batch_size=16", "task.dropout=0.0", f"optim={name}", f"train.steps={STEPS}",
        "train.log_every=1", f"train.eval_every={STEPS}", f"train.checkpoint_every={STEPS}", "train.eval_batches=1",
        f"run_dir={tmp_path / name}", "log.progress=never",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def initial_sha256() -> str:
    """The initial parameters of every run below (seed 0): the task's model for that seed."""
    return params_sha256(build_task("toy", {"dropout": 0.0}).new_model(0))


@pytest.mark.parametrize("name", available())
def test_optimizer_trains_a_few_steps(name, tmp_path, initial_sha256):
    summary = train(load_config(_overrides(tmp_path, name)))
    assert summary["status"] == "completed" and summary["step"] == STEPS
    assert math.isfinite(summary["final"]["train/loss"]) and math.isfinite(summary["final"]["val/loss"])
    assert summary["params_sha256"] != initial_sha256, "the parameters did not move"


def test_the_trainer_builds_the_param_groups_from_the_policy(tmp_path, initial_sha256):
    """Muon with the bias exemption: the hidden weight on Muon; the output weight on AdamW with decay; the
    biases on AdamW without (read back from the checkpoint's optimizer state)."""
    overrides = _overrides(tmp_path, "muon") + ["optim.no_decay=[bias]", "optim.lr=0.02", "optim.weight_decay=0.05"]
    summary = train(load_config(overrides))
    assert summary["status"] == "completed" and math.isfinite(summary["final"]["train/loss"])
    assert summary["params_sha256"] != initial_sha256
    optimizer = read_checkpoint(list_checkpoints(tmp_path / "muon" / "checkpoints")[-1])["optimizer"]
    state = optimizer["state"]  # per parameter index: Muon's momentum_buffer or AdamW's exp_avg

    def shape(index: int) -> tuple[int, ...]:
        return tuple(state[index].get("momentum_buffer", state[index].get("exp_avg")).shape)

    groups = [(g["use_muon"], g["weight_decay"], [shape(i) for i in g["params"]]) for g in optimizer["param_groups"]]
    # toy model: hidden Linear(8, 16), output Linear(16, 3)
    assert groups == [(True, 0.05, [(16, 8)]), (False, 0.05, [(3, 16)]), (False, 0.0, [(16,), (3,)])]
