"""Helpers shared by the study summaries (critical_gradients_summary.py, hypergradient_summary.py,
gradient_variance_summary.py, ...): their command line, a run's final value, a mean with its 95 % t
interval, and the compute a set of runs spent."""

from __future__ import annotations

import argparse
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from optimlab.report.load import Run, load_runs
from optimlab.report.stats import summarize


def value(run: Run, key: str) -> float:
    """The run's final `key`; nan for a diverged run (the worst possible result)."""
    return math.nan if run.status == "diverged" else run.final(key)


def interval(values: list[float], digits: int = 4) -> str:
    """`mean [low, high]` with the 95 % t interval over the finite values."""
    s = summarize(values)
    if s.n < 2:
        return f"{s.mean:.{digits}f} (n={s.n})"
    return f"{s.mean:.{digits}f} [{s.ci_low:.{digits}f}, {s.ci_high:.{digits}f}]"


def compute_spent(runs: list[Run]) -> str:
    """How many runs, by status, and the sum of their wall times (each run used one thread)."""
    seconds = sum(float(r.summary.get("wall_time") or 0.0) for r in runs)
    statuses = Counter(r.status for r in runs)
    return (f"{len(runs)} runs ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))}), "
            f"{seconds / 60:.1f} CPU-minutes of training (sum of wall times, one thread per run)")


def read_sweeps(
    description: str, options: Callable[[argparse.ArgumentParser], None] | None = None
) -> tuple[argparse.Namespace, list[Run], list[Run]]:
    """The command line `FOLDER... [--figure PNG]`, plus what `options` adds to the parser: (arguments, every
    run, the runs with a result)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--figure", type=Path)
    if options is not None:
        options(parser)
    args = parser.parse_args()
    runs = load_runs(args.folders)
    return args, runs, [r for r in runs if r.status in ("completed", "diverged")]
