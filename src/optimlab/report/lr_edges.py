"""Learning rates chosen on the edge of the grid they were chosen from.

When the best learning rate of an optimizer is the smallest or the largest it was run with, its optimum may
lie outside the grid: the comparison then says how well the grid suits the optimizer, not how good the
optimizer is. The report flags such optimizers, and `optimlab compare` extends the grid in that direction
(`optimlab.sweep.lr_extension`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # analysis imports this module
    from optimlab.report.analysis import TaskResult

LOW, HIGH = "low", "high"


@dataclass(frozen=True)
class LrEdge:
    """An optimizer whose chosen lr is the smallest (`side` 'low') or largest ('high') of `lrs` on `task`."""

    task: str
    label: str
    best_lr: float
    lrs: tuple[float, ...]  # the distinct learning rates it was run with, ascending
    side: str

    @property
    def word(self) -> str:
        return "smallest" if self.side == LOW else "largest"

    def describe(self) -> str:
        grid = ", ".join(f"{lr:.3g}" for lr in self.lrs)
        direction = "smaller" if self.side == LOW else "larger"
        return (f"{self.label}'s best lr {self.best_lr:.3g} is the {self.word} of its grid ({grid}) on "
                f"{self.task}: a {direction} lr may do better, so its result may reflect the grid rather "
                "than the optimizer")


def edge_side(lrs: Iterable[float], best: float) -> str | None:
    """'low' or 'high' when `best` is the smallest or largest of two or more distinct `lrs`, else None.

    A single learning rate is no grid: nothing says which way to look, so it is not flagged.
    """
    values = sorted({float(v) for v in lrs if v is not None and math.isfinite(v)})
    if len(values) < 2 or best is None:
        return None
    if best == values[0]:
        return LOW
    if best == values[-1]:
        return HIGH
    return None


def lr_edges(task: TaskResult) -> list[LrEdge]:
    """The optimizers of `task` whose chosen configuration's lr is on the edge of the lrs they were run with.

    The grid of an optimizer is the learning rates of its configurations with a result (completed or
    diverged runs). A chosen configuration without a single finite selection value (every seed diverged)
    is not flagged: no direction is better than another.
    """
    edges = []
    for row in task.rows:
        config = row.config
        if config.lr is None or config.val_summary.n == 0:
            continue
        lrs = [c.lr for c in task.configurations if c.label == row.label and c.eligible and c.lr is not None]
        side = edge_side(lrs, config.lr)
        if side is not None:
            edges.append(LrEdge(task.task, row.label, config.lr, tuple(sorted(set(lrs))), side))
    return edges
