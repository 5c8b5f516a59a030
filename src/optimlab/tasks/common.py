"""Helpers the task modules share: model factories with clear errors, option checks."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from optimlab.errors import ConfigError
from optimlab.tasks.models import xavier_conv_init

INITS = ("default", "xavier")


def model_factory(task: str, factory: Callable[[], nn.Module], init: str = "default") -> Callable[[], nn.Module]:
    """The task's model factory: `factory()` followed by the `init` scheme, with its ValueErrors (impossible
    depth, too small input) turned into ConfigErrors. Builders call it once for `Task.model` and store it as
    `Task.model_factory`, so both draw the same initial weights from the same generator state."""
    if init not in INITS:
        raise ConfigError(f"task option 'init' of task {task!r} must be one of {', '.join(INITS)}, got {init!r}")

    def build() -> nn.Module:
        try:
            model = factory()
        except (ValueError, KeyError) as error:
            raise ConfigError(f"task {task!r}: {error}") from None
        return xavier_conv_init(model) if init == "xavier" else model

    return build


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"task option {name!r} must be one of {', '.join(choices)}, got {value!r}")
