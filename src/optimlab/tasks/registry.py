"""The task registry: name -> builder, with a typed options dataclass per task.

Register a task with

    @register_task("mnist1d_mlp", options=MLPOptions, description="MNIST-1D, 3-layer MLP")
    def build(options: MLPOptions, data_dir: Path) -> Task: ...

Options are the task-specific keys of the `task` config node (`task.width=512`); they are validated
against the dataclass, so an unknown key or a wrong type is an error naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimlab.errors import unknown_name
from optimlab.tasks.base import Task


@dataclass
class NoOptions:
    """A task without options."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    build: Callable[[Any, Path], Task]
    options: type
    description: str


_TASKS: dict[str, TaskSpec] = {}


def register_task(name: str, options: type = NoOptions, description: str = ""):
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"options of task {name!r} must be a dataclass")

    def decorator(build: Callable[[Any, Path], Task]) -> Callable[[Any, Path], Task]:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is already registered")
        _TASKS[name] = TaskSpec(name, build, options, description or (build.__doc__ or "").strip())
        return build

    return decorator


def get_task_spec(name: str) -> TaskSpec:
    _load_builtin_tasks()
    try:
        return _TASKS[name]
    except KeyError:
        raise unknown_name("task", name, _TASKS) from None


def available_tasks() -> list[str]:
    _load_builtin_tasks()
    return sorted(_TASKS)


def _load_builtin_tasks() -> None:
    # Imported lazily: the catalogue module imports every built-in task, which registers it.
    import optimlab.tasks.catalogue  # noqa: F401
