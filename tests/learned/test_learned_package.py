"""Save/load without pickle, the torch.optim wrapper, and the `learned` registry entry."""

import io

import pytest
import torch
from torch import nn

import optimlab.learned as lo
from optimlab.errors import ConfigError
from optimlab.learned import package
from optimlab.learned.optimizer import resolve_config
from optimlab.optim import build_optimizer


def small_model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(dtype)


def loss_of(model, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, generator=g, dtype=next(model.parameters()).dtype)
    return model(x).pow(2).mean()


def train(opt, model, steps, start=0):
    for i in range(start, start + steps):
        opt.zero_grad()
        loss_of(model, i).backward()
        opt.step()


@pytest.fixture(params=["rnnprop", "scale", "small_fc_lopt", "dm", "choice"])
def saved(request, tmp_path):
    torch.manual_seed(3)
    policy = lo.build_policy(request.param)
    with torch.no_grad():  # make the untrained policy take visible steps
        for p in policy.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return lo.save(policy, tmp_path / request.param, warmup_steps=2, warmup_lr=0.01), policy


def test_round_trip_weights_and_sha256(saved):
    path, policy = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "weights.safetensors"]
    spec = lo.load(path)
    for (name, a), (_, b) in zip(policy.named_parameters(), spec.policy.named_parameters()):
        assert torch.equal(a, b), name
    assert spec.sha256 == lo.weights_sha256(path) and len(spec.sha256) == 64
    assert lo.load(path, sha256=spec.sha256).sha256 == spec.sha256
    with pytest.raises(ConfigError, match="optim.sha256"):
        lo.load(path, sha256="0" * 64)


def test_bad_paths_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="optim.path"):
        lo.load(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(ConfigError, match="format"):
        lo.load(tmp_path / "bad")


def test_shipped_names_resolve(tmp_path, monkeypatch):
    lo.save(lo.RNNProp(), tmp_path / "pretrained" / "tiny")
    monkeypatch.setattr(package, "PRETRAINED_DIR", tmp_path / "pretrained")
    assert package.available_pretrained() == ["tiny"]
    assert lo.resolve_path("tiny") == tmp_path / "pretrained" / "tiny"
    with pytest.raises(ConfigError, match="shipped optimizers: tiny"):
        lo.resolve_path("tinyy")


def test_optimizer_matches_the_policy_applied_by_hand(saved):
    path, policy = saved
    model = small_model(dtype=torch.float64)
    reference = small_model(dtype=torch.float64)
    opt = lo.load(path).optimizer(model.parameters(), warmup_steps=0)
    ref_policy = lo.build_policy(policy.name, **policy.hparams).double()
    ref_policy.load_state_dict(policy.state_dict())
    params = list(reference.parameters())
    states = [ref_policy.init_state_for(p.detach()) for p in params]
    glob = ref_policy.init_global_state(params[0].reshape(-1))
    for step in range(4):
        opt.zero_grad()
        loss_of(model, step).backward()
        opt.step()
        reference.zero_grad()
        loss_of(reference, step).backward()
        with torch.no_grad():
            for i, p in enumerate(params):
                delta, states[i] = ref_policy(
                    p.reshape(-1), p.grad.reshape(-1), states[i], torch.tensor(float(step), dtype=torch.float64), glob
                )
                p.sub_(delta.view_as(p))
            glob = ref_policy.update_global(states, glob)
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)
    assert all(float(opt.state[p]["step"]) == 4 for p in model.parameters())


def test_state_dict_round_trip_weights_only_continues_in_lockstep(saved):
    path, _ = saved
    spec = lo.load(path)
    a, b = small_model(), small_model()
    opt_a = spec.optimizer(a.parameters())
    train(opt_a, a, 3)
    buffer = io.BytesIO()
    torch.save(opt_a.state_dict(), buffer)
    b.load_state_dict(a.state_dict())
    opt_b = spec.optimizer(b.parameters())
    buffer.seek(0)
    opt_b.load_state_dict(torch.load(buffer, weights_only=True))
    train(opt_a, a, 3, start=3)
    train(opt_b, b, 3, start=3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_lr_multiplies_the_step_and_schedulers_drive_it(saved):
    path, _ = saved
    spec = lo.load(path)
    full, half, start = small_model(), small_model(), small_model()
    opt_full = spec.optimizer(full.parameters(), warmup_steps=0)
    opt_half = spec.optimizer(half.parameters(), warmup_steps=0)
    torch.optim.lr_scheduler.LambdaLR(opt_half, lambda step: 0.5)
    assert opt_half.param_groups[0]["lr"] == 0.5
    train(opt_full, full, 1)
    train(opt_half, half, 1)
    for f, h, s in zip(full.parameters(), half.parameters(), start.parameters()):
        torch.testing.assert_close(h - s, 0.5 * (f - s))


def test_warmup_is_sgd_with_recurrent_state_held(saved):
    path, policy = saved
    model, start = small_model(), small_model()
    opt = lo.load(path).optimizer(model.parameters())  # warmup_steps=2, warmup_lr=0.01 from config.json
    loss_of(model, 0).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    for p, s, g in zip(model.parameters(), start.parameters(), grads):
        torch.testing.assert_close(p, s - 0.01 * g)
        for key in policy.recurrent_keys:
            assert not opt.state[p][key].any()


def test_chunked_equals_whole(tmp_path):
    path = lo.save(lo.RNNProp(), tmp_path / "r")
    a, b = small_model(), small_model()
    spec = lo.load(path)
    opt_a, opt_b = spec.optimizer(a.parameters()), spec.optimizer(b.parameters(), chunk_size=4)
    train(opt_a, a, 3)
    train(opt_b, b, 3)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_registry_entry_and_config_resolution(tmp_path):
    path = lo.save(lo.RNNProp(), tmp_path / "r")
    model = small_model()
    opt = build_optimizer("learned", model.parameters(), path=str(path), lr=0.5)
    assert isinstance(opt, lo.LearnedOptimizer) and opt.param_groups[0]["lr"] == 0.5
    resolved = resolve_config({"path": str(path), "sha256": None, "lr": 1.0})
    assert resolved["sha256"] == lo.weights_sha256(path)
    with pytest.raises(ConfigError, match="optim.sha256"):
        build_optimizer("learned", model.parameters(), path=str(path), sha256="f" * 64)
    with pytest.raises(ConfigError, match="optim.path"):
        build_optimizer("learned", model.parameters(), path=str(tmp_path / "nothing"))


def test_float64_parameters_with_a_float32_policy(tmp_path):
    path = lo.save(lo.RNNProp(), tmp_path / "r")
    model = small_model(dtype=torch.float64)
    opt = lo.load(path).optimizer(model.parameters())
    train(opt, model, 2)
    state = opt.state[next(model.parameters())]
    assert state["h0"].dtype == torch.float64 and next(model.parameters()).dtype == torch.float64


def test_the_shipped_default_loads_and_trains():
    assert "rnnprop-mnist1d" in lo.available_pretrained()
    model = small_model()
    opt = build_optimizer("learned", model.parameters())
    assert opt.policy.name == "rnnprop" and opt.param_groups[0]["warmup_steps"] == 20
    before = [p.detach().clone() for p in model.parameters()]
    train(opt, model, 2)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_shipped_min_max_optimizer_loads_by_name_and_trains_the_convnet(tmp_path):
    """rnnprop-minmax (docs/results/amalgamation.md): RNNProp distilled from Adam and RMSProp by min-max on
    preset=conv_train's ConvNet; by name from the CLI, it trains digits_cnn (hidden=0) a few steps."""
    import json

    from optimlab.cli import main

    assert "rnnprop-minmax" in lo.available_pretrained()
    spec = lo.load("rnnprop-minmax")
    assert spec.policy.name == "rnnprop"
    meta = json.loads((package.PRETRAINED_DIR / "rnnprop-minmax" / "config.json").read_text())["metadata"]
    assert meta["tasks"] == ["digits_cnn"] and meta["distill"]["reduce"] == "max"
    run = tmp_path / "train"
    args = ["train", "task=digits_cnn", "task.hidden=0", "optim=learned", "optim.path=rnnprop-minmax",
            "train.steps=8", "train.eval_every=8", "train.log_every=1", "log.progress=never", f"run_dir={run}"]  # fmt: skip
    assert main(args) == 0
    losses = [json.loads(line).get("train/loss") for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [v for v in losses if v is not None]
    assert len(losses) >= 2 and all(torch.isfinite(torch.tensor(losses)))


def test_config_hash_changes_with_the_weights(tmp_path):
    from optimlab.config import config_hash, load_config

    path = lo.save(lo.RNNProp(), tmp_path / "r")
    overrides = ["task=mnist1d_mlp", "optim=learned", f"optim.path={path}"]
    first = load_config(overrides)
    assert first.optim.kwargs["sha256"] == lo.weights_sha256(path)
    torch.manual_seed(123)
    lo.save(lo.RNNProp(), path)  # new weights, same directory
    assert config_hash(load_config(overrides)) != config_hash(first)
