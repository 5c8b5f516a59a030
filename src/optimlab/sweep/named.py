"""Named Python sweeps: functions returning a list of override mappings, one per run.

    @register_sweep("adam_lr_mnist1d")
    def adam_lr_mnist1d():
        '''Adam on MNIST-1D: a 7-point learning-rate scan, 3 seeds.'''
        return [{"task": "mnist1d_mlp", "optim": "adam", "optim.lr": lr, "seed": s}
                for s in range(3) for lr in LRS]

`optimlab sweep adam_lr_mnist1d` runs it; the first docstring line is its description. A user's own
function needs no registration: `optimlab sweep mymodule:my_sweep`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optimlab.errors import unknown_name

SweepFunction = Callable[[], list[dict[str, Any]]]

_SWEEPS: dict[str, SweepFunction] = {}


def register_sweep(name: str) -> Callable[[SweepFunction], SweepFunction]:
    """Register a function returning a list of override mappings under `name`."""

    def decorator(function: SweepFunction) -> SweepFunction:
        if name in _SWEEPS and _SWEEPS[name] is not function:
            raise ValueError(f"sweep {name!r} is already registered")
        _SWEEPS[name] = function
        function.sweep_name = name  # type: ignore[attr-defined]
        return function

    return decorator


def registered_sweeps() -> list[str]:
    return sorted(_SWEEPS)


def get_sweep_function(name: str) -> SweepFunction:
    try:
        return _SWEEPS[name]
    except KeyError:
        raise unknown_name("sweep", name, _SWEEPS) from None


# --------------------------------------------------------------------------------------------------------
# Built-in Python sweeps


def _logspace(low: float, high: float, n: int) -> list[float]:
    """n log-spaced values from low to high, rounded to 3 significant digits so run names stay readable."""
    ratio = (high / low) ** (1 / (n - 1))
    return [float(f"{low * ratio**i:.3g}") for i in range(n)]


@register_sweep("lr_scan")
def lr_scan() -> list[dict[str, Any]]:
    """SGD (momentum 0.9) and Adam on MNIST-1D: 7 log-spaced learning rates each, 3 seeds."""
    families = {"sgd": (_logspace(1e-3, 1.0, 7), {"optim.momentum": 0.9}), "adam": (_logspace(1e-4, 0.1, 7), {})}
    runs = []
    for seed in range(3):
        for optim, (lrs, extra) in families.items():
            for lr in lrs:
                runs.append({"task": "mnist1d_mlp", "optim": optim, "optim.lr": lr, **extra, "seed": seed,
                             "train.steps": 1000})
    return runs
