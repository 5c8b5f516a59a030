"""Param groups stepped on blocks of the stacked parameters compute what the members' own tensors compute,
bit for bit, for every optimizer of `ELEMENTWISE`, through stacking and unstacking of their state."""

import pytest
import torch
from torch import nn

from optimlab.train.population_stacked import ELEMENTWISE, FlatParameters, stack_state, unstack_state

OPTIONS = {  # options that exercise each optimizer's branches (weight decay, momentum, amsgrad, ...)
    "SGD": {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    "Adam": {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1},
    "AdamW": {"lr": 0.01, "weight_decay": 0.1},
    "Adamax": {"lr": 0.01, "weight_decay": 0.1},
    "NAdam": {"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 0.1},
    "RAdam": {"lr": 0.01, "weight_decay": 0.1},
    "Adagrad": {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1},
    "Adadelta": {"lr": 1.0, "weight_decay": 0.1},
    "RMSprop": {"lr": 0.01, "momentum": 0.9, "centered": True},
    "Rprop": {"lr": 0.01},
    "ASGD": {"lr": 0.01, "t0": 3, "weight_decay": 0.1},
}


def model(seed: int, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3, bias=False), nn.Linear(3, 2)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls", ELEMENTWISE, ids=lambda cls: cls.__name__)
def test_a_block_steps_as_the_members_own_tensors_bit_for_bit(cls, dtype):
    """Members 1 to 3 of 4 (rows of a block that does not start at row 0) step 3 times on their own
    tensors, 4 times as one block (their state stacked), 3 times on their own tensors again (unstacked);
    a reference steps each member's separate copy with its own optimizer. Equal after every step."""
    models = [model(seed, dtype) for seed in range(4)]
    names = [name for name, _ in models[0].named_parameters()]
    flat = FlatParameters(models, names, torch.device("cpu"))
    rows = range(1, 4)
    members = [[flat.view(name)[row] for name in names] for row in rows]  # the members' views of their rows
    references = [[flat.view(name)[row].clone() for name in names] for row in rows]
    ours = cls([{"params": [p for params in members for p in params], "foreach": True}], **OPTIONS[cls.__name__])
    theirs = [cls([{"params": params, "foreach": True}], **OPTIONS[cls.__name__]) for params in references]
    blocks = flat.block(rows, names)
    assert len(blocks) == 1 and blocks[0].tensor.shape == (3, sum(p.numel() for p in members[0]))
    blocks[0].members = [(p, row, name) for row, params in enumerate(members) for p, name in zip(params, names)]
    generator = torch.Generator().manual_seed(0)
    for step in range(10):
        if step == 3:
            assert stack_state(ours.state, blocks)
            ours.param_groups[0]["params"] = [blocks[0].tensor]
            blocks[0].tensor.grad = blocks[0].grad
        if step == 7:
            unstack_state(ours.state, blocks)
            ours.param_groups[0]["params"] = [p for params in members for p in params]
        grads = {name: torch.randn(4, *flat.columns[name].shape, generator=generator).to(dtype) for name in names}
        flat.copy_grads(grads)
        for row, (params, reference) in enumerate(zip(members, references), start=1):
            for p, r, name in zip(params, reference, names):
                p.grad = flat.grad_view(name)[row]
                r.grad = grads[name][row].clone()
        ours.step()
        for optimizer in theirs:
            optimizer.step()
        for params, reference in zip(members, references):
            assert all(torch.equal(p, r) for p, r in zip(params, reference)), step
    for params, optimizer, reference in zip(members, theirs, references):
        for p, r in zip(params, reference):
            mine, expected = ours.state[p], optimizer.state[r]
            assert mine.keys() == expected.keys()
            assert all(torch.equal(torch.as_tensor(mine[k]), torch.as_tensor(expected[k])) for k in mine)
    assert flat.view(names[0])[0].equal(models[0][0].weight.detach())  # row 0 untouched


def test_states_that_cannot_share_a_block_stay_apart():
    models = [model(seed, torch.float32) for seed in range(2)]
    names = [name for name, _ in models[0].named_parameters()]
    flat = FlatParameters(models, names, torch.device("cpu"))
    blocks = flat.block(range(2), names)
    params = [[flat.view(name)[row] for name in names] for row in range(2)]
    blocks[0].members = [(p, row, name) for row in range(2) for p, name in zip(params[row], names)]
    state = {p: {"step": torch.tensor(float(row)), "exp_avg": torch.zeros_like(p)}
             for row in range(2) for p in params[row]}
    before = dict(state)
    assert not stack_state(state, blocks)  # step counts differ
    assert state == before
    del state[params[1][0]]
    assert not stack_state(state, blocks)  # one member has no state for a parameter
    assert flat.block(range(2), [names[0], names[2]]) is None  # columns that are not adjacent
    empty = {p: {} for p in params[0]}  # a state dict created but not filled yet counts as no state
    assert stack_state(empty, blocks) and not empty
