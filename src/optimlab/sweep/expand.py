"""From a spec to validated runs with deterministic directories.

Each point becomes dotted `key=value` overrides, validated by `optimlab.config.load_config`; every run is
validated before any starts. A run's directory is `<root>/<sweep>/<task>/<optim>-<config_hash>`, so the
same config always lands in the same place and re-running a sweep finds its earlier runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from optimlab.config import Config, config_hash, load_config_cached, parse_overrides, to_tree
from optimlab.errors import ConfigError
from optimlab.sweep.spec import SweepSpec

# Keys a sweep sets itself.
RESERVED = ("run_dir",)


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its overrides, its validated config and its directory."""

    overrides: tuple[str, ...]
    config: Config
    run_dir: Path  # <root>/<sweep>/<task>/<optim>-<hash>
    key: str  # the directory relative to the sweep folder: <task>/<optim>-<hash>
    config_hash: str  # optimlab.config.config_hash(config)


def sweep_dir(root: str | Path, name: str) -> Path:
    return Path(root) / name


def expand(
    spec: SweepSpec, root: str | Path = "runs", extra: Sequence[str] = (),
    cache: dict[tuple[str, ...], Config] | None = None,
) -> list[Run]:
    """Validate every point of `spec` (with `extra` overrides applied last) and name its run directory.

    Raises `ConfigError` naming the first bad run and key; duplicates (two points giving the same config)
    run once. `cache` keeps the validated configs (by their overrides without the seed) for a later expansion
    of an extended spec in the same process (`optimlab compare`'s lr-grid extension rounds).
    """
    extra = tuple(extra)
    for item in extra:
        if item.partition("=")[0] in RESERVED:
            raise ConfigError(f"sweep {spec.name!r}: {item.partition('=')[0]!r} is set by the sweep")
    parse_overrides(extra)  # syntax errors first, naming the bad item
    if not spec.points:
        raise ConfigError(f"sweep {spec.name!r}: empty grid")
    runs: dict[str, Run] = {}
    cache = {} if cache is None else cache
    for i, point in enumerate(spec.points):
        for key in point:
            if key in RESERVED:
                raise ConfigError(f"sweep {spec.name!r}: {key!r} is set by the sweep, not the spec")
        overrides = tuple(f"{key}={format_value(value)}" for key, value in point.items()) + extra
        try:
            cfg = load_config_cached(overrides, cache)
        except ConfigError as error:
            raise ConfigError(f"sweep {spec.name!r}, run {i} ({' '.join(overrides)}): {error}") from None
        digest = config_hash(cfg)
        run_key = f"{cfg.task.name}/{cfg.optim.name}-{digest}"
        if run_key in runs:
            if to_tree(runs[run_key].config) != to_tree(cfg):
                raise ConfigError(
                    f"sweep {spec.name!r}: runs {' '.join(runs[run_key].overrides)!r} and {' '.join(overrides)!r} "
                    "differ only in keys that do not change what a run computes (log.*, train.log_every, ...); "
                    "they would share one directory"
                )
            continue
        runs[run_key] = Run(overrides, cfg, sweep_dir(root, spec.name) / run_key, run_key, digest)
    return list(runs.values())


def format_value(value: Any) -> str:
    """A value as override text that `optimlab.config.parse_overrides` reads back to the same value."""
    text = _format(value)
    parsed = _read_back(text)
    if parsed != value and not (isinstance(value, tuple) and parsed == list(value)):
        raise ConfigError(f"cannot write {value!r} as an override (it reads back as {parsed!r})")
    return text


def _read_back(text: str) -> Any:
    try:
        return OmegaConf.to_container(parse_overrides([f"x={text}"]))["x"]
    except (ConfigError, ValueError):
        return _UNREADABLE


_UNREADABLE = object()


def _format(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"cannot use the non-finite value {value!r} in a sweep")
        return repr(value)
    if isinstance(value, str):
        return value if value and _read_back(value) == value else json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}: {_format(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot use {value!r} ({type(value).__name__}) as a config value in a sweep")
