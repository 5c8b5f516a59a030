"""Divergence, bad input (exit 2, nothing overwritten), and run records."""

import json
import subprocess
import sys

import pytest

from optimlab.config import load_config
from optimlab.errors import ConfigError
from optimlab.train import train


def run_cli(args, env):
    return subprocess.run([sys.executable, "-m", "optimlab", *args], env=env, capture_output=True, text=True)


def test_nan_loss_ends_the_run_as_diverged_with_its_step(tmp_path, toy_overrides):
    overrides = [o for o in toy_overrides if not o.startswith("optim")] + ["optim=sgd", "optim.lr=1e38"]
    summary = train(load_config(overrides))
    assert summary["status"] == "diverged"
    assert 1 <= summary["diverged_step"] <= 40
    lines = [strict_json(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["diverged_step"] == summary["diverged_step"]
    assert lines[-1]["train/loss"] is None  # a non-finite value is null in strict JSON; the divergence is recorded
    on_disk = strict_json((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["status"] == "diverged"


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as strict readers (JavaScript, jq, Go) do."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_run_directory_records(tmp_path, toy_overrides):
    summary = train(load_config(toy_overrides))
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.jsonl", "summary.json", "checkpoints"}
    assert summary["status"] == "completed" and summary["step"] == 40
    assert {"train/loss", "val/loss", "val/accuracy", "test/loss", "test/accuracy"} <= summary["final"].keys()
    assert summary["best"]["step"] % 10 == 0
    assert len(summary["params_sha256"]) == 64
    assert summary["versions"]["torch"]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r["step"] for r in lines if "val/loss" in r]
    assert evals == [0, 10, 20, 30, 40]  # step 0, every eval_every, and the end
    assert [r["step"] for r in lines if "test/loss" in r] == [40]


@pytest.mark.parametrize(
    "bad, message",
    [
        (["optim.lr=abc"], "optim.lr"),
        (["task=toyy"], "toyy"),
        (["optim=adamm"], "adamm"),
        (["optim.lr=0.5"], "different config"),  # the directory holds another run
    ],
)
def test_bad_input_exits_2_with_one_line_and_overwrites_nothing(tmp_path, toy_overrides, plugin_env, bad, message):
    train(load_config(toy_overrides))
    run = tmp_path / "run"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = run_cli(["train", *toy_overrides, *bad], plugin_env)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_missing_run_directory_is_not_created_on_bad_input(tmp_path, plugin_env):
    result = run_cli(["train", "task=toy", "optim.lrr=1", f"run_dir={tmp_path / 'new'}"], plugin_env)
    assert result.returncode == 2 and "lrr" in result.stderr
    assert not (tmp_path / "new").exists()


def test_resume_false_starts_over(tmp_path, toy_overrides):
    first = train(load_config(toy_overrides))
    again = train(load_config([*toy_overrides, "train.resume=false"]))
    assert again["params_sha256"] == first["params_sha256"]  # same seed, same result, from scratch
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert sum('"test/loss"' in line for line in lines) == 1


def test_hyper_conflicts_are_config_errors(toy_overrides):
    with pytest.raises(ConfigError, match="microbatch"):
        train(load_config([*toy_overrides, "hyper=marthe", "train.microbatch_size=4"]))


def test_step_losses_and_the_first_nonfinite_step_against_one_division_per_step():
    import math

    import torch

    from optimlab.train.run import first_nonfinite, step_losses

    def reference(window):
        return torch.stack([loss_sum.double() / count for loss_sum, count in window])

    sums = torch.rand(7, dtype=torch.float32) * 300
    ints = [(s, 128 + i) for i, s in enumerate(sums)]
    mixed = [(torch.tensor(2.5, dtype=torch.float64), 1), *ints]  # a window restored from a checkpoint
    tensors = [(s, torch.tensor(31 + i)) for i, s in enumerate(sums)]  # token counts
    for window in (ints, mixed, tensors):
        assert torch.equal(step_losses(window), reference(window))
    losses = step_losses(ints)
    assert first_nonfinite(losses) is None and math.isfinite(float(losses.mean()))
    for value in (float("nan"), float("inf"), -float("inf")):
        bad = losses.clone()
        bad[4], bad[6] = value, float("nan")
        assert first_nonfinite(bad) == 4 and not math.isfinite(float(bad.mean()))
