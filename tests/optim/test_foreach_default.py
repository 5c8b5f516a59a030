"""torch.optim's multi-tensor step as optimlab's default where it computes exactly the single-tensor one."""

import itertools

import pytest
import torch

from optimlab.optim import build_optimizer
from optimlab.optim.registry import FOREACH_IDENTICAL, takes_foreach_default

SHAPES = [(12, 5), (12,), (3, 12), (3,)]

# Option grids per optimizer: the defaults of FOREACH_IDENTICAL and every switch that changes the arithmetic.
GRIDS = {
    "adam": {"lr": [3e-2], "weight_decay": [0, 0.1], "amsgrad": [False, True], "maximize": [False, True],
             "betas": [(0.9, 0.999), (0.5, 0.9)]},
    "adamw": {"lr": [1e-2], "weight_decay": [0, 0.1], "amsgrad": [False, True], "maximize": [False, True]},
    "sgd": {"lr": [0.1, 3.16], "momentum": [0, 0.9], "weight_decay": [0, 1e-2], "dampening": [0, 0.1],
            "maximize": [False, True]},
    "rmsprop": {"lr": [1e-2], "momentum": [0, 0.9], "centered": [False, True], "weight_decay": [0, 1e-2],
                "maximize": [False, True]},
    "adagrad": {"lr": [1e-2], "lr_decay": [0, 1e-3], "weight_decay": [0, 1e-2], "maximize": [False, True]},
    "adamax": {"lr": [2e-3], "weight_decay": [0, 1e-2], "maximize": [False, True]},
    "adadelta": {"lr": [1.0], "weight_decay": [0, 1e-2], "maximize": [False, True]},
    "rprop": {"lr": [1e-2], "maximize": [False, True]},
}


def trajectory(name: str, kwargs: dict, steps: int = 12) -> list[torch.Tensor]:
    """Parameters, gradients and state tensors after `steps` steps on seeded random gradients."""
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in SHAPES]
    optimizer = build_optimizer(name, params, **kwargs)
    seen = []
    for step in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator) * (1 + step % 3)
        optimizer.step()
        seen += [p.detach().clone() for p in params] + [p.grad.clone() for p in params]
    seen += [v for p in params for _, v in sorted(optimizer.state[p].items()) if torch.is_tensor(v)]
    return seen


def test_grids_cover_every_listed_optimizer():
    assert sorted(GRIDS) == sorted(FOREACH_IDENTICAL)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_default_step_is_bit_identical_to_the_single_tensor_step(name):
    grid = GRIDS[name]
    for values in itertools.product(*grid.values()):
        kwargs = dict(zip(grid, values))
        single = trajectory(name, {**kwargs, "foreach": False})
        default = trajectory(name, kwargs)
        assert len(single) == len(default)
        assert all(torch.equal(a, b) for a, b in zip(single, default)), kwargs


def test_sgd_nesterov_keeps_the_gradient():
    # torch's multi-tensor Nesterov step writes its direction into .grad: left to torch's default.
    kwargs = {"lr": 0.1, "momentum": 0.9, "nesterov": True}
    assert not takes_foreach_default("sgd", kwargs)
    assert all(torch.equal(a, b) for a, b in zip(trajectory("sgd", {**kwargs, "foreach": False}),
                                                  trajectory("sgd", kwargs)))


def test_default_only_when_unset_and_exact():
    assert takes_foreach_default("adam", {"lr": 1e-3})
    assert takes_foreach_default("adam", {"foreach": None})  # a config's default
    for given in ({"foreach": False}, {"foreach": True}, {"fused": True}, {"differentiable": True}):
        assert not takes_foreach_default("adam", given)
    for name in ("nadam", "radam", "asgd", "adam_c", "sgd_c", "lbfgs"):
        assert not takes_foreach_default(name, {"lr": 1e-3})
    param = torch.nn.Parameter(torch.zeros(2))
    default = build_optimizer("adam", [param], foreach=None)
    assert default.param_groups[0]["foreach"] is True
    assert default.defaults["foreach"] is None  # the configured value, as code reading defaults expects
    assert build_optimizer("adam", [param], foreach=False).param_groups[0]["foreach"] is False
    assert build_optimizer("adam", [param], fused=True).param_groups[0]["foreach"] is None
