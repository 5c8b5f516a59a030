"""Marthe as a controller: checkpoint round trip, lr projection, the NaN guard, variants, argument checks."""

from __future__ import annotations

import io
import math

import pytest
import torch
from hyper_helpers import batches, loss_fn, make_conv_model, make_model

from optimlab.config import HyperConfig
from optimlab.hyper import Marthe, build_hyper, rtho
from optimlab.hyper.heuristics import adatune_update, marthe_tf_update


def _flat(tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _run(hyper, model, data, val):
    for batch in data:
        hyper.step(loss_fn(model, batch), lambda: loss_fn(model, val))


def _snapshot(hyper, model):
    return (_flat(model.parameters()), hyper.lr, hyper.mu, hyper.hyper_lr, hyper.last_hypergradient,
            _flat(hyper.tangent()))


def _assert_identical(a, b):
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y)
        else:
            assert x == y


OPTIMIZERS = {
    "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adam_amsgrad": lambda ps: torch.optim.Adam(ps, lr=0.01, amsgrad=True),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.01),
}


@pytest.mark.parametrize("variant", ["adatune", "marthe_tf"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_round_trip_continues_bit_identically(name, variant):
    data, val = batches(10), batches(1, seed=7)[0]
    kwargs = dict(hyper_lr=1e-3, mu=-1.0, alpha=1e-3, variant=variant, val_every=2)
    model_a = make_model()
    opt_a = OPTIMIZERS[name](model_a.parameters())
    hyper_a = Marthe(opt_a, **kwargs)
    _run(hyper_a, model_a, data[:5], val)  # odd count: the next step validates, resumed mid-period

    stream = io.BytesIO()
    torch.save({"model": model_a.state_dict(), "optim": opt_a.state_dict(), "hyper": hyper_a.state_dict()}, stream)
    stream.seek(0)
    saved = torch.load(stream, weights_only=True)

    model_b = make_model(seed=123)  # different init: everything must come from the checkpoint
    model_b.load_state_dict(saved["model"])
    opt_b = OPTIMIZERS[name](model_b.parameters())
    opt_b.load_state_dict(saved["optim"])
    hyper_b = Marthe(opt_b, **{**kwargs, "hyper_lr": 0.5, "mu": 0.2})
    hyper_b.load_state_dict(saved["hyper"])
    _assert_identical(_snapshot(hyper_a, model_a), _snapshot(hyper_b, model_b))
    assert hyper_b.steps == hyper_a.steps == 5

    _run(hyper_a, model_a, data[5:], val)
    _run(hyper_b, model_b, data[5:], val)
    _assert_identical(_snapshot(hyper_a, model_a), _snapshot(hyper_b, model_b))
    assert hyper_a.lr != 0.01 and hyper_a.lr != 0.05  # the lr did move


def test_load_rejects_a_state_for_other_parameters():
    model = make_model()
    hyper = Marthe(torch.optim.SGD(model.parameters(), lr=0.1), hyper_lr=0.0)
    other = Marthe(torch.optim.SGD(make_conv_model().parameters(), lr=0.1), hyper_lr=0.0)
    with pytest.raises(ValueError, match="shape|match"):
        hyper.load_state_dict(other.state_dict())
    momentum = Marthe(torch.optim.SGD(make_model().parameters(), lr=0.1, momentum=0.9), hyper_lr=0.0)
    with pytest.raises(ValueError, match="state tangents"):
        hyper.load_state_dict(momentum.state_dict())


def test_lr_is_projected_into_its_bounds():
    data = batches(4)
    for sign, bounds, expected in ((1.0, (0.0, None), 0.0), (-1.0, (0.01, 0.2), 0.2), (1.0, (0.03, 0.2), 0.03)):
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        hyper = Marthe(opt, hyper_lr=1e6, mu=1.0, lr_bounds=bounds)
        # The validation "loss" makes h = sign * |z|^2 so the lr update direction is known.
        for batch in data:
            hyper.step(loss_fn(model, batch),
                       lambda: sign * 0.5 * sum(((p - p.detach()) + z) .pow(2).sum()
                                                for p, z in zip(model.parameters(), hyper.tangent())))
        assert hyper.lr == expected
        assert all(g["lr"] == expected and isinstance(g["lr"], float) for g in opt.param_groups)


def test_nonfinite_hypergradient_restarts_the_tangent_and_halves_hyper_lr(caplog):
    data, val = batches(6), batches(1, seed=7)[0]
    model = make_model()
    hyper = Marthe(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), hyper_lr=1e-3, mu=-1.0)
    _run(hyper, model, data[:3], val)
    lr, mu = hyper.lr, hyper.mu
    assert any(z.abs().sum() > 0 for z in hyper.tangent())
    with caplog.at_level("WARNING", logger="optimlab.hyper.marthe"):
        hyper.step(loss_fn(model, data[3]), lambda: loss_fn(model, val) * float("nan"))
    assert hyper.restarts == 1 and len(hyper.events) == 1
    assert hyper.events[0]["event"] == "nonfinite_hypergradient" and hyper.events[0]["step"] == 4
    assert "non-finite hypergradient" in caplog.text
    assert hyper.hyper_lr == 0.5e-3
    assert hyper.lr == lr  # kept
    assert hyper.mu == 0.0 and mu >= 0.0  # adaptive mu restarts with the tangent
    assert all(torch.count_nonzero(z) == 0 for z in hyper.tangent())
    _run(hyper, model, data[4:], val)  # and training goes on normally
    assert math.isfinite(hyper.last_hypergradient) and hyper.restarts == 1
    assert all(torch.isfinite(z).all() for z in hyper.tangent())
    state = hyper.state_dict()
    assert state["restarts"] == 1 and state["events"][0]["step"] == 4


def test_training_gradients_are_not_clipped_and_grad_is_set():
    """p.grad after a step is exactly the training gradient (no hidden clamp), even with tangent_clip."""
    model = make_model()
    batch, val = batches(1)[0], batches(1, seed=7)[0]
    expected = torch.autograd.grad(loss_fn(model, batch) * 1e4, list(model.parameters()))
    hyper = Marthe(torch.optim.SGD(model.parameters(), lr=0.0), hyper_lr=0.0, tangent_clip=1e-3)
    hyper.step(loss_fn(model, batch) * 1e4, lambda: loss_fn(model, val))
    assert max(float(g.abs().max()) for g in expected) > 100
    for p, g in zip(model.parameters(), expected):
        assert torch.equal(p.grad, g)


def test_val_every_calls_the_closure_only_on_validation_steps():
    data, val = batches(7), batches(1, seed=7)[0]
    model = make_model()
    hyper = Marthe(torch.optim.SGD(model.parameters(), lr=0.05), hyper_lr=1e-2, mu=0.9, val_every=3)
    calls, lrs = [], []
    for i, batch in enumerate(data):
        assert hyper.validates_next_step == ((i + 1) % 3 == 0)
        hyper.step(loss_fn(model, batch), lambda: calls.append(i) or loss_fn(model, val))
        lrs.append(hyper.lr)
    assert calls == [2, 5]
    assert lrs[0] == lrs[1] == 0.05 and lrs[2] != 0.05 and lrs[3] == lrs[4] == lrs[2] and lrs[5] != lrs[4]
    with pytest.raises(ValueError, match="val_closure"):
        Marthe(torch.optim.SGD(make_model().parameters(), lr=0.1), hyper_lr=0.0).step(loss_fn(model, val))


def test_param_groups_keep_their_lr_ratio():
    model = make_model()
    params = list(model.parameters())
    opt = torch.optim.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.01}], lr=0.04)
    hyper = Marthe(opt, hyper_lr=1e-2, mu=1.0)
    _run(hyper, model, batches(3), batches(1, seed=7)[0])
    assert hyper.lr != 0.04
    assert opt.param_groups[0]["lr"] == hyper.lr and opt.param_groups[1]["lr"] == pytest.approx(0.25 * hyper.lr)


def test_adaptive_mu_follows_the_adatune_rule_on_real_gradients():
    """After a validation step mu = clip(lr_new / (e . g), 0, 1) ** (1 / (c + 1)), with e and g by hand."""
    model = make_model()
    data, val = batches(3), batches(1, seed=7)[0]
    hyper = Marthe(torch.optim.SGD(model.parameters(), lr=0.05), hyper_lr=1e-3, mu=-1.0)
    _run(hyper, model, data[:2], val)
    mu_before, c_before = hyper.mu, hyper.state_dict()["c"]
    g = torch.autograd.grad(loss_fn(model, data[2]), list(model.parameters()))
    hyper.step(loss_fn(model, data[2]), lambda: loss_fn(model, val))
    e = torch.autograd.grad(loss_fn(model, val), list(model.parameters()))
    e_dot_g = float(sum((a * b).sum() for a, b in zip(e, g)))
    _, mu, c = adatune_update(hyper_lr=0.0, mu=mu_before, c=c_before, h=0.0, lr_new=hyper.lr, e_dot_g=e_dot_g,
                              alpha=0.0, adapt_mu=True)
    assert hyper.mu == pytest.approx(mu, rel=1e-10) and hyper.state_dict()["c"] == pytest.approx(c)


def test_adaptive_mu_follows_the_marthe_tf_rule_on_real_gradients():
    """mu = clip(h / (e . B_t), 0, 1), with B_t = (w_{t+1} - w_t) / lr for plain SGD."""
    model = make_model()
    data, val = batches(4), batches(1, seed=7)[0]
    hyper = Marthe(torch.optim.SGD(model.parameters(), lr=0.05), hyper_lr=1e-3, mu=-1.0, variant="marthe_tf")
    _run(hyper, model, data[:1], val)
    assert hyper.mu == pytest.approx(1.0)  # the first tangent is B itself: h / (e . B) = 1
    _run(hyper, model, data[1:3], val)
    before, lr = _flat(model.parameters()), hyper.lr
    hyper.step(loss_fn(model, data[3]), lambda: loss_fn(model, val))
    direction = (_flat(model.parameters()) - before) / lr
    e = _flat(torch.autograd.grad(loss_fn(model, val), list(model.parameters())))
    expected = min(max(hyper.last_hypergradient / float(e @ direction), 0.0), 1.0)
    assert hyper.mu == pytest.approx(expected, rel=1e-8, abs=1e-12)


def test_rtho_and_build_hyper():
    opt = torch.optim.SGD(make_model().parameters(), lr=0.1, momentum=0.9)
    assert rtho(opt, 1e-3).mu == 1.0
    with pytest.raises(ValueError, match="mu"):
        rtho(opt, 1e-3, mu=0.5)
    assert build_hyper(HyperConfig(), opt) is None
    cfg = HyperConfig(name="marthe", hyper_lr=1e-3, mu=-1.0, alpha=1e-4, variant="marthe_tf", lr_min=0.001,
                      lr_max=0.5, val_every=4)
    hyper = build_hyper(cfg, opt)
    assert (hyper.hyper_lr, hyper.mu, hyper.alpha, hyper.variant, hyper.lr_bounds, hyper.val_every) == (
        1e-3, 0.0, 1e-4, "marthe_tf", (0.001, 0.5), 4)
    assert build_hyper(HyperConfig(name="rtho", mu=0.3), opt).mu == 1.0


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (lambda ps: torch.optim.NAdam(ps), {}, "NAdam"),
        (lambda ps: torch.optim.SGD(ps, lr=0.1, maximize=True), {}, "maximize"),
        (lambda ps: torch.optim.SGD(ps, lr=0.1), {"hyper_lr": -1.0}, "hyper_lr"),
        (lambda ps: torch.optim.SGD(ps, lr=0.1), {"mu": 1.5}, "mu"),
        (lambda ps: torch.optim.SGD(ps, lr=0.1), {"alpha": -1.0}, "alpha"),
        (lambda ps: torch.optim.SGD(ps, lr=0.1), {"variant": "paper"}, "variant"),
        (lambda ps: torch.optim.SGD(ps, lr=0.1), {"val_every": 0}, "val_every"),
        (lambda ps: torch.optim.SGD(ps, lr=0.1), {"lr_bounds": (0.1, 0.01)}, "lr_bounds"),
        (lambda ps: torch.optim.SGD(ps, lr=0.1), {"lr_bounds": (-1.0, None)}, "lr_bounds"),
        (lambda ps: torch.optim.SGD(ps, lr=0.1), {"tangent_clip": 0.0}, "tangent_clip"),
    ],
)
def test_invalid_arguments_are_rejected(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Marthe(make(make_model().parameters()), **{"hyper_lr": 1e-3, **kwargs})


def test_heuristics_by_hand():
    # AdaTune: beta <- max(beta + alpha h lr_new, 0); c <- c sign(mu) + mu; mu <- clip(lr_new / e.g) ** (1/(c+1)).
    beta, mu, c = adatune_update(hyper_lr=0.1, mu=0.5, c=1.0, h=2.0, lr_new=0.3, e_dot_g=0.6, alpha=0.01,
                                 adapt_mu=True)
    assert beta == pytest.approx(0.106) and c == pytest.approx(1.5) and mu == pytest.approx(0.5**0.4)
    beta, mu, c = adatune_update(hyper_lr=0.1, mu=0.0, c=3.0, h=-20.0, lr_new=0.3, e_dot_g=0.2, alpha=0.1,
                                 adapt_mu=True)
    assert beta == 0.0 and c == 0.0 and mu == 1.0  # beta floored at 0; mu = 0 reset c; q = 1.5 clipped to 1
    _, mu, c = adatune_update(hyper_lr=0.1, mu=0.8, c=0.7, h=1.0, lr_new=0.3, e_dot_g=-0.2, alpha=0.0,
                              adapt_mu=True)
    assert mu == 0.0 and c == pytest.approx(1.5)  # disagreeing gradients: forget the history
    assert adatune_update(hyper_lr=0.1, mu=0.8, c=0.7, h=1.0, lr_new=0.3, e_dot_g=0.2, alpha=0.0,
                          adapt_mu=False) == (0.1, 0.8, 0.7)
    # Marthe-TF: beta <- max(beta + alpha h h_prev, 0); mu <- clip(h / e.B, 0, 1).
    beta, mu = marthe_tf_update(hyper_lr=0.1, mu=0.5, h=2.0, h_prev=3.0, e_dot_direction=4.0, alpha=0.01,
                                adapt_mu=True)
    assert beta == pytest.approx(0.16) and mu == 0.5
    beta, mu = marthe_tf_update(hyper_lr=0.1, mu=0.5, h=-2.0, h_prev=3.0, e_dot_direction=-1.0, alpha=1.0,
                                adapt_mu=True)
    assert beta == 0.0 and mu == 1.0
    assert marthe_tf_update(hyper_lr=0.1, mu=0.5, h=2.0, h_prev=3.0, e_dot_direction=0.0, alpha=0.0,
                            adapt_mu=True) == (0.1, 0.0)
