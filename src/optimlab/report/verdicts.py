"""The report's answer: one line per task and optimizer against the baseline.

Each optimizer's chosen configuration is compared with the baseline's on the test main metric (Welch's
t-test over seeds); the p-values of every comparison in the report form one family and are adjusted with
Holm's step-down procedure, so "better" and "worse" hold at 95 % family-wise confidence however many
optimizers and tasks the report holds. A line also says when either side's learning rate was chosen on the
edge of its grid, since an untuned optimizer loses for want of tuning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optimlab.report.analysis import Analysis, Row, TaskResult
from optimlab.report.lr_edges import LrEdge
from optimlab.report.stats import ALPHA

WORDS = {"better": "is better than", "worse": "is worse than", "n.s.": "shows no significant difference from",
         "n/a": "was not tested against"}  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    task: str
    label: str
    baseline: str
    verdict: str  # 'better', 'worse', 'n.s.' or 'n/a'
    metric: str  # test/<main metric>
    higher_is_better: bool
    mean: float
    baseline_mean: float
    difference: float
    n: int
    baseline_n: int
    p_value: float
    p_holm: float
    comparisons: int
    edges: tuple[LrEdge, ...]  # this optimizer's or the baseline's lr on the edge of its grid

    @property
    def confidence(self) -> float:
        """1 - the Holm-adjusted p: the highest family-wise confidence at which the difference is significant."""
        return math.nan if math.isnan(self.p_holm) else 1.0 - self.p_holm

    def sentence(self) -> str:
        """The verdict as one line of plain text."""
        head = f"{self.task}: {self.label} {WORDS[self.verdict]} {self.baseline}"
        if self.verdict == "n.s." or self.verdict in ("better", "worse"):
            means = (f"{self.metric} {_num(self.mean)} vs {_num(self.baseline_mean)} "
                     f"(Δ {self.difference:+.4g}, n = {self.n} vs {self.baseline_n})")
            test = (f"Holm-adjusted p {_p(self.p_holm)} over {self.comparisons} comparison"
                    f"{'s' if self.comparisons != 1 else ''} (Welch p {_p(self.p_value)})")
            if self.verdict == "n.s.":
                text = f"{head}: {means}; {test}, not below {ALPHA:g}"
            else:
                text = f"{head}: {means}; {test}: significant at {100 * (1 - ALPHA):g} % family-wise confidence"
        else:
            text = f"{head}: {_why_untested(self.n, self.baseline_n)}"
        for edge in self.edges:
            text += f"; caution: {edge.label}'s best lr {edge.best_lr:.3g} is the {edge.word} of its grid"
        return text + "."


def verdicts(analysis: Analysis) -> list[Verdict]:
    """Every task's non-baseline optimizers against the task's baseline, in the tables' order."""
    out = []
    for task in analysis.tasks:
        base = task.row(task.baseline) if task.baseline else None
        if base is None:
            continue
        edges = {e.label: e for e in task.lr_edges}
        for row in task.rows:
            if row is base:
                continue
            out.append(_verdict(task, row, base, analysis.comparisons, edges))
    return out


def _verdict(task: TaskResult, row: Row, base: Row, comparisons: int, edges: dict[str, LrEdge]) -> Verdict:
    mine = tuple(edges[label] for label in (row.label, base.label) if label in edges)
    return Verdict(task.task, row.label, base.label, row.verdict, f"test/{task.main_metric}", task.higher_is_better,
                   row.config.test.mean, base.config.test.mean, row.difference, row.config.test.n,
                   base.config.test.n, row.p_value, row.p_holm, comparisons, mine)


def _why_untested(n: int, baseline_n: int) -> str:
    if n < 2 or baseline_n < 2:
        return f"fewer than two completed seeds on a side (n = {n} vs {baseline_n})"
    return (f"the seeds of each side have identical test values (zero variance, n = {n} vs {baseline_n}), "
            "so Welch's test is undefined")


def _num(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.4g}"


def _p(p: float) -> str:
    return "< 0.001" if p < 1e-3 else f"= {p:.3f}"
