"""Extending a learning-rate grid while the best value sits on its edge (`optimlab compare extend=N`).

An optimizer whose best learning rate is the smallest or largest of its grid was probably not tuned: its
optimum may lie beyond the grid, and comparing it there measures the grid. After the sweep, each such
optimizer gets the next learning rate in that direction, with the grid's own log spacing, and the new runs
go into the same sweep; this repeats until no best value is on an edge or an optimizer has had `limit`
extensions. The best value is the report's choice (`optimlab.report.analysis`: the mean over seeds of the
final validation main metric, diverged seeds counting as worst), so the report and the extension agree.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from optimlab.errors import ConfigError

LOW, HIGH = "low", "high"  # as optimlab.report.lr_edges


@dataclass(frozen=True)
class Edge:
    """The best lr of `optim` is the `side` ('low' or 'high') end of the lrs it was run with."""

    optim: str
    side: str
    best_lr: float


def grid_ratio(grid: Sequence[float]) -> float | None:
    """The grid's mean log spacing: (max / min) ** (1 / (n - 1)) over its n distinct values; None for fewer
    than two (a single learning rate is no grid, and says nothing about the spacing wanted)."""
    values = sorted(set(grid))
    if len(values) < 2:
        return None
    return (values[-1] / values[0]) ** (1 / (len(values) - 1))


def next_lr(grid: Sequence[float], side: str, steps: int, ratio: float) -> float:
    """The learning rate `steps` grid spacings beyond the `side` end of `grid`, to 3 significant digits.

    Computed from the original end in one go (end * ratio ** steps), so rounding does not accumulate:
    {0.1, 0.3, 1} extends upwards to 3.16, 10, 31.6.
    """
    end = max(grid) if side == HIGH else min(grid)
    value = end * ratio**steps if side == HIGH else end / ratio**steps
    return float(f"{value:.3g}")


def edges_from_runs(run_dirs: Sequence[Path], baseline: str) -> list[Edge]:
    """The optimizers whose best lr (as the report chooses it) is on the edge of the lrs they were run with."""
    from optimlab.report.analysis import analyze
    from optimlab.report.load import load_runs

    analysis = analyze(load_runs(run_dirs), baseline)
    edges = []
    for task in analysis.tasks:
        for edge in task.lr_edges:
            optim = edge.label.split("+")[0].split("@")[0]  # compare's labels: the optimizer's name
            edges.append(Edge(optim, edge.side, edge.best_lr))
    return edges


def extend_grids(
    grids: dict[str, list[float]],
    limit: int,
    edges: Callable[[], list[Edge]],
    run: Callable[[dict[str, list[float]]], bool],
) -> list[str]:
    """Extend `grids` (optimizer -> lrs, updated in place) while best values sit on their edges.

    Args:
        grids: each optimizer's learning rates, as run so far.
        limit: extensions allowed per optimizer (0: none).
        edges: the current edges, from the runs made so far.
        run: runs the grids given (the finished runs are skipped); returns False if interrupted.

    Returns the report's lines: which lrs were added and why, and a warning for each optimizer whose best
    lr is still on the edge after `limit` extensions. Nothing is added, and a line says why, when the runs
    cannot be read as a report would read them.
    """
    original = {optim: list(lrs) for optim, lrs in grids.items()}
    added: dict[tuple[str, str], int] = {}
    notes: list[str] = []
    if limit <= 0:
        return notes
    while True:
        try:
            current = [e for e in edges() if e.optim in grids]
        except ConfigError as error:
            print(f"optimlab compare: learning-rate grids not extended: {error}", file=sys.stderr)
            return notes
        new: dict[str, tuple[float, str]] = {}
        for edge in current:
            ratio = grid_ratio(original[edge.optim])
            done = sum(n for (optim, _), n in added.items() if optim == edge.optim)
            if ratio is None or done >= limit or ratio <= 1.0:
                continue
            lr = next_lr(original[edge.optim], edge.side, added.get((edge.optim, edge.side), 0) + 1, ratio)
            if lr in grids[edge.optim] or not (math.isfinite(lr) and lr > 0):
                continue
            new[edge.optim] = (lr, edge.side)
            word = "smallest" if edge.side == LOW else "largest"
            note = (f"Learning-rate grid extended: added lr {lr:g} to {edge.optim}'s grid because its best "
                    f"lr {edge.best_lr:g} was the {word} of {_grid(grids[edge.optim])}.")
            notes.append(note)
            print(f"optimlab compare: {note}", file=sys.stderr)
        if not new:
            break
        for optim, (lr, side) in new.items():
            added[(optim, side)] = added.get((optim, side), 0) + 1
            grids[optim] = sorted([*grids[optim], lr])
        if not run(grids):
            return notes
    for edge in current:
        done = sum(n for (optim, _), n in added.items() if optim == edge.optim)
        if done >= limit and grid_ratio(original[edge.optim]) is not None:
            word = "smallest" if edge.side == LOW else "largest"
            notes.append(f"Warning: {edge.optim}'s best lr {edge.best_lr:g} is still the {word} of its grid "
                         f"{_grid(grids[edge.optim])} after {done} extension{'s' if done != 1 else ''} (extend={limit}); "
                         f"its optimum may lie beyond: rerun with a larger extend= or lrs= to tune it.")
    return notes


def _grid(lrs: Sequence[float]) -> str:
    return "{" + ", ".join(f"{lr:g}" for lr in sorted(lrs)) + "}"
