"""Helpers the task modules share: model construction with clear errors, option checks."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from optimlab.errors import ConfigError
from optimlab.tasks.models import xavier_conv_init

INITS = ("default", "xavier")


def make_model(task: str, factory: Callable[[], nn.Module], init: str = "default") -> nn.Module:
    """`factory()` with its ValueErrors (impossible depth, too small input) turned into ConfigErrors."""
    if init not in INITS:
        raise ConfigError(f"task option 'init' of task {task!r} must be one of {', '.join(INITS)}, got {init!r}")
    try:
        model = factory()
    except (ValueError, KeyError) as error:
        raise ConfigError(f"task {task!r}: {error}") from None
    return xavier_conv_init(model) if init == "xavier" else model


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"task option {name!r} must be one of {', '.join(choices)}, got {value!r}")
