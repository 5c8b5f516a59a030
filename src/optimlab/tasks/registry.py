"""The task registry: name -> builder, with a typed options dataclass per task.

The built-in tasks are one explicit table, `optimlab.tasks.catalogue.TASKS`, read the first time a task is
looked up. A researcher's own tasks register with

    @register_task("my_task", options=MyOptions, description="my data, my model")
    def build(options: MyOptions, data_dir: Path) -> Task: ...

(imported through `OPTIMLAB_PLUGINS` for the CLI). Options are the task-specific keys of the `task` config
node (`task.width=512`); they are validated against the dataclass, so an unknown key or a wrong type is an
error naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimlab.registry import Registry
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


_TASKS: Registry[TaskSpec] = Registry("task")
_builtins_loaded = False


def task_spec(name: str, build: Callable[[Any, Path], Task], options: type = NoOptions, description: str = "") -> TaskSpec:
    """A checked TaskSpec (options must be a dataclass; the description defaults to the builder's docstring)."""
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"options of task {name!r} must be a dataclass")
    return TaskSpec(name, build, options, description or (build.__doc__ or "").strip())


def register_task(name: str, options: type = NoOptions, description: str = ""):
    """Decorator registering a task builder `(options, data_dir) -> Task` under `name`."""

    def decorator(build: Callable[[Any, Path], Task]) -> Callable[[Any, Path], Task]:
        spec = task_spec(name, build, options, description)
        _load_builtin_tasks()
        if name in _TASKS:
            raise ValueError(f"task {name!r} is already registered")
        _TASKS.register(name, spec, spec.description)
        return build

    return decorator


def get_task_spec(name: str) -> TaskSpec:
    _load_builtin_tasks()
    return _TASKS.get(name)


def available_tasks() -> list[str]:
    _load_builtin_tasks()
    return _TASKS.names()


def _load_builtin_tasks() -> None:
    # Lazy: the catalogue imports every built-in task module (torch, numpy, sklearn, ...).
    global _builtins_loaded
    if _builtins_loaded:
        return
    from optimlab.tasks.catalogue import TASKS

    for spec in TASKS:
        _TASKS.register(spec.name, spec, spec.description)
    _builtins_loaded = True
