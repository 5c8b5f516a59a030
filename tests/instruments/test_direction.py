"""The optimizer-direction peek, the study's statistics and the repeated-draw instrument."""

import copy

import pytest
import torch
from instrument_loop import instruments_config, make_task
from torch import nn

from optimlab.instruments import Schedule, peek_direction
from optimlab.instruments.direction_variance import SAMPLER_OFFSET, DirectionVariance
from optimlab.instruments.statistics import (
    layer_statistics,
    study_estimate,
    unbiased_estimate,
)
from optimlab.optim import get_optimizer_class
from optimlab.train.hooks import RunContext, StepInfo

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "sgd_c": lambda p: get_optimizer_class("sgd_c")(p, lr=0.1),
    "adam_c": lambda p: get_optimizer_class("adam_c")(p, lr=0.01),
}


def same(a, b) -> bool:
    """Nested equality with tensors compared exactly."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def warmed(name):
    """A small model and its optimizer after three real steps (so momentum / Adam / memory state exists)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    optimizer = OPTIMIZERS[name](model.parameters())
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(6, 4, dtype=torch.float64)).square().mean().backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_peek_equals_the_real_step_and_changes_nothing(name):
    model, optimizer = warmed(name)
    params = list(model.parameters())
    grads = [torch.randn_like(p) for p in params]
    state = copy.deepcopy(optimizer.state_dict())
    before = [p.detach().clone() for p in params]
    peeked = peek_direction(optimizer, params, grads)
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert all(p.grad is not None for p in params)  # the live .grad is left as it was
    assert same(optimizer.state_dict(), state)
    for p, g in zip(params, grads):
        p.grad = g.clone()
    optimizer.step()
    lr = optimizer.param_groups[0]["lr"]
    for d, b, p in zip(peeked, before, params):
        torch.testing.assert_close(d, (b - p.detach()) / lr, rtol=1e-12, atol=1e-12)


def test_peek_of_plain_sgd_is_the_gradient():
    model, optimizer = warmed("sgd")
    params = list(model.parameters())
    grads = [torch.randn_like(p) for p in params]
    for d, g in zip(peek_direction(optimizer, params, grads), grads):
        torch.testing.assert_close(d, g, rtol=1e-12, atol=1e-12)


def test_unbiased_and_study_estimates_follow_their_formulas():
    torch.manual_seed(1)
    draws = torch.randn(7, 5, dtype=torch.float64) + 0.3
    est = unbiased_estimate(draws.sum(0), draws.square().sum(0), 7)
    torch.testing.assert_close(est.variance, draws.var(0, unbiased=True))
    torch.testing.assert_close(est.second_moment, draws.square().mean(0))
    stats = layer_statistics({"w": est})
    v, s = draws.var(0), draws.square().mean(0)
    assert stats["var"] == pytest.approx(float(v.mean()))
    assert stats["nvar"] == pytest.approx(float((v / (s + 1e-7)).mean()))
    assert stats["snr"] == pytest.approx(float((torch.log(s + 1e-10) - torch.log(v + 1e-10)).mean()))
    assert stats["gnorm"] == pytest.approx(float(s.mean()))
    # The study: phase-1 mean e, phase-2 S = sum d^2, V = sum (d - e)^2, var = sum V / (T D).
    phase1, phase2 = draws[:3], draws[3:6]
    e = phase1.mean(0)
    study = study_estimate(e, phase2.square().sum(0), (phase2 - e).square().sum(0), 3)
    stats = layer_statistics({"w": study})
    V, S = (phase2 - e).square().sum(0), phase2.square().sum(0)
    assert stats["var"] == pytest.approx(float(V.sum() / (3 * 5)))
    assert stats["nvar"] == pytest.approx(float((V / (S + 1e-7)).mean()))
    assert stats["gnorm"] == pytest.approx(float(S.sum() / (3 * 5)))


def test_overall_statistics_weight_layers_by_size():
    a = unbiased_estimate(torch.ones(2), torch.full((2,), 3.0), 2)
    b = unbiased_estimate(torch.zeros(6), torch.full((6,), 2.0), 2)
    stats = layer_statistics({"a": a, "b": b})
    assert stats["var"] == pytest.approx((2 * stats["var/a"] + 6 * stats["var/b"]) / 8)


def test_schedule():
    assert [s for s in range(12) if Schedule(every=4, start=2).due(s)] == [2, 6, 10]
    log = [s for s in range(200) if Schedule(log_spaced=2).due(s)]
    assert log == [0, 1, 3, 10, 31, 100]


def test_direction_variance_matches_a_hand_computed_estimate():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    task = make_task(model)
    ctx = RunContext(task=task, model=model, optimizer=optimizer, device=torch.device("cpu"), seed=3,
                     batch_size=12, steps=10)
    cfg = instruments_config(names=["direction_variance"], draws=4, every=1)
    instrument = DirectionVariance(cfg, ctx)
    instrument.after_backward(StepInfo(step=0, batch=task.train.batch(torch.arange(12)), indices=torch.arange(12)))
    stats = instrument.stats()
    sampler = ctx.sampler(task.train, SAMPLER_OFFSET, 8)
    grads = []
    for _ in range(4):
        batch = task.train.batch(sampler.next())
        loss_sum, count = task.loss(model(batch[0]), batch)
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_sum / count, model.parameters())]))
    grads = torch.stack(grads).double()
    assert stats["var"] == pytest.approx(float(grads.var(0).mean()), rel=1e-6)
    assert stats["sgd_var"] == pytest.approx(stats["var"], rel=1e-5)  # float32 move / lr
    assert stats["bias"] == pytest.approx(0.0, abs=1e-7)  # plain SGD's direction is the SGD direction
    assert stats["cost/grad_evals"] == 4
    assert "nvar/2.weight" in stats and "snr/0.bias" in stats


def test_instruments_config_errors_name_the_key():
    from optimlab.config import load_config
    from optimlab.errors import ConfigError

    assert load_config(["instruments=[grad_stats,hessian_top]"]).instruments.names == ["grad_stats", "hessian_top"]
    for bad, key in (("instruments=[grad_stat]", "instruments.names"), ("instruments=[step_stats,step_stats]",
                     "instruments.names"), ("instruments.draws=1", "instruments.draws"),
                     ("instruments.compat=biased", "instruments.compat"), ("instruments.every=0", "instruments.every")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config([bad])
