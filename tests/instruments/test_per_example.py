"""Per-example moments against a naive per-example loop, in float64."""

import pytest
import torch
from instrument_models import (
    classification_loss,
    convnet1d,
    convnet2d,
    lstm_lm,
    mlp,
    naive_moments,
    token_loss,
    twice,
)
from torch import nn

from optimlab.instruments import per_example_moments, record_moments
from optimlab.instruments.per_example import plan_layers

CASES = {
    "mlp": (mlp, classification_loss),
    "conv1d": (convnet1d, classification_loss),
    "conv2d": (convnet2d, classification_loss),
    "lstm": (lstm_lm, token_loss),
    "twice": (twice, classification_loss),
}


def check(model, loss_fn, batch, **kwargs):
    ours = per_example_moments(model, loss_fn, batch, **kwargs)
    reference = naive_moments(model, loss_fn, batch)
    assert set(ours) == set(reference)
    for name, (mean, second, variance) in reference.items():
        torch.testing.assert_close(ours[name].mean, mean, rtol=1e-6, atol=1e-9, msg=name)
        torch.testing.assert_close(ours[name].second_moment, second, rtol=1e-6, atol=1e-9, msg=name)
        torch.testing.assert_close(ours[name].variance, variance, rtol=1e-6, atol=1e-9, msg=name)
    return ours


@pytest.mark.parametrize("case", CASES)
def test_matches_naive_loop(case):
    build, loss_fn = CASES[case]
    model, batch = build()
    check(model, loss_fn, batch)


@pytest.mark.parametrize("case", ["mlp", "conv2d", "lstm"])
@pytest.mark.parametrize("size", [1, 3])
def test_microbatching_matches_naive_loop(case, size):
    build, loss_fn = CASES[case]
    model, batch = build()
    check(model, loss_fn, batch, microbatch_size=size)


def test_layers_use_rules_and_lstm_uses_the_fallback():
    model, _ = lstm_lm()
    plan = plan_layers(model)
    assert set(plan.modules) == {"embedding", "readout"}
    assert all(name.startswith("lstm.") for name in plan.fallback)
    conv, _ = convnet2d()
    assert plan_layers(conv).fallback == []


def test_tied_weights_go_to_the_fallback():
    torch.manual_seed(5)
    embedding = nn.Embedding(7, 4)
    readout = nn.Linear(4, 7, bias=False)
    readout.weight = embedding.weight
    model = nn.Sequential(embedding, nn.Tanh(), readout).double()
    tokens = torch.randint(1, 7, (6, 5))
    assert plan_layers(model).modules == {}
    check(model, token_loss, (tokens,))


def test_frozen_parameters_are_left_out():
    model, batch = mlp()
    model[0].weight.requires_grad_(False)
    ours = check(model, classification_loss, batch)
    assert "0.weight" not in ours


def test_grad_is_untouched():
    model, batch = mlp()
    classification_loss(model, batch)[0].backward()
    before = [p.grad.clone() for p in model.parameters()]
    per_example_moments(model, classification_loss, batch)
    for p, g in zip(model.parameters(), before):
        assert torch.equal(p.grad, g)


def test_batch_norm_in_training_mode_is_refused_or_evaluated():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()
    batch = (torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,)))
    with pytest.raises(ValueError, match="batch norm in training mode.*'1'"):
        per_example_moments(model, classification_loss, batch)
    buffers = [b.clone() for b in model.buffers()]
    ours = per_example_moments(model, classification_loss, batch, batch_norm="eval")
    assert model[1].training
    for b, before in zip(model.buffers(), buffers):
        assert torch.equal(b, before)
    model.eval()
    reference = naive_moments(model, classification_loss, batch)
    for name, (mean, _, variance) in reference.items():
        torch.testing.assert_close(ours[name].mean, mean)
        torch.testing.assert_close(ours[name].variance, variance)


def test_by_product_recorder_matches_with_a_mean_loss():
    model, batch = convnet2d()
    n = len(batch[0])
    with record_moments(model, grad_scale=1.0 / n) as recorder:
        (classification_loss(model, batch)[0] / n).backward()
    ours = recorder.moments(n)
    for name, (mean, second, variance) in naive_moments(model, classification_loss, batch).items():
        torch.testing.assert_close(ours[name].mean, mean)
        torch.testing.assert_close(ours[name].second_moment, second)
        torch.testing.assert_close(ours[name].variance, variance)


@pytest.mark.parametrize("kernel,dilation,padding,stride", [((3, 3), (1, 1), (1, 1), (1, 1)), ((2, 3), (2, 1), (0, 2), (2, 3))])
def test_strided_unfold_equals_torch_unfold(kernel, dilation, padding, stride):
    from optimlab.instruments.layers import unfold

    x = torch.randn(3, 2, 9, 11)
    expected = nn.functional.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    assert torch.equal(unfold(x, kernel, dilation, padding, stride), expected)
