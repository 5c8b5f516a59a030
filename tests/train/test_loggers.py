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


def test_wandb_run_carries_group_tags_and_entity(tmp_path, toy_overrides, monkeypatch):
    import sys
    import types

    calls = []

    class FakeRun:
        def log(self, values, step):
            pass

        def finish(self):
            pass

    def init(**kwargs):
        calls.append(kwargs)
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    base = [o for o in toy_overrides if not o.startswith("run_dir")]
    sweep_run = tmp_path / "my_sweep" / "toy" / "sgd-1"
    train(load_config([*base, f"run_dir={sweep_run}", "log.wandb=true", "log.wandb_entity=lab",
                       "log.wandb_tags=[baseline]", "seed=3"]))
    assert calls[-1]["entity"] == "lab" and calls[-1]["group"] == "my_sweep/toy"
    assert calls[-1]["tags"] == ["optim=sgd", "seed=3", "baseline"]
    train(load_config([*base, f"run_dir={tmp_path / 'b'}", "log.wandb=true", "log.wandb_group=mine"]))
    assert calls[-1]["group"] == "mine" and calls[-1]["entity"] is None


def test_tensorboard_gets_the_hyperparameters(tmp_path, toy_overrides):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    train(load_config([*toy_overrides, "log.tensorboard=true"]))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    info = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert info.hparams["optim.name"].string_value == "sgd"
    assert info.hparams["optim.lr"].number_value == pytest.approx(0.1)
    assert "log.tensorboard" not in info.hparams  # identity keys only
    assert "hparam/val/loss" in events.Tags()["scalars"]
