"""`muon` (MuonWithAdamW): torch's Muon on the hidden matrices and torch's AdamW on the rest, as one optimizer."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from optimlab.optim import MuonWithAdamW, build_optimizer
from optimlab.optim.param_groups import build_param_groups

KWARGS = {"lr": 0.02, "weight_decay": 0.01, "momentum": 0.9, "adamw_lr": 3e-3, "adamw_betas": (0.8, 0.99)}


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))


def _batches(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(count)]


def _grads(model: nn.Module, batch) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(batch[0]), batch[1])
    loss.backward()
    return loss


def _train(model, optimizer, batches) -> None:
    for batch in batches:
        _grads(model, batch)
        optimizer.step()


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_equals_torch_muon_and_adamw_run_side_by_side():
    """The reference: the two torch optimizers, each on its share of the parameters, bit for bit."""
    model, reference = _model(), _model()
    optimizer = build_optimizer("muon", build_param_groups(model, "muon", ["bias", "norm"]), **KWARGS)
    groups = build_param_groups(reference, "muon", ["bias", "norm"])
    hidden = next(g["params"] for g in groups if g["use_muon"])
    muon = torch.optim.Muon(hidden, lr=0.02, weight_decay=0.01, momentum=0.9)
    adamw = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "use_muon"} for g in groups if not g["use_muon"]],
        lr=3e-3, betas=(0.8, 0.99), weight_decay=0.01,
    )  # fmt: skip
    for batch in _batches(6):
        _grads(model, batch)
        optimizer.step()
        _grads(reference, batch)
        muon.step()
        adamw.step()
        assert _same(model, reference)
    assert not _same(model, _model())


def test_plain_parameters_split_by_shape_and_hyperparameters_per_side():
    model = _model()
    optimizer = MuonWithAdamW(model.parameters(), lr=0.05, adamw_betas=(0.5, 0.6))
    shapes = [(g["use_muon"], [tuple(p.shape) for p in g["params"]]) for g in optimizer.param_groups]
    assert shapes == [(True, [(8, 5), (8, 8), (3, 8)]), (False, [(8,), (8,), (8,), (8,), (3,)])]
    muon, adamw = optimizer.param_groups
    assert muon["momentum"] == 0.95 and "betas" not in muon and muon["weight_decay"] == 0.1
    assert adamw["betas"] == (0.5, 0.6) and adamw["lr"] == 0.05 and adamw["weight_decay"] == 0.1
    assert "momentum" not in adamw


def test_state_dict_round_trip_continues_in_lockstep():
    model = _model()
    optimizer = build_optimizer("muon", build_param_groups(model, "muon", ["bias"]), **KWARGS)
    batches = _batches(8)
    _train(model, optimizer, batches[:4])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = _model(seed=5)  # other weights and empty state: everything must come from the checkpoint
    resumed.load_state_dict(saved["model"])
    resumed_optimizer = build_optimizer("muon", build_param_groups(resumed, "muon", ["bias"]), **KWARGS)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    for batch in batches[4:]:
        _train(model, optimizer, [batch])
        _train(resumed, resumed_optimizer, [batch])
        assert _same(model, resumed)
    a, b = optimizer.state_dict(), resumed_optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert all(torch.equal(a["state"][i][k], b["state"][i][k]) for i in a["state"] for k in a["state"][i])
    assert {k for s in a["state"].values() for k in s} == {"momentum_buffer", "step", "exp_avg", "exp_avg_sq"}


def test_loading_a_state_dict_with_another_split_is_refused():
    model = _model()
    optimizer = MuonWithAdamW(build_param_groups(model, "muon"))
    other = MuonWithAdamW([{"params": list(model.parameters())[:1], "use_muon": False},
                           {"params": list(model.parameters())[1:], "use_muon": False}])  # fmt: skip
    with pytest.raises(ValueError, match="differently"):
        optimizer.load_state_dict(other.state_dict())


def test_deepcopy_continues_in_lockstep():
    model = _model()
    optimizer = MuonWithAdamW(build_param_groups(model, "muon"), lr=0.02)
    _train(model, optimizer, _batches(2))
    twin_model, twin = copy.deepcopy((model, optimizer))  # one copy: the twin optimizer holds twin_model's tensors
    assert twin._muon.param_groups[0] is twin.param_groups[0] and twin._adamw.state is twin.state
    for batch in _batches(3):
        _train(model, optimizer, [batch])
        _train(twin_model, twin, [batch])
    assert _same(model, twin_model)


def test_lr_scheduler_drives_both_sides():
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = MuonWithAdamW(build_param_groups(model, "muon"), lr=0.02, adamw_lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.0)  # lr 0: no update, no decay
    _train(model, optimizer, _batches(2))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    scheduler.step()
    assert [g["initial_lr"] for g in optimizer.param_groups] == [0.02, 0.01]


def test_step_with_closure_evaluates_it_once_and_returns_the_loss():
    model = _model()
    optimizer = MuonWithAdamW(build_param_groups(model, "muon"))
    batch, calls = _batches(1)[0], []

    def closure():
        calls.append(1)
        return _grads(model, batch)

    loss = optimizer.step(closure)
    assert len(calls) == 1 and torch.isfinite(loss)


def test_add_param_group_routes_by_shape_or_flag():
    model = _model()
    optimizer = MuonWithAdamW(build_param_groups(model, "muon"))
    extra = [nn.Parameter(torch.randn(4, 4)), nn.Parameter(torch.randn(4))]
    optimizer.add_param_group({"params": extra, "lr": 0.5})
    assert [(g["use_muon"], g["lr"]) for g in optimizer.param_groups[-2:]] == [(True, 0.5), (False, 0.5)]
    assert optimizer._muon.param_groups[-1] is optimizer.param_groups[-2]
    with pytest.raises(ValueError, match="more than one parameter group"):
        optimizer.add_param_group({"params": [extra[0]], "use_muon": True})
    with pytest.raises(ValueError, match="not 2-D"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.randn(3))], "use_muon": True})


def test_a_model_without_hidden_matrices_trains_on_adamw_alone():
    model = nn.Linear(3, 2)
    optimizer = build_optimizer("muon", build_param_groups(model, "muon"), lr=0.1)
    assert [g["use_muon"] for g in optimizer.param_groups] == [False]
    model.weight.grad, model.bias.grad = torch.ones(2, 3), torch.ones(2)
    before = model.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(model.weight, before)
