"""Sweep specs: a named list of runs, each a flat mapping of dotted config keys to values.

A spec comes from a YAML file

    name: hypergradient
    description: one line
    base:                 # applied to every run; dotted keys or nested mappings
      train.steps: 1000
    grid:                 # a mapping: the product over its keys; a list of mappings: the union of their products
      - task: [mnist1d_cnn, digits_cnn]
        optim: [sgd]
        optim.momentum: [0.9]
    seeds: 5              # n -> seeds 0..n-1, or a list of seeds (`repeats: n` is the same as `seeds: n`)
    search:               # and/or a random or quasi-random search (optimlab.sweep.search)
      trials: 16
      space: {optim.lr: {log: [1e-4, 1e-1]}}

or from a Python function returning a list of such mappings, registered with
`@optimlab.sweep.register_sweep("name")` or given as `module:function`. `load_spec(text)` resolves, in
order: a path to a YAML file, `module:function`, `sweeps/<name>.yaml` in the current directory, the same in
the repository next to `src/` (editable installs), a registered Python sweep.

Run order puts the seed outermost, so a sweep stopped half way has complete grids for its first seeds.
"""

from __future__ import annotations

import importlib
import itertools
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optimlab.config import read_yaml_mapping
from optimlab.errors import ConfigError, suggest

Point = dict[str, Any]  # dotted config key -> value, one run

SPEC_KEYS = ("name", "description", "base", "grid", "search", "seeds", "repeats")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SweepSpec:
    """A named, ordered list of runs (`points`), each a flat mapping of dotted config keys to values."""

    name: str
    points: list[Point]
    description: str = ""
    source: str = ""  # where it came from: a file path, `module:function` or `python:<name>`
    data: dict = field(default_factory=dict)  # the YAML mapping, kept for the record (sweep.json)


# --------------------------------------------------------------------------------------------------------
# Parsing


def parse_spec(data: Any, *, name: str | None = None, source: str = "") -> SweepSpec:
    """Validate a YAML spec mapping and expand its grid into points. Errors name the problem."""
    where = f"sweep spec {source or name or ''}".strip()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(SPEC_KEYS)}, got {type(data).__name__}")
    for key in data:
        if key not in SPEC_KEYS:
            raise ConfigError(f"{where}: unknown spec key {key!r}{suggest(str(key), SPEC_KEYS)}")
    name = data.get("name", name)
    check_name(name, where)
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{where}: 'description' must be a string")
    base = flatten(data.get("base") or {}, where=f"{where}: 'base'")
    if "grid" not in data and "search" not in data:
        raise ConfigError(f"{where}: no 'grid' (give at least one key with a list of values) and no 'search'")
    grid = _grid_points(data["grid"], where) if "grid" in data else [{}]
    if "search" in data:  # every grid point gets the same trials (optimlab.sweep.search)
        from optimlab.sweep.search import search_points

        trials = search_points(data["search"], where)
        grid = [{**point, **trial} for point in grid for trial in trials]
    seeds = _seeds(data, where)
    if seeds is not None and (any("seed" in p for p in grid) or "seed" in base):
        raise ConfigError(f"{where}: 'seed' is set both as a config key and by 'seeds'/'repeats'; keep one")
    points = []
    for seed in seeds if seeds is not None else [None]:
        for point in grid:
            merged = {**base, **point}
            if seed is not None:
                merged["seed"] = seed
            points.append(merged)
    return SweepSpec(name=name, points=points, description=description, source=source, data=dict(data))


def spec_from_points(name: str, points: Any, *, description: str = "", source: str = "") -> SweepSpec:
    """A spec from a Python sweep function's result: a list of (dotted or nested) override mappings."""
    where = f"sweep {source or name}"
    check_name(name, where)
    if isinstance(points, Mapping) or not isinstance(points, Iterable) or isinstance(points, (str, bytes)):
        raise ConfigError(f"{where}: a sweep function must return a list of override mappings, got {points!r}")
    flat = [flatten(p, where=f"{where}: run {i}") for i, p in enumerate(points)]
    if not flat:
        raise ConfigError(f"{where}: empty grid (the sweep function returned no runs)")
    return SweepSpec(name=name, points=flat, description=description, source=source)


def check_name(name: Any, where: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: sweep name must be letters, digits, '_', '-' or '.', got {name!r}")


def flatten(mapping: Any, *, where: str, prefix: str = "") -> Point:
    """Nested mappings and dotted keys to one flat dotted mapping (`{'optim': {'lr': 1}}` -> `{'optim.lr': 1}`)."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a mapping of config keys, got {mapping!r}")
    flat: Point = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{where}: config keys must be non-empty strings, got {key!r}")
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, where=where, prefix=f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _grid_points(grid: Any, where: str) -> list[Point]:
    if isinstance(grid, Mapping):
        blocks = [grid]
    elif isinstance(grid, list):
        blocks = grid
    else:
        raise ConfigError(f"{where}: 'grid' must be a mapping or a list of mappings, got {grid!r}")
    if not blocks:
        raise ConfigError(f"{where}: empty grid")
    points: list[Point] = []
    for i, block in enumerate(blocks):
        label = f"{where}: grid[{i}]" if isinstance(grid, list) else f"{where}: grid"
        if not isinstance(block, Mapping):
            raise ConfigError(f"{label} must be a mapping of config keys to value lists, got {block!r}")
        if not block:
            raise ConfigError(f"{label}: empty grid")
        axes = flatten(block, where=label)
        keys, values = [], []
        for key, value in axes.items():
            value = value if isinstance(value, list) else [value]  # a scalar is a single value
            if not value:
                raise ConfigError(f"{label}: empty grid: key {key!r} has no values")
            keys.append(key)
            values.append(value)
        # A value may itself be a mapping (`optim: [{name: sgd, lr: 0.1}, {name: adam, lr: 1e-3}]`): linked keys.
        points.extend(flatten(dict(zip(keys, combo)), where=label) for combo in itertools.product(*values))
    return points


def _seeds(data: Mapping, where: str) -> list[int] | None:
    if "seeds" in data and "repeats" in data:
        raise ConfigError(f"{where}: give either 'seeds' or 'repeats', not both")
    key = "seeds" if "seeds" in data else "repeats" if "repeats" in data else None
    if key is None:
        return None
    value = data[key]
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {key!r} must be a positive integer or a list of integers, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"{where}: {key!r} must be at least 1, got {value}")
        return list(range(value))
    if key == "seeds" and isinstance(value, list) and value:
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
            raise ConfigError(f"{where}: 'seeds' must hold integers, got {value!r}")
        if len(set(value)) != len(value):
            raise ConfigError(f"{where}: 'seeds' has duplicates: {value!r}")
        return list(value)
    raise ConfigError(f"{where}: {key!r} must be a positive integer or a non-empty list of integers, got {value!r}")


# --------------------------------------------------------------------------------------------------------
# Finding specs


def load_spec_file(path: str | Path) -> SweepSpec:
    path = Path(path)
    return parse_spec(read_yaml_mapping(path, "sweep spec"), name=path.stem, source=str(path))


def load_spec(text: str | Path) -> SweepSpec:
    """A spec from a YAML path, `module:function`, a name in `sweeps/`, or a registered Python sweep name."""
    from optimlab.sweep.named import get_sweep_function, registered_sweeps

    text = str(text)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return load_spec_file(path)
    if ":" in text:
        return _spec_from_function(text)
    for folder in sweep_folders():
        candidate = folder / f"{text}.yaml"
        if candidate.is_file():
            return load_spec_file(candidate)
    registered = registered_sweeps()
    if text in registered:
        function = get_sweep_function(text)
        return spec_from_points(text, function(), description=_doc(function), source=f"python:{text}")
    raise ConfigError(f"unknown sweep {text!r}: not a file, a module:function or a named sweep{suggest(text, available_sweeps())}")


def _spec_from_function(text: str) -> SweepSpec:
    module_name, _, attr = text.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"sweep {text!r}: expected module:function")
    try:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:  # the console script leaves out the cwd
            sys.path.insert(0, str(Path.cwd()))
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"sweep {text!r}: cannot import {module_name!r}: {error}") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(f"sweep {text!r}: {module_name} has no function {attr!r}")
    name = getattr(function, "sweep_name", attr)
    return spec_from_points(name, function(), description=_doc(function), source=text)


def _doc(function: Callable) -> str:
    return (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""


def sweep_folders() -> list[Path]:
    """Where named YAML specs live: `./sweeps` and, for an editable install, `<repo>/sweeps` next to `src/`."""
    folders = [Path.cwd() / "sweeps"]
    package = Path(__file__).resolve().parents[1]  # .../src/optimlab
    if package.parent.name == "src":
        folders.append(package.parent.parent / "sweeps")
    unique = []
    for folder in folders:
        if folder.is_dir() and folder.resolve() not in [f.resolve() for f in unique]:
            unique.append(folder)
    return unique


def available_sweeps() -> list[str]:
    """Names `optimlab sweep NAME` accepts: YAML files in the sweeps folders and registered Python sweeps."""
    from optimlab.sweep.named import registered_sweeps

    names = set(registered_sweeps())
    for folder in sweep_folders():
        names.update(p.stem for p in folder.glob("*.yaml"))
    return sorted(names)
