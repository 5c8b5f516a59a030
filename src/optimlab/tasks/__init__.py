"""Tasks: dataset + model + loss (sum, count) + metrics, by name (`optimlab list tasks`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from optimlab.errors import ConfigError, suggest
from optimlab.tasks.base import Batch, Split, Task
from optimlab.tasks.registry import available_tasks, get_task_spec, register_task


def build_task(name: str, options: dict | None = None, data_dir: str | Path | None = None) -> Task:
    """Build a registered task; `options` are its task-specific options (validated by its dataclass).

    An unknown option or a value of the wrong type is a ConfigError naming it, as on the command line.
    """
    from optimlab.config import default_data_dir

    spec = get_task_spec(name)
    typed = _typed_options(name, spec.options, dict(options or {}))
    return spec.build(typed, Path(data_dir or default_data_dir()).expanduser())


def _typed_options(name: str, options_class: type, options: dict):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    fields = [f.name for f in dataclasses.fields(options_class)]
    for key in options:
        if key not in fields:
            hint = suggest(key, fields) if fields else "; it takes no options"
            raise ConfigError(f"unknown task option {key!r} for task {name!r}{hint}")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(options_class), options))
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "") or ""
        raise ConfigError(f"task option {key!r} of task {name!r}: {str(error).splitlines()[0]}") from None


__all__ = ["Batch", "Split", "Task", "available_tasks", "build_task", "get_task_spec", "register_task"]
