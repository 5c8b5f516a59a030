"""Extending a learning-rate grid while the best value sits on its edge (`optimlab compare extend=N`).

An optimizer whose best learning rate is the smallest or largest of its grid was probably not tuned: its
optimum may lie beyond the grid, and comparing it there measures the grid. Once its runs have ended, each such
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


class Extension:
    """The grids of one compare job and the learning rates added to them, with the report's lines.

    `consider` is asked, for one optimizer at a time, once its runs at the current grid have ended (the
    population and local backends ask as each optimizer ends, while the others still train); `extend_grids`
    asks for all optimizers after each round (the other backends).
    """

    def __init__(self, grids: dict[str, list[float]], limit: int):
        self.grids = grids  # optimizer -> lrs, updated in place
        self.limit = limit
        self.original = {optim: list(lrs) for optim, lrs in grids.items()}
        self.added: dict[tuple[str, str], int] = {}
        self._notes: dict[str, list[str]] = {optim: [] for optim in grids}

    def done(self, optim: str) -> int:
        return sum(n for (name, _), n in self.added.items() if name == optim)

    def consider(self, optim: str, edge: Edge | None) -> float | None:
        """The lr added to `optim`'s grid when its best value sits on the `edge` (None: inside the grid),
        or None when none is (not on an edge, the limit reached, no spacing to extend with)."""
        ratio = grid_ratio(self.original[optim])
        if edge is None or ratio is None or ratio <= 1.0 or self.done(optim) >= self.limit:
            return None
        lr = next_lr(self.original[optim], edge.side, self.added.get((optim, edge.side), 0) + 1, ratio)
        if lr in self.grids[optim] or not (math.isfinite(lr) and lr > 0):
            return None
        word = "smallest" if edge.side == LOW else "largest"
        note = (f"Learning-rate grid extended: added lr {lr:g} to {optim}'s grid because its best "
                f"lr {edge.best_lr:g} was the {word} of {_grid(self.grids[optim])}.")
        self._notes[optim].append(note)
        print(f"optimlab compare: {note}", file=sys.stderr)
        self.added[(optim, edge.side)] = self.added.get((optim, edge.side), 0) + 1
        self.grids[optim] = sorted([*self.grids[optim], lr])
        return lr

    def notes(self, final_edges: Sequence[Edge]) -> list[str]:
        """The report's lines: the lrs added, optimizer by optimizer in grid order, then a warning for each
        optimizer whose best lr is still on the edge (`final_edges`) after `limit` extensions."""
        notes = [note for optim in self.grids for note in self._notes[optim]]
        for edge in final_edges:
            if edge.optim not in self.grids:
                continue
            done = self.done(edge.optim)
            if done >= self.limit and grid_ratio(self.original[edge.optim]) is not None:
                word = "smallest" if edge.side == LOW else "largest"
                notes.append(f"Warning: {edge.optim}'s best lr {edge.best_lr:g} is still the {word} of its grid "
                             f"{_grid(self.grids[edge.optim])} after {done} extension{'s' if done != 1 else ''} "
                             f"(extend={self.limit}); its optimum may lie beyond: rerun with a larger extend= or "
                             "lrs= to tune it.")
        return notes


def extend_grids(
    grids: dict[str, list[float]],
    limit: int,
    edges: Callable[[], list[Edge]],
    run: Callable[[dict[str, list[float]]], bool],
) -> list[str]:
    """Extend `grids` (optimizer -> lrs, updated in place) round by round while best values sit on their edges.

    Args:
        grids: each optimizer's learning rates, as run so far.
        limit: extensions allowed per optimizer (0: none).
        edges: the current edges, from the runs made so far.
        run: runs the grids given (the finished runs are skipped); returns False if interrupted.

    Returns the report's lines (`Extension.notes`). Nothing is added, and a line says why, when the runs
    cannot be read as a report would read them.
    """
    if limit <= 0:
        return []
    extension = Extension(grids, limit)
    while True:
        try:
            current = [e for e in edges() if e.optim in grids]
        except ConfigError as error:
            print(f"optimlab compare: learning-rate grids not extended: {error}", file=sys.stderr)
            return extension.notes([])
        added = [extension.consider(edge.optim, edge) for edge in current]
        if not any(lr is not None for lr in added):
            return extension.notes(current)
        if not run(grids):
            return extension.notes([])


def _grid(lrs: Sequence[float]) -> str:
    return "{" + ", ".join(f"{lr:g}" for lr in sorted(lrs)) + "}"
