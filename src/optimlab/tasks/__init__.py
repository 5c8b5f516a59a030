"""Tasks: dataset + model + loss (sum, count) + metrics, by name (`optimlab list tasks`)."""

from __future__ import annotations

from pathlib import Path

from optimlab.tasks.base import Batch, Split, Task
from optimlab.tasks.registry import available_tasks, get_task_spec, register_task


def build_task(name: str, options: dict | None = None, data_dir: str | Path | None = None) -> Task:
    """Build a registered task; `options` are its task-specific options (validated by its dataclass)."""
    from optimlab.config import default_data_dir

    spec = get_task_spec(name)
    typed = spec.options(**(options or {}))
    return spec.build(typed, Path(data_dir or default_data_dir()).expanduser())


__all__ = ["Batch", "Split", "Task", "available_tasks", "build_task", "get_task_spec", "register_task"]
