"""The four critical-gradient optimizers declare the memory's options once (`MemoryOptions`)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from optimlab.optim import SGD_C, Adam_C, AdamW_C, RMSprop_C
from optimlab.optim.critical.base import MEMORY, MemoryOptions
from optimlab.validate import check_number

CLASSES = [SGD_C, Adam_C, AdamW_C, RMSprop_C]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_memory_default_comes_from_memory_options(cls):
    parameters = inspect.signature(cls).parameters
    for field in dataclasses.fields(MemoryOptions):
        assert field.name in parameters, f"{cls.__name__} lacks {field.name}"
        assert parameters[field.name].default == getattr(MEMORY, field.name), (cls.__name__, field.name)
    group = cls([torch.zeros(2, requires_grad=True)]).param_groups[0]
    assert {f.name: group[f.name] for f in dataclasses.fields(MemoryOptions)} == dataclasses.asdict(MEMORY)


def test_the_four_classes_agree_on_every_shared_default():
    signatures = [inspect.signature(cls).parameters for cls in CLASSES]
    shared = set.intersection(*(set(s) for s in signatures)) - {"params"}
    # The original's per-class choices (documented on MemoryOptions): the rest must agree.
    per_class = {"lr", "aggr", "weight_decay", "weight_decay_mode", "momentum", "eps"}
    for name in shared - per_class:
        assert len({repr(s[name].default) for s in signatures}) == 1, name
    assert {f.name for f in dataclasses.fields(MemoryOptions)} <= shared


@pytest.mark.parametrize(
    "bad, good, kwargs, message",
    [
        (0, 1e-9, {"low": 0, "low_inclusive": False}, "invalid x=0: must be a finite number > 0"),
        (2, 1, {"high": 1}, "invalid x=2: must be a finite number <= 1"),
        (1.0, 1, {"low": 1, "integer": True}, "invalid x=1.0: must be an integer >= 1"),
        (0.5, 0, {"low": 0, "high": 0.5, "high_inclusive": False}, "invalid x=0.5: must be a finite number in [0, 0.5)"),
        (float("inf"), float("-inf"), {"finite": False, "high": 1}, "invalid x=inf: must be a number <= 1"),
    ],
)
def test_check_number_names_the_argument_and_the_bound(bad, good, kwargs, message):
    with pytest.raises(ValueError) as error:
        check_number("x", bad, **kwargs)
    assert str(error.value) == message
    check_number("x", good, **kwargs)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "1", None, torch.ones(2)])
def test_check_number_rejects_non_numbers(value):
    with pytest.raises(ValueError, match="invalid x="):
        check_number("x", value)
    check_number("x", torch.tensor(2.0), low=0)  # a one-element tensor is a number
