"""Gradients: uneven microbatches equal one batch (float64); two gloo ranks equal one process."""

import json
import subprocess
import sys

import pytest
import torch

from optimlab.config import load_config
from optimlab.tasks import build_task
from optimlab.train import train
from optimlab.train.distributed import World
from optimlab.train.gradients import backward as _backward


def gradients(task, batch, microbatch_size):
    task.model.zero_grad(set_to_none=True)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss_sum, count = _backward(task.model, task, batch, microbatch_size, None, scaler, World())
    return loss_sum / count, [p.grad.clone() for p in task.model.parameters()]


@pytest.mark.parametrize("microbatch_size", [1, 3, 4, 7, 10, 16])
def test_uneven_microbatches_give_the_full_batch_gradient_float64(microbatch_size):
    torch.manual_seed(0)
    task = build_task("toy", {"dtype": "float64", "dropout": 0.0})
    batch = task.train.batch(torch.arange(10))  # 10 = 3+3+3+1, 4+4+2, 7+3, ...
    full_loss, full = gradients(task, batch, None)
    loss, micro = gradients(task, batch, microbatch_size)
    assert float(loss) == pytest.approx(float(full_loss), rel=1e-12)
    for a, b in zip(micro, full):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_token_weighted_losses_are_exact_with_uneven_counts():
    """A loss whose count differs per sample (like tokens) must be the global token mean, not a mean of means."""
    torch.manual_seed(0)
    task = build_task("toy", {"dtype": "float64", "dropout": 0.0})
    weights = torch.arange(1, 11, dtype=torch.float64)  # sample i counts as i "tokens"

    x, y = task.train.batch(torch.arange(10))
    index = torch.arange(10, dtype=torch.float64)
    batch = (x, y, index)
    task.forward = lambda model, b: model(b[0])

    def loss(outputs, b):
        per_sample = torch.nn.functional.cross_entropy(outputs, b[1], reduction="none")
        w = weights[b[2].long()]
        return (per_sample * w).sum(), w.sum()

    task.loss = loss
    full_loss, full = gradients(task, batch, None)
    _, micro = gradients(task, batch, 4)
    for a, b in zip(micro, full):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        expected = (torch.nn.functional.cross_entropy(task.model(x), y, reduction="none") * weights).sum() / weights.sum()
    assert float(full_loss) == pytest.approx(float(expected), rel=1e-12)


def test_microbatched_training_matches_plain_training(tmp_path, toy_overrides):
    base = [o for o in toy_overrides if not o.startswith("run_dir")] + ["task.dtype=float64", "task.dropout=0.0"]
    plain = train(load_config([*base, f"run_dir={tmp_path / 'a'}"]))
    micro = train(load_config([*base, "train.microbatch_size=5", f"run_dir={tmp_path / 'b'}"]))
    a = torch.load(sorted((tmp_path / "a" / "checkpoints").glob("*.pt"))[-1], weights_only=True)["model"]
    b = torch.load(sorted((tmp_path / "b" / "checkpoints").glob("*.pt"))[-1], weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=1e-12)
    assert micro["final"]["train/loss"] == pytest.approx(plain["final"]["train/loss"], rel=1e-9)


def test_two_gloo_ranks_match_one_process(tmp_path, plugin_env):
    common = [
        "task=toy", "task.dtype=float64", "task.dropout=0.0", "task.batch_size=15", "optim=sgd",
        "optim.lr=0.1", "optim.momentum=0.9", "train.steps=12", "train.checkpoint_every=12", "log.progress=never",
    ]
    single = [sys.executable, "-m", "optimlab", "train", *common, f"run_dir={tmp_path / 'single'}"]
    assert subprocess.run(single, env=plugin_env, capture_output=True).returncode == 0
    ddp = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",  # a free port
        "-m", "optimlab", "train", *common, f"run_dir={tmp_path / 'ddp'}",
    ]
    result = subprocess.run(ddp, env=plugin_env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    a = torch.load(tmp_path / "single" / "checkpoints" / "step-12.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "ddp" / "checkpoints" / "step-12.pt", weights_only=True)["model"]
    for key in a:  # batch 15 splits 8 + 7 across ranks: uneven shares, exact weighting
        torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=1e-12)
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["status"] == "completed"
