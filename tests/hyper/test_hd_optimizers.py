"""SGDHD and AdamHD (Baydin et al.'s hypergradient descent) against slow references."""

from __future__ import annotations

import pytest
import torch
from hyper_helpers import batches, loss_fn, make_model

from optimlab.optim import AdamHD, SGDHD, build_optimizer


def _flat(tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _reference_sgd_hd(model, data, lr, hypergrad_lr, momentum=0.0, dampening=0.0, nesterov=False):
    """The original algorithm (spec B.7) on one flat vector: h = g . u_prev, lr += beta h, then the SGD step."""
    params = list(model.parameters())
    w = _flat(params).clone()
    u_prev = torch.zeros_like(w)
    buf = None
    lrs = []
    for batch in data:
        with torch.no_grad():
            offset = 0
            for p in params:
                p.copy_(w[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        g = _flat(torch.autograd.grad(loss_fn(model, batch), params))
        lr = lr + hypergrad_lr * float(g @ u_prev)
        if momentum:
            buf = g.clone() if buf is None else momentum * buf + (1 - dampening) * g
            u = g + momentum * buf if nesterov else buf
        else:
            u = g
        w = w - lr * u
        u_prev = u
        lrs.append(lr)
    return w, lrs


@pytest.mark.parametrize("kwargs", [dict(), dict(momentum=0.9), dict(momentum=0.9, dampening=0.2),
                                    dict(momentum=0.9, nesterov=True)])
def test_sgd_hd_matches_the_original_algorithm(kwargs):
    data = batches(15)
    expected, expected_lrs = _reference_sgd_hd(make_model(), data, lr=0.05, hypergrad_lr=0.01, **kwargs)
    model = make_model()
    opt = SGDHD(model.parameters(), lr=0.05, hypergrad_lr=0.01, **kwargs)
    lrs = []
    for batch in data:
        opt.zero_grad()
        loss_fn(model, batch).backward()
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
        assert type(lrs[-1]) is float
    torch.testing.assert_close(_flat(model.parameters()), expected, rtol=1e-12, atol=1e-14)
    assert lrs == pytest.approx(expected_lrs, rel=1e-12)
    assert len(set(lrs)) > 10  # the lr did adapt


def test_sgd_hd_weight_decay_leaves_grad_alone_and_matches_torch_sgd_without_hd():
    data = batches(6)
    for kwargs in (dict(weight_decay=0.1), dict(weight_decay=0.1, momentum=0.9, nesterov=True)):
        model, reference = make_model(), make_model()
        opt = SGDHD(model.parameters(), lr=0.05, hypergrad_lr=0.0, **kwargs)
        ref_opt = torch.optim.SGD(reference.parameters(), lr=0.05, **kwargs)
        for batch in data:
            for m, o in ((model, opt), (reference, ref_opt)):
                o.zero_grad()
                loss_fn(m, batch).backward()
            grads = [p.grad.clone() for p in model.parameters()]
            opt.step()
            ref_opt.step()
            assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
        torch.testing.assert_close(_flat(model.parameters()), _flat(reference.parameters()), rtol=1e-12, atol=1e-14)


def test_adam_hd_without_hypergradient_is_torch_adam():
    data = batches(8)
    model, reference = make_model(), make_model()
    opt = AdamHD(model.parameters(), lr=0.01, weight_decay=0.05, betas=(0.8, 0.99), hypergrad_lr=0.0)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=0.01, weight_decay=0.05, betas=(0.8, 0.99))
    for batch in data:
        for m, o in ((model, opt), (reference, ref_opt)):
            o.zero_grad()
            loss_fn(m, batch).backward()
            o.step()
    torch.testing.assert_close(_flat(model.parameters()), _flat(reference.parameters()), rtol=1e-12, atol=1e-14)


def test_adam_hd_updates_each_group_lr_once_per_step():
    """lr_new = lr + beta * sum over ALL the group's tensors of g . u_prev (the original: once per tensor)."""
    model = make_model(unused=True)
    params = [p for p in model.parameters()]
    opt = AdamHD([{"params": params[:2]}, {"params": params[2:], "lr": 0.02}], lr=0.01, hypergrad_lr=1e-3,
                 weight_decay=0.01)
    data = batches(5)
    for i, batch in enumerate(data):
        opt.zero_grad()
        loss_fn(model, batch).backward()
        expected = []
        for group in opt.param_groups:
            h = 0.0
            for p in group["params"]:
                if p.grad is not None and "prev_update" in opt.state[p]:
                    h += float(((p.grad + 0.01 * p.detach()) * opt.state[p]["prev_update"]).sum())
            expected.append(group["lr"] + 1e-3 * h)
        opt.step()
        got = [group["lr"] for group in opt.param_groups]
        assert all(type(lr) is float for lr in got)
        assert got == pytest.approx(expected, rel=1e-12)
        if i > 0:
            assert got[0] != 0.01 and got[1] != 0.02
    assert model.unused.weight.grad is None and len(opt.state[model.unused.weight]) == 0


def test_hd_lr_is_projected():
    model = make_model()
    for cls, kwargs in ((SGDHD, dict(momentum=0.9)), (AdamHD, dict())):
        opt = cls(model.parameters(), lr=0.05, hypergrad_lr=1e6, lr_max=0.06, **kwargs)
        lrs = []
        for batch in batches(6):
            opt.zero_grad()
            loss_fn(model, batch).backward()
            opt.step()
            lrs.append(opt.param_groups[0]["lr"])
        assert all(0.0 <= lr <= 0.06 for lr in lrs) and {0.0, 0.06} & set(lrs)


def test_registered_names():
    params = list(make_model().parameters())
    assert isinstance(build_optimizer("sgd_hd", params, lr=0.1, momentum=0.9, hypergrad_lr=1e-4), SGDHD)
    assert isinstance(build_optimizer("adam_hd", params, hypergrad_lr=1e-6), AdamHD)
