"""Which metrics.jsonl series `optimlab report --series NAME...` plots.

A name is an exact key of metrics.jsonl (`train/grad_norm`, `optim/kappa`) or a shell-style pattern
(`instr/grad_stats/*`, `hyper/*`) matched with `fnmatch` against every key any run logged. A name that
matches nothing is a ConfigError naming it, so a typo does not silently give a report without the figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from optimlab.errors import ConfigError, suggest
from optimlab.report.load import Run

# Present on every line: the x axes, not series.
NOT_SERIES = ("step", "time")

_PATTERN_CHARS = "*?["


def logged_keys(runs: Iterable[Run]) -> set[str]:
    """Every key some metrics.jsonl line of these runs carries, except step and time."""
    return {key for run in runs for record in run.metrics for key in record if key not in NOT_SERIES}


def resolve(names: Sequence[str], runs: Sequence[Run]) -> list[str]:
    """The logged keys that `names` select, in the order given (each pattern's matches sorted), once each.

    Raises:
        ConfigError: a name that is no logged key, or a pattern that matches none.
    """
    logged = logged_keys(runs)
    keys: dict[str, None] = {}
    for name in names:
        if any(c in name for c in _PATTERN_CHARS):
            matches = sorted(k for k in logged if fnmatchcase(k, name))
            if not matches:
                raise ConfigError(f"--series {name!r}: the pattern matches no logged metric{_choices(name, logged)}")
        elif name in logged:
            matches = [name]
        else:
            raise ConfigError(f"--series {name!r}: no run logged this metric{_choices(name, logged)}")
        keys.update(dict.fromkeys(matches))
    return list(keys)


def _choices(name: str, logged: set[str]) -> str:
    return suggest(name, logged) if logged else " (the runs logged no metrics)"
