"""train.init_from (weights only), `optimlab train --restore CHECKPOINT`, and train.device=auto."""

import json

import pytest
import torch

from optimlab.config import Config, config_hash, load_config
from optimlab.errors import ConfigError
from optimlab.train import train
from optimlab.train.checkpoint import list_checkpoints
from optimlab.train.distributed import World, resolve_device
from optimlab.train.init_from import init_from
from optimlab.train.restore import prepare_restore


def test_new_keys_leave_the_default_config_hash_alone():
    assert config_hash(Config()) == "31fc522a65"
    default = config_hash(load_config([]))
    assert config_hash(load_config(["train.init_from=/some/weights.pt"])) != default
    assert config_hash(load_config(["train.sampler=loss"])) != default
    assert config_hash(load_config(["train.sampler_floor=0.5"])) != default
    assert (
        config_hash(load_config(["train.sampler=auto", "train.sampler_floor=0.1", "train.init_from=null"])) == default
    )


def test_init_from_a_checkpoint_loads_the_weights_only(tmp_path, toy_overrides, capsys):
    source = train(load_config([*toy_overrides[:-2], f"run_dir={tmp_path / 'source'}", "log.progress=never"]))
    checkpoint = list_checkpoints(tmp_path / "source" / "checkpoints")[-1]
    cfg = load_config([*toy_overrides[:-2], "train.steps=0", f"train.init_from={checkpoint}",
                       f"run_dir={tmp_path / 'warm'}", "log.progress=never"])  # fmt: skip
    warm = train(cfg)
    assert warm["params_sha256"] == source["params_sha256"]  # 0 steps: exactly the loaded weights
    assert "loaded 4 tensors; missing (kept fresh): []; unexpected (ignored): []" in capsys.readouterr().err
    # It starts a fresh run: step 0, a fresh optimizer.
    assert warm["step"] == 0


def test_init_from_a_plain_state_dict_reports_missing_and_unexpected_keys(tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    other = torch.nn.Sequential(torch.nn.Linear(3, 4))
    state = {"module." + k: v for k, v in other.state_dict().items()}  # as DDP saves it
    state["module.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "weights.pt")
    missing, unexpected = init_from(model, tmp_path / "weights.pt")
    assert missing == ["2.weight", "2.bias"] and unexpected == ["extra.weight"]
    assert torch.equal(model[0].weight, other[0].weight)
    assert "missing (kept fresh): ['2.weight', '2.bias']" in capsys.readouterr().err
    torch.save({"0.weight": torch.zeros(5, 3)}, tmp_path / "wrong.pt")
    with pytest.raises(ConfigError, match="shape"):
        init_from(model, tmp_path / "wrong.pt")
    with pytest.raises(ConfigError, match="not found"):
        init_from(model, tmp_path / "absent.pt")


def test_restore_continues_in_a_new_directory_exactly(tmp_path, toy_overrides):
    common = [*toy_overrides[:-2], "log.progress=never"]
    straight = train(load_config([*common, "train.steps=40", f"run_dir={tmp_path / 'straight'}"]))
    train(load_config([*common, "train.steps=20", f"run_dir={tmp_path / 'first'}"]))
    checkpoint = tmp_path / "first" / "checkpoints" / "step-20.pt"
    cfg = prepare_restore(checkpoint, ["train.steps=40", f"run_dir={tmp_path / 'restored'}"])
    restored = train(cfg)
    assert restored["params_sha256"] == straight["params_sha256"]
    lines = [json.loads(line) for line in (tmp_path / "restored" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [
        json.loads(line)["step"] for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    assert (tmp_path / "first" / "summary.json").exists()  # the source is left as it was
    assert len(list_checkpoints(tmp_path / "first" / "checkpoints")) >= 1


def test_restore_applies_optimizer_overrides_and_picks_a_new_directory(tmp_path, toy_overrides, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = [*toy_overrides[:-2], "log.progress=never"]
    train(load_config([*common, "train.steps=10", f"run_dir={tmp_path / 'first'}"]))
    checkpoint = tmp_path / "first" / "checkpoints" / "step-10.pt"
    cfg = prepare_restore(checkpoint, ["optim.lr=0.01", "train.steps=12"])
    assert cfg.run_dir.endswith("-from-step10") and cfg.optim.kwargs["lr"] == 0.01
    saved = torch.load(list_checkpoints(tmp_path / cfg.run_dir / "checkpoints")[0], weights_only=True)
    assert all(group["lr"] == 0.01 for group in saved["optimizer"]["param_groups"])
    with pytest.raises(ConfigError, match="own run directory"):
        prepare_restore(checkpoint, [f"run_dir={tmp_path / 'first'}"])


def test_restore_from_the_command_line(tmp_path, toy_overrides, capsys):
    from optimlab.cli import main

    common = [*toy_overrides[:-2], "log.progress=never"]
    train(load_config([*common, "train.steps=10", f"run_dir={tmp_path / 'first'}"]))
    source = str(tmp_path / "first" / "checkpoints" / "step-10.pt")
    assert main(["train", "--restore", source, "train.steps=15", f"run_dir={tmp_path / 'second'}"]) == 0
    summary = json.loads((tmp_path / "second" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 15
    assert main(["train", "--restore", str(tmp_path / "absent.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_device_auto_picks_the_gpu_with_the_most_free_memory(monkeypatch):
    free = {0: 10 << 30, 1: 70 << 30, 2: 30 << 30, 3: 70 << 30}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(free))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (free[index], 80 << 30))
    assert resolve_device("auto", World()) == torch.device("cuda:1")  # ties: the first
    free[2] = 75 << 30
    assert resolve_device("auto", World()) == torch.device("cuda:2")
    # Under torchrun every rank takes its own local GPU.
    assert resolve_device("auto", World(rank=3, world_size=4, local_rank=3)) == torch.device("cuda:3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", World()) == torch.device("cpu")
