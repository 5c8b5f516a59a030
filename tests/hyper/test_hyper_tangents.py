"""The tangent dw/dlr and the hypergradient against central finite differences of real torch.optim runs.

Everything in float64: for each base optimizer configuration, T >= 10 steps of the real `torch.optim` optimizer
from the same initial weights on the same data stream with lr + eps and lr - eps give
(w_T(lr + eps) - w_T(lr - eps)) / (2 eps), which must match Marthe's tangent (mu = 1, hyper_lr = 0, so the lr
stays constant) to a relative error below 1e-6 (measured: about 1e-10). The hypergradient e . z must
match the finite-difference derivative of the validation loss at w_T.
"""

from __future__ import annotations

import pytest
import torch
from hyper_helpers import batches, loss_fn, make_conv_model, make_model

from optimlab.hyper import Marthe

STEPS = 12
TOL = 1e-6

SGD_CASES = {
    "sgd": dict(),
    "sgd_wd": dict(weight_decay=0.05),
    "sgd_momentum_wd": dict(momentum=0.9, weight_decay=0.05),
    "sgd_dampening_wd": dict(momentum=0.9, dampening=0.3, weight_decay=0.01),
    "sgd_nesterov_wd": dict(momentum=0.9, nesterov=True, weight_decay=0.05),
}
ADAM_CASES = {
    "adam": (torch.optim.Adam, dict()),
    "adam_l2": (torch.optim.Adam, dict(weight_decay=0.05, betas=(0.8, 0.99))),
    "adamw": (torch.optim.AdamW, dict(weight_decay=0.05)),
    "adam_amsgrad_l2": (torch.optim.Adam, dict(amsgrad=True, weight_decay=0.01)),
    "adamw_amsgrad": (torch.optim.AdamW, dict(amsgrad=True, weight_decay=0.1, eps=1e-6)),
    "adam_decoupled_flag": (torch.optim.Adam, dict(weight_decay=0.1, decoupled_weight_decay=True)),
}


def _factories():
    out = {name: (lambda params, lr, kw=kw: torch.optim.SGD(params, lr=lr, **kw), 0.05)
           for name, kw in SGD_CASES.items()}
    out.update({name: (lambda params, lr, cls=cls, kw=kw: cls(params, lr=lr, **kw), 0.01)
                for name, (cls, kw) in ADAM_CASES.items()})
    return out


FACTORIES = _factories()


def _trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def _run_torch(model_fn, make_opt, lr, data, loss=loss_fn):
    model = model_fn()
    opt = make_opt(_trainable(model), lr)
    for batch in data:
        opt.zero_grad()
        loss(model, batch).backward()
        opt.step()
    return model


def _run_marthe(model_fn, make_opt, lr, data, val, loss=loss_fn, **kwargs):
    model = model_fn()
    hyper = Marthe(make_opt(_trainable(model), lr), hyper_lr=0.0, mu=1.0, **kwargs)
    for batch in data:
        hyper.step(loss(model, batch), lambda: loss(model, val))
    return model, hyper


def _flat(tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _check_against_fd(model_fn, make_opt, lr, data, val, loss=loss_fn, **kwargs):
    eps = 1e-5 * lr
    plus = _run_torch(model_fn, make_opt, lr + eps, data, loss)
    minus = _run_torch(model_fn, make_opt, lr - eps, data, loss)
    fd = (_flat(_trainable(plus)) - _flat(_trainable(minus))) / (2 * eps)
    model, hyper = _run_marthe(model_fn, make_opt, lr, data, val, loss, **kwargs)
    z = _flat(hyper.tangent())
    tangent_error = float((z - fd).norm() / fd.norm())
    assert tangent_error < TOL, tangent_error

    # Marthe drives exactly the torch trajectory (same gradients, no clipping, lr unchanged).
    reference = _run_torch(model_fn, make_opt, lr, data, loss)
    assert torch.equal(_flat(_trainable(model)), _flat(_trainable(reference)))

    with torch.no_grad():
        h_fd = float(loss(plus, val) - loss(minus, val)) / (2 * eps)
    h_error = abs(hyper.last_hypergradient - h_fd) / abs(h_fd)
    assert h_error < TOL, (hyper.last_hypergradient, h_fd)
    return tangent_error, h_error


@pytest.mark.parametrize("name", list(FACTORIES))
def test_tangent_and_hypergradient_match_finite_differences(name):
    make_opt, lr = FACTORIES[name]
    _check_against_fd(make_model, make_opt, lr, batches(STEPS), batches(1, seed=7)[0])


@pytest.mark.parametrize("name", ["sgd_momentum_wd", "sgd_nesterov_wd", "adam_l2", "adamw_amsgrad"])
def test_conv_net_tangent(name):
    """Conv weights give non-contiguous Hessian-vector products (AdaTune's `.view` crash, spec B.11)."""
    make_opt, lr = FACTORIES[name]
    data = batches(10, shape=(4, 1, 6, 6))
    _check_against_fd(make_conv_model, make_opt, lr, data, batches(1, seed=7, shape=(4, 1, 6, 6))[0])


@pytest.mark.parametrize("name", ["sgd_dampening_wd", "adamw"])
def test_unused_and_frozen_parameters(name):
    make_opt, lr = FACTORIES[name]
    _check_against_fd(lambda: make_model(unused=True, frozen=True), make_opt, lr, batches(STEPS),
                      batches(1, seed=7)[0])


def _two_head_loss(model, batch):
    """The second head is in the loss on steps 2, 3, 5, 6, ...: its first gradient meets a non-zero tangent
    (and starts its momentum buffer then), and every third step it has no gradient at all."""
    x, y = batch
    calls = getattr(model, "calls", 0)
    model.calls = calls + 1
    out = model(x)
    if calls % 3 != 0:
        out = out + model.head(x)
    return torch.nn.functional.cross_entropy(out, y)


def _two_head_model():
    model = make_model()
    torch.manual_seed(3)
    model.head = torch.nn.Linear(4, 3).double()
    return model


@pytest.mark.parametrize("name", ["sgd_dampening_wd", "sgd_nesterov_wd", "adam_l2", "adamw_amsgrad"])
def test_parameters_with_intermittent_gradients(name):
    """Steps where a parameter has no gradient leave it and its state alone (torch skips it): A = I there."""
    make_opt, lr = FACTORIES[name]
    data = batches(STEPS)
    val = batches(1, seed=7)[0]

    def loss(model, batch):
        if batch is val:  # the validation loss uses both heads
            x, y = batch
            return torch.nn.functional.cross_entropy(model(x) + model.head(x), y)
        return _two_head_loss(model, batch)

    _check_against_fd(_two_head_model, make_opt, lr, data, val, loss)


def test_param_groups_with_lr_ratios_and_own_hyperparameters():
    """Group 1 runs at 0.4 lr with its own weight decay: d w / d lr includes the ratio."""

    def make_opt(params, lr):
        return torch.optim.SGD([{"params": params[:2], "weight_decay": 0.05},
                                {"params": params[2:], "lr": 0.4 * lr, "momentum": 0.5}], lr=lr, momentum=0.9)

    _check_against_fd(make_model, make_opt, 0.05, batches(STEPS), batches(1, seed=7)[0])


def test_validation_every_k_steps_keeps_the_tangent_exact():
    make_opt, lr = FACTORIES["adamw"]
    calls = []
    val = batches(1, seed=7)[0]

    def loss(model, batch):
        if batch is val:
            calls.append(1)
        return loss_fn(model, batch)

    _check_against_fd(make_model, make_opt, lr, batches(STEPS), val, loss, val_every=4)
    # 3 finite-difference evaluations at the end (plus, minus) are outside Marthe; it called 12 / 4 = 3 times.
    assert len(calls) == STEPS // 4 + 2


def _quadratic_run(mu, steps=6, lr=0.1):
    """SGD on 0.5 w'Qw - b'w: A = I - lr Q and B = -g, so z' = mu (I - lr Q) z - g by hand."""
    torch.manual_seed(0)
    m = torch.randn(5, 5, dtype=torch.float64)
    q = m @ m.T / 5 + torch.eye(5, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    hyper = Marthe(torch.optim.SGD([w], lr=lr), hyper_lr=0.0, mu=mu)
    z = torch.zeros(5, dtype=torch.float64)
    for _ in range(steps):
        with torch.no_grad():
            g = q @ w - b
            z = mu * (z - lr * (q @ z)) - g
        hyper.step(0.5 * w @ q @ w - b @ w, lambda: (w**2).sum())
    return hyper.tangent()[0], z


@pytest.mark.parametrize("mu", [0.0, 0.3, 0.9, 1.0])
def test_discounted_tangent_follows_the_marthe_recursion(mu):
    ours, by_hand = _quadratic_run(mu)
    torch.testing.assert_close(ours, by_hand, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["sgd_momentum_wd", "adam_l2"])
def test_first_order_and_mu_zero_give_the_one_step_derivative(name):
    """z = B_t = (w_{t+1} - w_t) / lr for SGD and coupled-L2 Adam (the update is lr times a direction)."""
    make_opt, lr = FACTORIES[name]
    data = batches(5)
    val = batches(1, seed=7)[0]
    for kwargs in (dict(mu=0.0), dict(mu=1.0, first_order=True)):
        model = make_model()
        hyper = Marthe(make_opt(list(model.parameters()), lr), hyper_lr=0.0, **kwargs)
        for batch in data:
            before = _flat(model.parameters())
            hyper.step(loss_fn(model, batch), lambda: loss_fn(model, val))
        step = (_flat(model.parameters()) - before) / lr
        torch.testing.assert_close(_flat(hyper.tangent()), step, rtol=1e-9, atol=1e-12)


def _zero_feature(data):
    """Input feature 0 is always 0: its first-layer weights get exactly zero gradients (Adam's v = m = 0)."""
    return [(x.clone().index_fill_(1, torch.tensor([0]), 0.0), y) for x, y in data]


@pytest.mark.parametrize("name", ["adam", "adamw", "adamw_amsgrad"])
def test_adam_coordinates_with_zero_gradients(name):
    """v^ = 0 where the gradient has always been 0: the tangent must stay exact (not 0/0) there."""
    make_opt, lr = FACTORIES[name]
    _check_against_fd(make_model, make_opt, lr, _zero_feature(batches(STEPS)), _zero_feature(batches(1, seed=7))[0])


def test_adam_tangent_stays_finite_in_float32():
    """In float32, s * (s + eps)^2 underflows to 0 for tiny s: the division must not produce NaN."""
    model = make_model().float()
    data = [(x.float(), y) for x, y in _zero_feature(batches(20))]
    hyper = Marthe(torch.optim.Adam(model.parameters(), lr=3e-3), hyper_lr=1e-6, mu=1.0)
    for batch in data:
        hyper.step(loss_fn(model, batch), lambda: loss_fn(model, data[0]))
    assert hyper.restarts == 0
    assert all(torch.isfinite(z).all() for z in hyper.tangent())
