"""The deployed (no-grad, in-place, chunked) policy steps against the functional `forward` they replace."""

import pytest
import torch
from torch import nn

import optimlab.learned as lo
from optimlab.learned.optimizer import apply_policy
from optimlab.learned.policies import mlp_lopt

F64 = torch.float64


def perturbed(policy, seed=0):
    """An untrained policy with every weight moved, so that each gate and bias matters."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return policy


def random_state(policy, n, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g, dtype=dtype) for k, v in policy.init_state(torch.zeros(n)).items()}
    state["v"] = state["v"].square() * 1e-2
    return state


def grad_of(n, dtype, seed=2):
    g = torch.Generator().manual_seed(seed)
    # Gradients over several orders of magnitude, some zero: the features' normalisation matters.
    return (
        torch.randn(n, generator=g, dtype=dtype)
        * 10.0 ** torch.randint(-6, 1, (n,), generator=g)
        * (torch.arange(n) % 7 != 0)
    )


CONFIGS = [
    {},
    {"bias_correction": "standard"},
    {"input_layer": True},
    {"layers": [8, 12, 5], "alpha": 0.3},
]


@pytest.mark.parametrize("hparams", CONFIGS, ids=["default", "standard", "input_layer", "three_layers"])
@pytest.mark.parametrize("n, chunk", [(37, 8), (37, 37), (5, 2048)])
def test_rnnprop_deployed_step_matches_forward_float64(hparams, n, chunk):
    policy = perturbed(lo.RNNProp(**hparams)).double().eval()
    param = torch.randn(n, dtype=F64)
    grad = grad_of(n, F64)
    state = random_state(policy, n, F64)
    step = torch.tensor(3.0, dtype=F64)
    lr = 0.7
    with torch.no_grad():
        delta, expected = policy(param, grad, state, step, {})
    fast_state = {k: v.clone() for k, v in state.items()}
    fast_param = param.clone()
    policy.deployed_step(fast_param, grad, fast_state, step, lr, chunk_size=chunk)
    torch.testing.assert_close(fast_param, param - lr * delta, rtol=1e-13, atol=1e-15)
    assert fast_state.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(fast_state[key], expected[key], rtol=1e-12, atol=1e-14, msg=key)


def test_rnnprop_deployed_step_float32_close_to_forward():
    policy = perturbed(lo.RNNProp()).eval()
    n = 5000
    param, grad, state = torch.randn(n), grad_of(n, torch.float32), random_state(policy, n, torch.float32)
    step = torch.tensor(0.0)
    with torch.no_grad():
        delta, expected = policy(param, grad, state, step, {})
    fast_param, fast_state = param.clone(), {k: v.clone() for k, v in state.items()}
    policy.deployed_step(fast_param, grad, fast_state, step, 1.0, chunk_size=1024)
    torch.testing.assert_close(fast_param, param - delta, rtol=1e-5, atol=1e-6)
    for key in expected:
        torch.testing.assert_close(fast_state[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)


def test_rnnprop_deployed_warmup_matches_apply_policy():
    policy = perturbed(lo.RNNProp()).double().eval()
    n = 11
    param, grad, state = torch.randn(n, dtype=F64), grad_of(n, F64), random_state(policy, n, F64)
    step = torch.tensor(0.0, dtype=F64)
    with torch.no_grad():
        delta, expected = apply_policy(policy, param, grad, state, step, {}, warmup_lr=0.05)
    fast_param, fast_state = param.clone(), {k: v.clone() for k, v in state.items()}
    policy.deployed_step(fast_param, grad, fast_state, step, 0.5, warmup_lr=0.05)
    torch.testing.assert_close(fast_param, param - 0.5 * delta, rtol=0, atol=0)
    for key in expected:
        torch.testing.assert_close(fast_state[key], expected[key], rtol=0, atol=0, msg=key)


def test_optimizer_steps_a_non_contiguous_parameter_in_place():
    torch.manual_seed(0)
    policy = perturbed(lo.RNNProp())
    base = torch.randn(6, 4)
    transposed = nn.Parameter(base.clone().t())  # [4, 6], not contiguous
    plain = nn.Parameter(base.clone().t().contiguous())
    grads = torch.randn(3, 4, 6)
    opts = [lo.LearnedOptimizer([p], policy, chunk_size=5) for p in (transposed, plain)]
    for g in grads:
        for p, opt in zip((transposed, plain), opts):
            p.grad = g.clone()
            opt.step()
    assert not transposed.is_contiguous()
    torch.testing.assert_close(transposed, plain, rtol=0, atol=0)
    assert not torch.equal(plain, base.t())


@pytest.mark.parametrize("hparams", [{}, {"hidden_layers": 0}, {"hidden_size": 7, "hidden_layers": 3}])
@pytest.mark.parametrize("n, chunk, small", [(37, 8, 0), (37, 2048, 0), (37, 8, mlp_lopt.SMALL)])
def test_small_fc_lopt_deployed_step_matches_forward_float64(hparams, n, chunk, small, monkeypatch):
    monkeypatch.setattr(mlp_lopt, "SMALL", small)  # 0: the folded path even for a small tensor
    policy = perturbed(lo.SmallFCLOpt(**hparams)).double().eval()
    param, grad = torch.randn(n, dtype=F64), grad_of(n, F64)
    state = {"momenta": torch.randn(n, 6, dtype=F64)}
    step, lr = torch.tensor(12.0, dtype=F64), 3.0
    with torch.no_grad():
        delta, expected = policy(param, grad, state, step, {})
    fast_param, fast_state = param.clone(), {"momenta": state["momenta"].clone()}
    policy.deployed_step(fast_param, grad, fast_state, step, lr, chunk_size=chunk)
    assert delta.abs().max() > 1e-6  # the weights' perturbation makes the step visible
    torch.testing.assert_close(fast_param, param - lr * delta, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(fast_state["momenta"], expected["momenta"], rtol=1e-14, atol=1e-15)


def test_small_fc_lopt_deployed_warmup_matches_apply_policy():
    policy = perturbed(lo.SmallFCLOpt()).double().eval()
    n = 9
    param, grad, state = torch.randn(n, dtype=F64), grad_of(n, F64), {"momenta": torch.randn(n, 6, dtype=F64)}
    step = torch.tensor(0.0, dtype=F64)
    with torch.no_grad():
        delta, expected = apply_policy(policy, param, grad, state, step, {}, warmup_lr=0.05)
    fast_param, fast_state = param.clone(), {"momenta": state["momenta"].clone()}
    policy.deployed_step(fast_param, grad, fast_state, step, 0.5, warmup_lr=0.05)
    torch.testing.assert_close(fast_param, param - 0.5 * delta, rtol=0, atol=0)
    torch.testing.assert_close(fast_state["momenta"], expected["momenta"], rtol=1e-15, atol=0)


@pytest.mark.parametrize("name", ["rnnprop", "small_fc_lopt"])
def test_optimizer_deployed_equals_functional_through_warmup(name, monkeypatch):
    monkeypatch.setattr(mlp_lopt, "SMALL", 0)
    policy = perturbed(lo.build_policy(name))
    models = [nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [
        lo.LearnedOptimizer(m.parameters(), policy, lr=0.8, warmup_steps=1, chunk_size=4, deployed=d)
        for m, d in zip(models, (True, False))
    ]
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        x = torch.randn(6, 3, generator=g, dtype=F64)
        for model, opt in zip(models, opts):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        for key, value in opts[1].state[q].items():
            torch.testing.assert_close(opts[0].state[p][key], value, rtol=1e-12, atol=1e-14, msg=key)
