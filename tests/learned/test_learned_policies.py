"""Policies: weight counts, state shapes, the update rules against per-coordinate references."""

import math

import pytest
import torch

from optimlab.errors import ConfigError
from optimlab.learned import DMOptimizer, RNNProp, ScaleHierarchical, SmallFCLOpt, build_policy
from optimlab.learned.policies import POLICIES


def count(policy):
    return sum(p.numel() for p in policy.parameters())


def test_rnnprop_has_5141_weights():
    # LSTM(2->20): 2*80 + 20*80 + 80; LSTM(20->20): 20*80 + 20*80 + 80; Dense(20->1): 21.
    assert count(RNNProp()) == 2 * 80 + 20 * 80 + 80 + 20 * 80 + 20 * 80 + 80 + 21 == 5141


def test_other_policy_weight_counts():
    assert count(DMOptimizer()) == (1 * 80 + 20 * 80 + 80) + (20 * 80 + 20 * 80 + 80) + 21
    assert count(SmallFCLOpt()) == 19 * 32 + 32 + 32 * 32 + 32 + 32 * 2 + 2
    assert count(RNNProp(input_layer=True)) == 2 * 20 + 20 + 2 * (20 * 80 + 20 * 80 + 80) + 21
    # GRU(29->20), GRU(20->10), GRU(10->10), two decay heads, direction, shortcut, lr head, eta_bar, gamma.
    gru = lambda i, h: 3 * h * i + 3 * h * h + 3 * h  # noqa: E731
    assert count(ScaleHierarchical()) == gru(29, 20) + gru(20, 10) + gru(10, 10) + 2 * 21 + 20 + 4 + 20 + 1 + 1


EXPECTED_STATE = {
    "rnnprop": {"m": (7,), "v": (7,), "h0": (7, 20), "c0": (7, 20), "h1": (7, 20), "c1": (7, 20)},
    "dm": {"h0": (7, 20), "c0": (7, 20), "h1": (7, 20), "c1": (7, 20)},
    "small_fc_lopt": {"momenta": (7, 6)},
    "scale": {"m": (7, 4), "v": (7, 4), "eta": (7,), "h": (7, 20), "tensor_h": (1, 10)},
    "choice": {
        "pool0_ms": (7,),
        "pool1_m": (7,),
        "pool1_v": (7,),
        "h0": (7, 20),
        "c0": (7, 20),
        "h1": (7, 20),
        "c1": (7, 20),
        "rank": (7, 3),
    },
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_state_shapes_and_step(name):
    policy = build_policy(name)
    param, grad = torch.randn(7), torch.randn(7)
    state = policy.init_state(param)
    assert {k: tuple(v.shape) for k, v in state.items()} == EXPECTED_STATE[name]
    glob = policy.init_global_state(param)
    delta, new = policy(param, grad, state, torch.tensor(0.0), glob)
    assert delta.shape == (7,) and torch.isfinite(delta).all()
    assert {k: v.shape for k, v in new.items()} == {k: v.shape for k, v in state.items()}
    assert set(policy.recurrent_keys) <= set(state)


def test_unknown_policy_and_key_are_config_errors():
    with pytest.raises(ConfigError, match="unknown policy 'rnprop'"):
        build_policy("rnprop")
    with pytest.raises(ConfigError, match="unknown policy key 'layer'"):
        build_policy("rnnprop", layer=[20])
    with pytest.raises(ConfigError, match="bias_correction"):
        RNNProp(bias_correction="adam")


def _lstm_reference(cell, x, h, c):
    """One coordinate at a time, the textbook equations (Keras gate order i, f, c, o)."""
    W = torch.cat([cell.weight_ih, cell.weight_hh], dim=1)
    z = W @ torch.cat([x, h]) + cell.bias
    i, f, g, o = z.chunk(4)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def test_rnnprop_matches_per_coordinate_reference_float64():
    torch.manual_seed(0)
    policy = RNNProp().double()
    n = 5
    param, grad = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    state = {k: torch.randn_like(v) for k, v in policy.init_state(param).items()}
    state["v"] = state["v"].abs()
    delta, new = policy(param, grad, state, torch.tensor(3.0, dtype=torch.float64), {})
    b1, b2, eps = 0.9, 0.999, 1e-10
    for j in range(n):
        m = b1 * state["m"][j] + (1 - b1) * grad[j]
        v = b2 * state["v"][j] + (1 - b2) * grad[j] ** 2
        denominator = math.sqrt(v / (1 - b2) + eps)
        x = torch.stack([m / (1 - b1) / denominator, grad[j] / denominator])
        for i, cell in enumerate(policy.recurrent):
            h, c = _lstm_reference(cell, x, state[f"h{i}"][j], state[f"c{i}"][j])
            torch.testing.assert_close(new[f"h{i}"][j], h)
            torch.testing.assert_close(new[f"c{i}"][j], c)
            x = h
        expected = 0.1 * torch.tanh(policy.delta.weight[0] @ x + policy.delta.bias[0])
        torch.testing.assert_close(delta[j], expected)
        torch.testing.assert_close(new["m"][j], m)


def test_rnnprop_standard_bias_correction_at_first_step_is_sign_like():
    policy = RNNProp(bias_correction="standard").double()
    g = torch.tensor([3.0, -0.5], dtype=torch.float64)
    # With 1 - beta^t correction, step 0 gives m_hat = g and v_hat = g^2: both inputs are sign(g).
    seen = {}
    policy.recurrent[0].register_forward_hook(lambda mod, args, out: seen.update(x=args[0]))
    policy(g, g, policy.init_state(g), torch.tensor(0.0, dtype=torch.float64), {})
    torch.testing.assert_close(seen["x"], torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64))


def test_small_fc_lopt_features_and_step_float64():
    torch.manual_seed(1)
    policy = SmallFCLOpt().double()
    param, grad = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    state = {"momenta": torch.randn(6, 6, dtype=torch.float64)}
    step = torch.tensor(12.0, dtype=torch.float64)
    seen = {}
    policy.layers[0].register_forward_hook(lambda mod, args, out: seen.update(x=args[0]))
    delta, new = policy(param, grad, state, step, {})
    decays = torch.tensor([0.1, 0.5, 0.9, 0.99, 0.999, 0.9999], dtype=torch.float64)
    momenta = decays * state["momenta"] + (1 - decays) * grad[:, None]
    torch.testing.assert_close(new["momenta"], momenta)
    raw = torch.cat([grad[:, None], param[:, None], momenta], 1)
    normalised = raw / torch.sqrt(1e-5 + (raw**2).mean(0))
    time = torch.tanh(12.0 / torch.tensor([1, 3, 10, 30, 100, 300, 1000, 3000, 1e4, 3e4, 1e5], dtype=torch.float64) - 1)
    torch.testing.assert_close(seen["x"], torch.cat([normalised, time.expand(6, 11)], 1))
    out = seen["x"]
    for i, layer in enumerate(policy.layers):
        out = layer(out) if i == len(policy.layers) - 1 else torch.relu(layer(out))
    torch.testing.assert_close(delta, out[:, 0] * torch.exp(1e-3 * out[:, 1]) * 1e-3)


def test_scale_untrained_is_multiscale_adam_direction():
    policy = ScaleHierarchical().double()
    g = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    delta, new = policy(g, g, policy.init_state(g), torch.tensor(0.0), policy.init_global_state(g))
    # Zero heads: eta stays at log(1e-3) and the direction is the mean over timescales s of
    # m_s / sqrt(v_s) = (1 - b1_s) g / sqrt((1 - b2_s) g^2), with b_s = b^(0.5^s).
    s = 0.5 ** torch.arange(4, dtype=torch.float64)
    ratio = ((1 - 0.9**s) / torch.sqrt(1 - 0.999**s)).mean()
    torch.testing.assert_close(delta, (1e-3 + 1e-2) * ratio * torch.sign(g))
    glob = policy.update_global([new], policy.init_global_state(g))
    assert glob["global_h"].shape == (1, 10)


def test_policy_parameters_are_registered():
    """Every cell is reachable through named_parameters (no cells held in plain lists)."""
    policy = RNNProp()
    names = {n for n, _ in policy.named_parameters()}
    assert names == {
        "recurrent.0.weight_ih", "recurrent.0.weight_hh", "recurrent.0.bias",
        "recurrent.1.weight_ih", "recurrent.1.weight_hh", "recurrent.1.bias", "delta.weight", "delta.bias",
    }  # fmt: skip
