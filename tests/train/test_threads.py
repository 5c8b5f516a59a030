"""train.threads: applied before the run builds anything, recorded in config.yaml, not part of the identity."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from optimlab.config import config_hash, default_run_dir, load_config
from optimlab.errors import ConfigError
from optimlab.train import train


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_config_yaml_records_the_thread_count_the_run_used(toy_overrides, tmp_path, restore_threads):
    torch.set_num_threads(1)
    summary = train(load_config([*toy_overrides, "train.steps=5"]))
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert summary["status"] == "completed"
    assert saved["train"]["threads"] == 1


def test_train_threads_sets_the_count(toy_overrides, tmp_path, restore_threads):
    torch.set_num_threads(1)
    train(load_config([*toy_overrides, "train.steps=5", "train.threads=2"]))
    assert torch.get_num_threads() == 2
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["threads"] == 2


def test_threads_are_not_identity():
    plain = load_config(["task=toy", "optim=adam"])
    pinned = load_config(["task=toy", "optim=adam", "train.threads=3"])
    assert config_hash(plain) == config_hash(pinned)
    assert default_run_dir(plain) == default_run_dir(pinned)


def test_threads_must_be_positive():
    with pytest.raises(ConfigError, match="train.threads"):
        load_config(["task=toy", "train.threads=0"])


def test_rerun_from_config_yaml_uses_the_recorded_count(toy_overrides, tmp_path, plugin_env):
    """A run made with one thread, re-run from its config.yaml by a process started with two threads."""
    first = [sys.executable, "-m", "optimlab", "train", *toy_overrides, "train.steps=8"]
    subprocess.run(first, env={**plugin_env, "OMP_NUM_THREADS": "1"}, check=True, capture_output=True)
    config = tmp_path / "run" / "config.yaml"
    assert yaml.safe_load(config.read_text())["train"]["threads"] == 1
    again = [sys.executable, "-m", "optimlab", "train", "--config", str(config), f"run_dir={tmp_path / 'again'}"]
    subprocess.run(again, env={**plugin_env, "OMP_NUM_THREADS": "2"}, check=True, capture_output=True)
    assert yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())["train"]["threads"] == 1
    sums = [json.loads((tmp_path / d / "summary.json").read_text())["params_sha256"] for d in ("run", "again")]
    assert sums[0] == sums[1]
