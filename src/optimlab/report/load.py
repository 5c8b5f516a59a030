"""Read run directories (docs/run-directory.md) into `Run` records; nothing else is read.

A run directory is any directory holding a `summary.json`. `find_run_dirs` accepts run directories and
folders that contain them (searched recursively). Every file problem raises `ConfigError` naming the file
and what is wrong with it, so the CLI prints one line and exits with code 2.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from optimlab import rundir
from optimlab.errors import ConfigError

# PyYAML's safe loader on libyaml's parser when PyYAML was built with it: the same Python objects as
# `yaml.safe_load` (the same resolver and constructor), about 8x faster; a report reads every run's config.yaml.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The statuses whose final numbers enter the statistics are `rundir.HAS_RESULT` (completed, and diverged as
# the worst possible result); failed, running, interrupted and stopped runs are listed and counted but
# their final numbers are not aggregated.

# Task keys that describe how data is fed, not which problem is solved: not part of the task's identity.
_NOT_TASK_VARIANT = ("name", "data_dir", "batch_size", "eval_batch_size")

_LOWER_IS_BETTER_WORDS = ("loss", "error", "perplexity", "ppl", "nll", "regret")


@dataclass
class Run:
    """One run directory, as read from its three files."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    task: str  # task name, plus the differing task options when one name covers several variants
    label: str  # optimizer label: optim name [+hyper] [@schedule]
    seed: int
    status: str
    configuration: str  # summary's configuration_hash: the config identity's hash without the seed
    identity: dict[str, Any] = field(repr=False)  # flattened config identity without the seed
    main_metric: str | None = None
    higher_is_better: bool | None = None

    @property
    def used(self) -> bool:
        return self.status in rundir.HAS_RESULT

    @property
    def lr(self) -> float | None:
        return as_float((self.config.get("optim") or {}).get("lr"), none_ok=True)

    @property
    def val_key(self) -> str:
        return f"val/{self.main_metric}"

    @property
    def test_key(self) -> str:
        return f"test/{self.main_metric}"

    def final(self, key: str) -> float:
        """`summary.final[key]` as a float; nan if absent."""
        return as_float((self.summary.get("final") or {}).get(key), none_ok=True, default=math.nan)

    def best(self, key: str) -> float:
        return as_float((self.summary.get("best") or {}).get(key), none_ok=True, default=math.nan)

    def series(self, key: str) -> tuple[list[float], list[float], list[float]]:
        """(steps, times, values) of the metrics.jsonl lines that carry `key`, in step order."""
        rows = sorted((r for r in self.metrics if key in r), key=lambda r: r["step"])
        steps = [float(r["step"]) for r in rows]
        times = [as_float(r.get("time"), none_ok=True, default=math.nan) for r in rows]
        values = [as_float(r[key], none_ok=True, default=math.nan) for r in rows]
        return steps, times, values


def as_float(value: Any, *, none_ok: bool = False, default: float | None = None) -> float | None:
    """A JSON number (or the strings 'nan', 'inf' a logger may write for non-finite floats) as a float."""
    if value is None:
        if none_ok:
            return default
        raise ValueError("missing value")
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value)  # 'nan', 'inf', '-inf', '1e-3'; ValueError otherwise
    raise ValueError(f"expected a number, got {value!r}")


# --------------------------------------------------------------------------------------------------------
# Finding run directories


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories among `paths`: each path is a run directory or a folder searched recursively."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("no run directories given")
    found: dict[Path, None] = {}
    for path in paths:
        if not path.exists():
            raise ConfigError(f"no such run directory or folder: {path}")
        if not path.is_dir():
            raise ConfigError(f"{path} is not a directory (expected a run directory or a folder of them)")
        if (path / rundir.SUMMARY).is_file():
            found[path.resolve()] = None
            continue
        runs = sorted(s.parent.resolve() for s in path.rglob(rundir.SUMMARY) if s.is_file())
        if not runs:
            raise ConfigError(f"no runs found in {path}: no run directory (one with a summary.json) below it")
        found.update(dict.fromkeys(runs))
    return list(found)


# --------------------------------------------------------------------------------------------------------
# Reading one run directory


def load_runs(paths: Iterable[str | Path], metric: str | None = None) -> list[Run]:
    """Find and read every run directory below `paths`.

    Args:
        paths: run directories or folders containing them.
        metric: override of the main metric, `NAME`, `NAME:max` or `NAME:min` (see `parse_metric`).
    """
    runs = [read_run(path) for path in find_run_dirs(paths)]
    if metric is not None:
        name, higher = parse_metric(metric)
        for run in runs:
            run.higher_is_better = _direction(name, higher, run)
            run.main_metric = name
    _name_task_variants(runs)
    _check_metrics_agree(runs)
    return runs


def read_run(path: Path) -> Run:
    path = Path(path)
    summary = _read_summary(path / rundir.SUMMARY)
    config = _read_config(path / rundir.CONFIG)
    status = summary["status"]
    metrics = _read_metrics(path / rundir.METRICS, required=status in rundir.HAS_RESULT)
    task, optim = config["task"]["name"], config["optim"]["name"]
    hyper = (config.get("hyper") or {}).get("name", "none") or "none"
    schedule = (config.get("schedule") or {}).get("name", "constant") or "constant"
    label = optim + ("" if hyper == "none" else f"+{hyper}") + ("" if schedule == "constant" else f"@{schedule}")
    seed = config.get("seed", summary.get("seed", 0))
    main_metric = summary.get("main_metric")
    higher = summary.get("higher_is_better")
    if status in rundir.HAS_RESULT:
        if not isinstance(main_metric, str) or not main_metric:
            raise ConfigError(f"{path / rundir.SUMMARY}: 'main_metric' must name a metric, got {main_metric!r}")
        if not isinstance(higher, bool):
            raise ConfigError(f"{path / rundir.SUMMARY}: 'higher_is_better' must be true or false, got {higher!r}")
    return Run(
        path=path,
        config=config,
        summary=summary,
        metrics=metrics,
        task=str(task),
        label=str(label),
        seed=seed,
        status=status,
        configuration=configuration_hash(summary, config),
        identity=rundir.flatten(rundir.identity(config, with_seed=False)),
        main_metric=main_metric if isinstance(main_metric, str) else None,
        higher_is_better=higher if isinstance(higher, bool) else None,
    )


def configuration_hash(summary: dict[str, Any], config: dict[str, Any]) -> str:
    """The run's configuration: summary.json's `configuration_hash` (the config identity's hash without the
    seed, written by the trainer), or the same hash derived from config.yaml for runs written before the
    field existed. Runs with equal hashes are seeds of one configuration."""
    value = summary.get("configuration_hash")
    if isinstance(value, str) and value:
        return value
    return rundir.identity_hash(config, with_seed=False)


def parse_metric(text: str) -> tuple[str, bool | None]:
    """'accuracy' -> ('accuracy', None); 'loss:min' -> ('loss', False); 'accuracy:max' -> ('accuracy', True)."""
    name, _, direction = text.partition(":")
    name = name.strip()
    if name.startswith("val/"):
        name = name[len("val/") :]
    if not name:
        raise ConfigError(f"--metric: expected NAME, NAME:max or NAME:min, got {text!r}")
    if direction not in ("", "max", "min"):
        raise ConfigError(f"--metric {text!r}: the direction after ':' must be max or min, got {direction!r}")
    return name, None if not direction else direction == "max"


def _direction(name: str, higher: bool | None, run: Run) -> bool:
    if higher is not None:
        return higher
    if name == run.main_metric and run.higher_is_better is not None:
        return run.higher_is_better
    return not any(word in name.lower() for word in _LOWER_IS_BETTER_WORDS)


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path.parent}: {rundir.SUMMARY} is missing (not a run directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(summary, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    status = summary.get("status")
    if status not in rundir.STATUSES:
        raise ConfigError(f"{path}: 'status' must be one of {', '.join(rundir.STATUSES)}, got {status!r}")
    for key in ("final", "best"):
        if summary.get(key) is not None and not isinstance(summary[key], dict):
            raise ConfigError(f"{path}: {key!r} must be an object, got {summary[key]!r}")
    return summary


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = yaml.load(path.read_text(), Loader=_SAFE_LOADER)
    except FileNotFoundError:
        raise ConfigError(f"{path.parent}: {rundir.CONFIG} is missing (every run directory has one)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(config).__name__}")
    for group in ("task", "optim"):
        node = config.get(group)
        if not isinstance(node, dict) or not isinstance(node.get("name"), str):
            raise ConfigError(f"{path}: '{group}.name' is missing (expected the nested config.yaml of a run)")
    for group in ("schedule", "hyper", "train"):
        if config.get(group) is not None and not isinstance(config[group], dict):
            raise ConfigError(f"{path}: {group!r} must be a mapping, got {config[group]!r}")
    return config


def _read_metrics(path: Path, required: bool) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path.parent}: {rundir.METRICS} is missing") from None
        return []
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines) and not required:
                break  # a run killed mid-write leaves a partial last line; resume truncates it
            raise ConfigError(f"{path}:{number}: not a JSON object ({error})") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), (int, float)):
            raise ConfigError(f"{path}:{number}: each line needs a numeric 'step', got {line[:80]!r}")
        records.append(record)
    return records


def _name_task_variants(runs: list[Run]) -> None:
    """One task name run with different task options becomes `name[key=value,...]` per variant."""
    by_name: dict[str, list[Run]] = {}
    for run in runs:
        by_name.setdefault(run.task, []).append(run)
    for name, group in by_name.items():
        variants = [
            {k: v for k, v in rundir.flatten(run.config["task"]).items() if k not in _NOT_TASK_VARIANT} for run in group
        ]
        keys = sorted({k for v in variants for k in v})
        differing = [k for k in keys if len({json.dumps(v.get(k), default=str) for v in variants}) > 1]
        if not differing:
            continue
        for run, variant in zip(group, variants):
            run.task = f"{name}[{','.join(f'{k}={variant.get(k)}' for k in differing)}]"


def _check_metrics_agree(runs: list[Run]) -> None:
    seen: dict[str, tuple[str, bool, Path]] = {}
    for run in runs:
        if not run.used:
            continue
        key = (run.main_metric, run.higher_is_better)
        if run.task in seen and seen[run.task][:2] != key:
            other = seen[run.task]
            raise ConfigError(
                f"runs of task {run.task!r} disagree on the main metric: {other[2]} has {other[0]!r} "
                f"(higher_is_better={other[1]}), {run.path} has {key[0]!r} (higher_is_better={key[1]}); "
                "pass --metric to choose one"
            )
        seen.setdefault(run.task, (*key, run.path))
    for run in runs:  # runs without final numbers inherit their task's metric, for display
        if run.main_metric is None and run.task in seen:
            run.main_metric, run.higher_is_better = seen[run.task][:2]
