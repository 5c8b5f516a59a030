"""The choice policy (Optimizer Amalgamation's AbstractChoice): weight counts, state, the mixture rule
against a per-coordinate reference (float64), rank flags, save/load and the torch.optim wrapper."""

import pytest
import torch
from torch import nn

import optimlab.learned as lo
from optimlab.errors import ConfigError
from optimlab.learned.policies.choice import Choice, rank_flags
from optimlab.learned.pool import build_pool


def count(policy):
    return sum(p.numel() for p in policy.parameters())


def lstm(i, h):
    return 4 * h * i + 4 * h * h + 4 * h  # one bias per gate, as Keras


def test_weight_counts():
    # inputs: K updates + time + 3 rank flags; LSTM(20) -> LSTM(20) -> Dense(K)
    assert count(Choice(pool="small")) == lstm(2 + 4, 20) + lstm(20, 20) + 20 * 2 + 2 == 5482
    assert count(Choice(pool="large")) == lstm(6 + 4, 20) + lstm(20, 20) + 20 * 6 + 6 == 5886
    assert count(Choice(pool="small", use_meta_features=False)) == lstm(2, 20) + lstm(20, 20) + 42


def test_large_pool_state_and_rank_flags():
    policy = Choice(pool="large")
    state = policy.init_state_for(torch.zeros(4, 3, 2, 2))
    pool_keys = {k for k in state if k.startswith("pool")}
    assert pool_keys == {"pool1_m", "pool2_ms", "pool3_m", "pool3_v", "pool4_m", "pool4_v", "pool5_m", "pool5_v"}
    assert all(state[k].shape == (48,) for k in pool_keys)
    assert torch.equal(state["rank"], torch.tensor([[0.0, 0.0, 1.0]]).expand(48, 3))  # conv kernels: rank >= 3
    assert rank_flags((5,), torch.zeros(1)).tolist() == [[1.0, 0.0, 0.0]] * 5
    assert rank_flags((2, 3), torch.zeros(1))[:, 1].all()


def reference_step(policy, grad, states, step):
    """One coordinate at a time: pool updates, features, the two LSTMs, softmax, mixture."""
    rules = build_pool(policy.hparams["pool"], policy.hparams["compat"])
    deltas = []
    for j in range(len(grad)):
        g = grad[j : j + 1]
        updates = []
        for i, rule in enumerate(rules):
            sub = {k.split("_", 1)[1]: v[j : j + 1] for k, v in states.items() if k.startswith(f"pool{i}_")}
            updates.append(rule.update(g, sub, step)[0])
        u = torch.cat(updates)
        x = torch.cat([u, torch.tensor([step / 2000.0], dtype=torch.float64), states["rank"][j]])
        for i, cell in enumerate(policy.recurrent):
            W = torch.cat([cell.weight_ih, cell.weight_hh], dim=1)
            z = W @ torch.cat([x, states[f"h{i}"][j]]) + cell.bias
            a, f, c_in, o = z.chunk(4)
            c = torch.sigmoid(f) * states[f"c{i}"][j] + torch.sigmoid(a) * torch.tanh(c_in)
            x = torch.sigmoid(o) * torch.tanh(c)
        logits = policy.logits.weight @ x + policy.logits.bias
        w = torch.exp(logits) / torch.exp(logits).sum()
        deltas.append(policy.hparams["learning_rate"] * (w * u).sum())
    return torch.stack(deltas)


@pytest.mark.parametrize("pool", ["small", "large"])
def test_forward_matches_per_coordinate_reference_float64(pool):
    torch.manual_seed(0)
    policy = Choice(pool=pool, learning_rate=0.7).double()
    param = torch.randn(3, 2, dtype=torch.float64)
    state = policy.init_state_for(param)
    for step in range(3):
        grad = torch.randn(6, dtype=torch.float64)
        t = torch.tensor(float(step), dtype=torch.float64)
        expected = reference_step(policy, grad, state, step)
        delta, state = policy(param.reshape(-1), grad, state, t, {})
        torch.testing.assert_close(delta, expected, rtol=1e-10, atol=1e-12)


def test_zero_logits_mix_the_pool_uniformly():
    policy = Choice(pool="large", compat="standard").double()
    with torch.no_grad():
        policy.logits.weight.zero_()
        policy.logits.bias.zero_()
    grad = torch.tensor([0.5, -2.0, 1e-3], dtype=torch.float64)
    state = policy.init_state(torch.zeros(3, dtype=torch.float64))
    delta, _ = policy(torch.zeros(3, dtype=torch.float64), grad, state, torch.tensor(0.0, dtype=torch.float64), {})
    # step 1, textbook forms: sgd 2g, heavy ball 2g, rmsprop 0.005 g/(|g| sqrt(0.1) + eps), adam 0.02 sign(g),
    # powersign e g, addsign 2 g (signs agree at the first step)
    g = grad
    rms = 0.005 * g / (g.abs() * 0.1**0.5 + 1e-7)
    expected = (2 * g + 2 * g + rms + 0.02 * g / (g.abs() + 1e-10) + torch.e * g + 2 * g) / 6
    torch.testing.assert_close(delta, expected, rtol=1e-9, atol=1e-12)
    weights = policy.mixture_weights(torch.zeros(3), grad, state, torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(weights, torch.full((3, 6), 1 / 6, dtype=torch.float64))


def test_save_load_and_optimizer_on_a_conv_model(tmp_path):
    torch.manual_seed(0)
    policy = Choice(pool="small")
    path = lo.save(policy, tmp_path / "c", warmup_steps=0)
    spec = lo.load(path)
    assert spec.policy.name == "choice" and spec.policy.hparams["pool"] == "small"
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    opt = spec.optimizer(model.parameters())
    x = torch.randn(4, 1, 4, 4)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    conv_weight = next(model.parameters())
    assert opt.state[conv_weight]["rank"][0].tolist() == [0.0, 0.0, 1.0]


def test_a_custom_pool_round_trips(tmp_path):
    policy = Choice(pool=["sgd:0.1", {"name": "adam", "lr": 0.01}], compat="standard")
    assert [r.name for r in policy.rules] == ["sgd", "adam"] and policy.rules[1].compat == "standard"
    spec = lo.load(lo.save(policy, tmp_path / "c"))
    assert [r.spec() for r in spec.policy.rules] == [r.spec() for r in policy.rules]


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="pool"):
        lo.build_policy("choice", pool="medium")
    with pytest.raises(ConfigError, match="compat"):
        lo.build_policy("choice", compat="keras")
    with pytest.raises(ConfigError, match="layers"):
        lo.build_policy("choice", layers=[])
