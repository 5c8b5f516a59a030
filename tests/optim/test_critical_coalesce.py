"""The base update on tensors covering several parameters (a population's members) against the update per tensor."""

from __future__ import annotations

import pytest
import torch

from optimlab.optim.critical import SGD_C, Adam_C, AdamW_C, RMSprop_C
from optimlab.optim.critical.coalesce import covering

SHAPES = [(7, 5), (7,), (3, 7), (3,)]
LRS = [0.01, 0.01, 0.01, 0.03]  # members 0 to 2 share a learning rate (one base call), member 3 alone

CASES = {
    "adam_c": (Adam_C, {}),
    "adam_c-amsgrad-l2": (Adam_C, {"amsgrad": True, "weight_decay": 0.1}),
    "adamw_c": (AdamW_C, {}),
    "sgd_c": (SGD_C, {}),
    "sgd_c-nesterov-decoupled": (SGD_C, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01,
                                         "weight_decay_mode": "decoupled"}),
    "rmsprop_c-centered": (RMSprop_C, {"momentum": 0.5, "centered": True}),
}


def separate(dtype):
    gen = torch.Generator().manual_seed(0)
    return [[torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES] for _ in LRS]


def tiled(members):
    """The same values as views of one buffer, member after member (as a population stacks them)."""
    flat = torch.cat([p.reshape(-1) for m in members for p in m])
    out, offset = [], 0
    for m in members:
        views = []
        for p in m:
            views.append(flat[offset : offset + p.numel()].view(p.shape))
            offset += p.numel()
        out.append(views)
    return out


def optimizer(cls, options, members, foreach, lrs=LRS):
    params = [[torch.nn.Parameter(p) for p in m] for m in members]
    groups = [{"params": ps, "lr": lr} for ps, lr in zip(params, lrs)]
    return cls(groups, topC=3, decay=0.8, foreach=foreach, **options), params


def run(opt, params, steps, start=0, dtype=torch.float32):
    for step in range(start, start + steps):
        gen = torch.Generator().manual_seed(step)
        for member in params:
            for p in member:
                p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
        opt.step()


def assert_equal(a_params, b_params):
    for a, b in zip(a_params, b_params):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("foreach", [None, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_coalesced_update_is_bit_identical(case, foreach, dtype):
    cls, options = CASES[case]
    members = separate(dtype)
    reference, ref_params = optimizer(cls, options, [[p.clone() for p in m] for m in members], foreach)
    fast, fast_params = optimizer(cls, options, tiled(members), foreach)
    assert covering([p for m in fast_params for p in m]) is not None
    run(reference, ref_params, 12, dtype=dtype)
    run(fast, fast_params, 12, dtype=dtype)
    assert_equal(ref_params, fast_params)
    ref_state, fast_state = reference.state_dict()["state"], fast.state_dict()["state"]
    for index in ref_state:
        for key, value in ref_state[index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(fast_state[index][key])), (index, key)
    # The path was taken: the members sharing a learning rate keep their base state in one block.
    layout = fast._base_state(fast.param_groups[0])
    if layout is not None:
        key = layout[0][0]
        assert len({fast.state[p][key].untyped_storage().data_ptr() for i in (0, 1, 2) for p in fast_params[i]}) == 1


@pytest.mark.parametrize("case", ["adam_c", "sgd_c-nesterov-decoupled", "rmsprop_c-centered"])
def test_coalesced_update_resumes_exactly(case):
    """A loaded state (separate tensors) is moved into blocks again and the run continues bit for bit."""
    cls, options = CASES[case]
    members = separate(torch.float32)
    reference, ref_params = optimizer(cls, options, [[p.clone() for p in m] for m in members], None)
    run(reference, ref_params, 10)
    fast, fast_params = optimizer(cls, options, tiled(members), None)
    run(fast, fast_params, 5)
    saved = fast.state_dict()
    resumed, resumed_params = optimizer(cls, options, tiled([[p.detach().clone() for p in m] for m in fast_params]), None)
    resumed.load_state_dict(saved)
    run(resumed, resumed_params, 5, start=5)
    assert_equal(ref_params, resumed_params)


def test_a_batch_that_does_not_tile_takes_the_update_per_tensor():
    """Members sharing a learning rate with another member between them: no covering tensor, same results."""
    lrs = [0.01, 0.03, 0.01, 0.01]
    members = separate(torch.float32)
    reference, ref_params = optimizer(Adam_C, {}, [[p.clone() for p in m] for m in members], True, lrs)
    fast, fast_params = optimizer(Adam_C, {}, tiled(members), True, lrs)
    run(reference, ref_params, 6)
    run(fast, fast_params, 6)
    assert_equal(ref_params, fast_params)
    assert fast.state[fast_params[0][0]]["exp_avg"]._base is None  # its own tensor, not a block's view


def test_unequal_step_counts_take_the_update_per_tensor():
    """Members of one batch whose step counts differ (one joined later) are not coalesced: each keeps its own."""
    members = separate(torch.float32)
    fast, params = optimizer(Adam_C, {}, tiled(members), None)
    run(fast, params, 3)
    for p in params[1]:
        fast.state[p]["step"].fill_(1.0)
    run(fast, params, 2, start=3)
    assert float(fast.state[params[0][0]]["step"]) == 5.0
    assert float(fast.state[params[1][0]]["step"]) == 3.0


def test_covering_requires_adjacent_tensors_of_one_storage():
    flat = torch.arange(10.0)
    assert torch.equal(covering([flat[:4], flat[4:6].view(1, 2), flat[6:]]), flat)
    assert covering([flat[:4], flat[5:]]) is None  # a gap
    assert covering([flat[4:], flat[:4]]) is None  # out of order
    assert covering([flat[:4], flat[4:].double()]) is None
    assert covering([torch.ones(2, 3).t()]) is None  # not contiguous
