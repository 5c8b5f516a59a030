"""The analytical pool: each rule against its closed form over a few steps (float64), the textbook forms
against torch.optim, and the original's (`l2o`) Adam against textbook Adam (the f(t) scaling)."""

import math

import pytest
import torch

from optimlab.errors import ConfigError
from optimlab.learned.pool import POOLS, Adam, AddSign, Momentum, PowerSign, RMSProp, SGD, build_pool, build_rule

GRADS = [0.5, -1.0, 2.0, 0.25]


def run(rule, grads=GRADS):
    """The rule's deltas on a one-coordinate tensor for a sequence of gradients."""
    state = rule.init(torch.zeros(1, dtype=torch.float64))
    out = []
    for t, g in enumerate(grads):
        delta, state = rule.update(torch.tensor([g], dtype=torch.float64), state, t)
        out.append(float(delta))
    return out


def sign(x):
    return (x > 0) - (x < 0)


def reference(name, compat, lr, grads=GRADS, b1=0.9, b2=0.999, rho=0.9, eps=1e-10):
    """Scalar loops written from the formulas (plain floats, no torch)."""
    m = v = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        if name == "sgd":
            out.append(lr * g)
        elif name == "momentum":
            m = b1 * m + ((1 - b1) * g if compat == "l2o" else g)
            out.append(lr * m)
        elif name == "rmsprop":
            v = rho * v + (1 - rho) * g * g
            out.append(lr * g / math.sqrt(v + eps) if compat == "l2o" else lr * g / (math.sqrt(v) + eps))
        elif name == "adam":
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            if compat == "l2o":
                out.append(lr * (m / (1 - b1)) / math.sqrt(v / (1 - b2) + eps))
            else:
                out.append(lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps))
        else:
            m = b1 * m + (1 - b1) * g
            if compat == "l2o":
                v = b2 * v + (1 - b2) * g * g
                r = math.sqrt(v + eps)
                agree = math.tanh(g / r) * math.tanh(m / r)
            else:
                agree = sign(g) * sign(m)
            out.append(lr * (math.exp(agree) if name == "powersign" else 1 + agree) * g)
    return out


@pytest.mark.parametrize("compat", ["l2o", "standard"])
@pytest.mark.parametrize("name", ["sgd", "momentum", "rmsprop", "adam", "powersign", "addsign"])
def test_rules_match_their_closed_forms_float64(name, compat):
    rule = build_rule({"name": name, "lr": 0.3}, compat)
    assert run(rule) == pytest.approx(reference(name, compat, 0.3), rel=1e-12, abs=1e-15)


def test_first_steps_by_hand():
    # l2o Adam's first step is lr * sign(g) (m/(1-b1) = g, v/(1-b2) = g^2); textbook Adam's too.
    assert run(Adam(lr=0.01), [0.5])[0] == pytest.approx(0.01)
    assert run(Adam(lr=0.01, compat="standard", epsilon=0.0), [0.5])[0] == pytest.approx(0.01)
    # l2o RMSProp: ms = 0.1 * 0.25 -> 0.5 / sqrt(0.025) = 3.1623
    assert run(RMSProp(lr=1.0), [0.5])[0] == pytest.approx(0.5 / math.sqrt(0.025))
    # EMA momentum: 0.1 g, then 0.9 * 0.05 + 0.1 * (-1) = -0.055; heavy ball: 0.5, then 0.45 - 1 = -0.55
    assert run(Momentum(lr=1.0), [0.5, -1.0]) == pytest.approx([0.05, -0.055])
    assert run(Momentum(lr=1.0, compat="standard"), [0.5, -1.0]) == pytest.approx([0.5, -0.55])
    # textbook AddSign/PowerSign: signs agree at the first step -> 2 g and e g; SGD: lr g
    assert run(AddSign(lr=1.0, compat="standard"), [0.5]) == pytest.approx([1.0])
    assert run(PowerSign(lr=1.0, compat="standard"), [0.5]) == pytest.approx([0.5 * math.e])
    assert run(SGD(lr=0.2), [0.5]) == pytest.approx([0.1])


def test_l2o_adam_is_textbook_adam_times_f_of_t():
    """With a constant gradient and eps = 0 the ratio is f(t) = [(1-b1^t)/(1-b1)] sqrt[(1-b2)/(1-b2^t)]."""
    steps = 1000
    l2o = run(Adam(lr=1.0, epsilon=0.0), [0.3] * steps)
    std = run(Adam(lr=1.0, epsilon=0.0, compat="standard"), [0.3] * steps)
    for t, expected in ((1, 1.00), (10, 2.06), (100, 1.03), (1000, 0.40)):
        assert l2o[t - 1] / std[t - 1] == pytest.approx(expected, abs=0.006)


@pytest.mark.parametrize(
    "rule, torch_opt",
    [
        (Momentum(lr=0.1, beta_1=0.9, compat="standard"), lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9)),
        (RMSProp(lr=0.01, rho=0.9, epsilon=1e-8, compat="standard"), lambda p: torch.optim.RMSprop([p], lr=0.01, alpha=0.9, eps=1e-8)),
        (Adam(lr=0.01, epsilon=1e-8, compat="standard"), lambda p: torch.optim.Adam([p], lr=0.01, eps=1e-8)),
    ],
)  # fmt: skip
def test_textbook_forms_equal_torch_optim(rule, torch_opt):
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, generator=g, dtype=torch.float64) for _ in range(6)]
    p = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = torch_opt(p)
    ours, state = torch.zeros(5, dtype=torch.float64), rule.init(torch.zeros(5, dtype=torch.float64))
    for t, grad in enumerate(grads):
        p.grad = grad.clone()
        opt.step()
        delta, state = rule.update(grad, state, t)
        ours = ours - delta
    torch.testing.assert_close(ours, p.detach(), rtol=1e-12, atol=1e-14)


def test_pools_and_specs():
    small, large = build_pool("small"), build_pool("large")
    assert [r.name for r in small] == ["rmsprop", "adam"] and [r.lr for r in small] == [0.005, 0.02]
    assert [r.name for r in large] == ["sgd", "momentum", "rmsprop", "adam", "powersign", "addsign"]
    assert [r.lr for r in large] == [2.0, 2.0, 0.005, 0.02, 1.0, 1.0]
    assert small[0].epsilon == 1e-7 and small[1].epsilon == 1e-10
    assert [r.lr for r in build_pool("large_2021")] == [0.2, 0.5, 0.005, 0.005, 0.1, 0.1]
    assert all(r.compat == "standard" for r in build_pool("large", "standard"))
    assert build_rule("adam:0.01") == Adam(lr=0.01)
    assert build_rule(Adam(lr=0.3).spec()) == Adam(lr=0.3)
    assert len(POOLS) == 3
    for bad in ("adamm", "adam:x", {"name": "adam", "rho": 0.9}):
        with pytest.raises(ConfigError):
            build_rule(bad)
    with pytest.raises(ConfigError):
        build_pool("medium")
    with pytest.raises(ConfigError):
        Adam(compat="keras")
