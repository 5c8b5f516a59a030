"""Random and quasi-random search: a budget of trials drawn from log, linear, integer and choice ranges.

A spec's `search` block, beside or instead of its `grid`:

    search:
      trials: 16            # the budget: runs per grid point (and per seed)
      method: sobol         # random | sobol | halton (scrambled, seeded: the same spec gives the same trials)
      seed: 0
      space:
        optim.lr: {log: [1e-4, 1e-1]}
        optim.momentum: {linear: [0.0, 0.99]}
        task.width: {int: [32, 256]}
        optim.nesterov: [true, false]      # a list: one of these values
      early_stopping: {rungs: [100, 300, 1000], keep: 0.33}   # optional: successive halving (optimlab.sweep.halving)

Quasi-random (low-discrepancy) search covers a box more evenly than random search for the same budget;
Bergstra & Bengio (JMLR 2012) for random search, and the AlgoPerf benchmark's external tuning ruleset
(Dahl et al., arXiv:2306.07179) draws its trials from a scrambled Halton sequence. Values are rounded to 6
significant digits, so run directories and reports show readable numbers. Sobol points are best balanced
when `trials` is a power of 2.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from optimlab.errors import ConfigError, suggest

METHODS = ("random", "sobol", "halton")
SEARCH_KEYS = ("trials", "method", "seed", "space", "early_stopping")
RANGES = ("log", "linear", "int")


def unit_samples(method: str, trials: int, dims: int, seed: int) -> np.ndarray:
    """`trials` points in [0, 1)^dims: independent uniforms, or a scrambled Sobol or Halton sequence."""
    if method == "random":
        return np.random.default_rng(seed).random((trials, dims))
    from scipy.stats import qmc

    engine = qmc.Sobol(dims, scramble=True, seed=seed) if method == "sobol" else qmc.Halton(dims, scramble=True, seed=seed)
    with warnings.catch_warnings():
        # Sobol is most balanced at powers of 2 (the docs say so); any budget is still a valid prefix
        warnings.filterwarnings("ignore", message=".*balance properties of Sobol.*")
        return engine.random(trials)


def scale(u: float, spec: Any) -> Any:
    """Map a unit sample to a value of the range `spec` ({log: [a, b]}, {linear: [a, b]}, {int: [a, b]}, or a list)."""
    if isinstance(spec, list):
        return spec[min(int(u * len(spec)), len(spec) - 1)]
    (kind, (low, high)), = spec.items()
    if kind == "log":
        return _round(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
    if kind == "linear":
        return _round(low + u * (high - low))
    return min(int(low + math.floor(u * (high - low + 1))), int(high))


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def search_points(search: Any, where: str) -> list[dict[str, Any]]:
    """The trials of a `search` block, each a flat mapping of dotted config keys to values."""
    if not isinstance(search, Mapping):
        raise ConfigError(f"{where}: 'search' must be a mapping with keys {', '.join(SEARCH_KEYS)}")
    for key in search:
        if key not in SEARCH_KEYS:
            raise ConfigError(f"{where}: unknown search key {key!r}{suggest(str(key), SEARCH_KEYS)}")
    trials, method, seed = search.get("trials"), search.get("method", "sobol"), search.get("seed", 0)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError(f"{where}: search 'trials' must be a positive integer, got {trials!r}")
    if method not in METHODS:
        raise ConfigError(f"{where}: search 'method' {method!r} is not one of {', '.join(METHODS)}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{where}: search 'seed' must be an integer, got {seed!r}")
    space = search.get("space")
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(f"{where}: search 'space' must map config keys to ranges, e.g. optim.lr: {{log: [1e-4, 1e-1]}}")
    for key, spec in space.items():
        _check_range(f"{where}: search space {key!r}", spec)
    if "early_stopping" in search:  # successive halving over the trials (optimlab.sweep.halving)
        from optimlab.sweep.halving import parse_early_stopping

        parse_early_stopping(search["early_stopping"], where)
    keys = list(space)
    samples = unit_samples(method, trials, len(keys), seed)
    return [{key: scale(float(u), space[key]) for key, u in zip(keys, row)} for row in samples]


def _check_range(where: str, spec: Any) -> None:
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: an empty list of choices")
        return
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in RANGES:
        raise ConfigError(f"{where}: expected {{log: [low, high]}}, {{linear: [low, high]}}, {{int: [low, high]}} "
                          f"or a list of values, got {spec!r}")
    (kind, bounds), = spec.items()
    numbers = isinstance(bounds, list) and len(bounds) == 2 and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
    if not numbers or bounds[0] > bounds[1]:
        raise ConfigError(f"{where}: {kind} range must be [low, high] with low <= high, got {bounds!r}")
    if kind == "log" and bounds[0] <= 0:
        raise ConfigError(f"{where}: log range needs low > 0, got {bounds!r}")
    if kind == "int" and not all(isinstance(b, int) for b in bounds):
        raise ConfigError(f"{where}: int range needs integer bounds, got {bounds!r}")
