"""Optional loggers: TensorBoard event files, W&B offline runs, and neither changes training."""

import pytest

from optimlab.config import load_config
from optimlab.train import train


def test_tensorboard_writes_events_and_leaves_training_identical(tmp_path, toy_overrides):
    pytest.importorskip("tensorboard")
    base = [o for o in toy_overrides if not o.startswith("run_dir")]
    plain = train(load_config([*base, f"run_dir={tmp_path / 'a'}"]))
    logged = train(load_config([*base, f"run_dir={tmp_path / 'b'}", "log.tensorboard=true"]))
    assert list((tmp_path / "b" / "tensorboard").glob("events.out.tfevents.*"))
    assert logged["params_sha256"] == plain["params_sha256"]


def test_wandb_offline_needs_no_account(tmp_path, toy_overrides, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    summary = train(load_config([*toy_overrides, "log.wandb=true", "log.wandb_mode=offline"]))
    assert summary["status"] == "completed"
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
