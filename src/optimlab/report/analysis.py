"""From runs to results: configurations, the best configuration per task and optimizer, tests, profiles.

The rules (stated in full in docs/reports.md):

- An optimizer label is `optim` [+`hyper`] [@`schedule`]; a configuration is the config without the seed
  and the keys that do not change what is computed. Seeds of a configuration are aggregated.
- Selection is on validation: the final `val/<main metric>` of each run by default (`select="best"`: the
  best evaluation of the run). Diverged runs and missing values count as the worst possible result.
- Reporting is on test: the final `test/<main metric>` and `test/loss` of the chosen configuration's
  completed runs; mean, std (ddof=1), n, 95 % t interval, and Welch's t-test against the baseline
  optimizer's chosen configuration on the same task. The verdicts use Holm-adjusted p-values over every
  comparison in the report (all tasks and optimizers together).
- Learning-rate edges: see `optimlab.report.lr_edges`; seconds-to-target noise: `optimlab.report.timing`.
- Performance profiles: see `optimlab.report.profiles`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimlab.errors import ConfigError, suggest
from optimlab import rundir
from optimlab.report import profiles
from optimlab.report.load import Run
from optimlab.report.lr_edges import LrEdge, lr_edges
from optimlab.report.stats import ALPHA, Summary, holm, selection_key, summarize, welch_p_value
from optimlab.report.timing import TimeSpread, resolved, spread

DEFAULT_TOLERANCE = 0.05


@dataclass
class Configuration:
    """The runs (seeds) of one configuration of one optimizer on one task."""

    task: str
    label: str
    key: str  # short hash of the configuration identity
    params: dict[str, Any]  # the keys whose values differ between this optimizer's configurations
    runs: list[Run]
    main_metric: str
    higher_is_better: bool
    select: str = "final"
    val: list[float] = field(init=False)  # selection value per used run; nan for diverged runs
    val_loss: list[float] = field(init=False)  # val/loss per used run: breaks ties of the main metric
    test_values: list[float] = field(init=False)
    test: Summary = field(init=False)
    test_loss: Summary = field(init=False)
    val_summary: Summary = field(init=False)

    def __post_init__(self) -> None:
        used = self.used_runs
        val_key, test_key = f"val/{self.main_metric}", f"test/{self.main_metric}"
        pick = (lambda r: r.final(val_key)) if self.select == "final" else (lambda r: r.best(val_key))
        pick_loss = (lambda r: r.final("val/loss")) if self.select == "final" else (lambda r: r.best("val/loss"))
        self.val = [math.nan if r.status == rundir.DIVERGED else pick(r) for r in used]
        self.val_loss = [math.nan if r.status == rundir.DIVERGED else pick_loss(r) for r in used]
        completed = [r for r in used if r.status == rundir.COMPLETED]
        self.test_values = [r.final(test_key) for r in completed]
        self.test = summarize(self.test_values)
        self.test_loss = summarize([r.final("test/loss") for r in completed])
        self.val_summary = summarize(self.val)

    @property
    def used_runs(self) -> list[Run]:
        return [r for r in self.runs if r.used]

    @property
    def n_diverged(self) -> int:
        return sum(r.status == rundir.DIVERGED for r in self.runs)

    @property
    def n_excluded(self) -> int:
        """Runs whose final numbers are not aggregated: failed, running, interrupted, stopped."""
        return sum(not r.used for r in self.runs)

    @property
    def eligible(self) -> bool:
        return bool(self.used_runs)

    @property
    def sort_key(self) -> tuple[float, float, float, str]:
        """Selection order: fewest diverged runs, best mean main metric, then lowest mean val/loss (ties
        are common with accuracy on small validation sets), then the configuration hash."""
        finite = [v for v in self.val_loss if math.isfinite(v)]
        loss = float(np.mean(finite)) if finite else math.inf
        return (*selection_key(self.val, self.higher_is_better), loss, self.key)

    @property
    def lr(self) -> float | None:
        return self.runs[0].lr

    def describe(self) -> str:
        if not self.params:
            return "(only configuration)"
        return ", ".join(f"{_short(k)}={_fmt_value(v)}" for k, v in self.params.items())


@dataclass
class Row:
    """One line of a task's table: an optimizer's best configuration and its comparison to the baseline."""

    config: Configuration
    baseline: str | None
    difference: float = math.nan  # test mean minus the baseline's test mean
    p_value: float = math.nan  # Welch's two-sided p-value, uncorrected
    p_holm: float = math.nan  # Holm-adjusted over every comparison of the report: what the verdict uses
    steps_to_target: float = math.inf  # median over seeds (inf: at most half the seeds reached the target)
    seconds_to_target: float = math.inf
    steps_per_seed: list[float] = field(default_factory=list)  # inf for a seed that never reached it
    seconds_per_seed: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def significant(self) -> bool | None:
        """Whether the Holm-adjusted p-value is below ALPHA; None when no test was possible."""
        return None if math.isnan(self.p_holm) else bool(self.p_holm < ALPHA)

    @property
    def verdict(self) -> str:
        """'baseline', 'better', 'worse', 'n.s.' or 'n/a' (too few seeds or no baseline), after Holm."""
        if self.baseline is None:
            return "n/a"
        if self.baseline == self.label:
            return "baseline"
        return verdict(self.difference, self.p_holm, self.config.higher_is_better)

    @property
    def seconds_spread(self) -> TimeSpread:
        """Mean +- 2 standard errors and coefficient of variation of the seeds' seconds to target."""
        return spread(self.seconds_per_seed)


def verdict(difference: float, p_adjusted: float, higher_is_better: bool, alpha: float = ALPHA) -> str:
    """'better' / 'worse' (in the direction of `difference` and the metric) when `p_adjusted` < alpha,
    'n.s.' when not, 'n/a' when no test was possible (nan)."""
    if math.isnan(p_adjusted):
        return "n/a"
    if p_adjusted >= alpha:
        return "n.s."
    return "better" if (difference > 0) == higher_is_better else "worse"


@dataclass
class TaskResult:
    task: str
    main_metric: str
    higher_is_better: bool
    runs: list[Run]
    configurations: list[Configuration]
    rows: list[Row]  # one per optimizer label, best on validation first
    baseline: str | None
    initial: float = math.nan  # median val main metric at the first evaluation
    best_val: float = math.nan
    target: float = math.nan
    target_rule: str = ""

    def row(self, label: str) -> Row | None:
        return next((r for r in self.rows if r.label == label), None)

    @property
    def lr_edges(self) -> list[LrEdge]:
        """Optimizers whose chosen learning rate is the smallest or largest they were run with here."""
        return lr_edges(self)

    @property
    def seconds_resolved(self) -> bool:
        """Whether the seconds to target of the optimizers that reached the target differ by more than
        their seed-to-seed noise (`optimlab.report.timing.resolved`)."""
        return resolved([r.seconds_spread for r in self.rows if math.isfinite(r.seconds_to_target)])


@dataclass
class ProfileResult:
    tasks: list[str]
    labels: list[str]
    steps: np.ndarray  # [tasks, labels] time to target in steps (inf: not reached or not run)
    seconds: np.ndarray
    ratio_steps: np.ndarray
    ratio_seconds: np.ndarray
    score_steps: np.ndarray
    score_seconds: np.ndarray


@dataclass
class Analysis:
    runs: list[Run]
    tasks: list[TaskResult]
    labels: list[str]  # every optimizer label, in display order
    profile: ProfileResult
    select: str
    tolerance: float
    comparisons: int = 0  # the tests in the Holm family: every testable row against its baseline

    @property
    def has_profiles(self) -> bool:
        """Performance profiles need two or more tasks: over one task, rho is a step from 0 to 1 at the
        optimizer's ratio, which says no more than the time-to-target table."""
        return len(self.tasks) >= 2


def analyze(
    runs: Sequence[Run],
    baseline: str | None = None,
    *,
    select: str = "final",
    tolerance: float = DEFAULT_TOLERANCE,
    targets: dict[str, float] | None = None,
) -> Analysis:
    """Group runs, choose each optimizer's best configuration per task, compare, and build profiles.

    Args:
        runs: every run read (all statuses).
        baseline: optimizer label to test against; None: per task, the optimizer best on validation.
        select: 'final' (the last validation value) or 'best' (the best evaluation) of each run.
        tolerance: the performance-profile target is reaching (1 - tolerance) of the best improvement.
        targets: explicit target values of `val/<main metric>` by task, overriding the tolerance rule.
    """
    if select not in ("final", "best"):
        raise ConfigError(f"selection must be 'final' or 'best', got {select!r}")
    if not 0 <= tolerance < 1:
        raise ConfigError(f"target tolerance must be in [0, 1), got {tolerance}")
    if not runs:
        raise ConfigError("no runs found")
    targets = dict(targets or {})
    labels = sorted({r.label for r in runs})
    if baseline is not None and baseline not in labels:
        raise ConfigError(f"baseline optimizer {baseline!r} is not among the runs{suggest(baseline, labels)}")
    task_names = sorted({r.task for r in runs})
    for name in targets:
        if name not in task_names:
            raise ConfigError(f"--target for unknown task {name!r}{suggest(name, task_names)}")
    tasks = [
        _task_result(name, [r for r in runs if r.task == name], baseline, select, tolerance, targets.get(name))
        for name in task_names
    ]
    comparisons = adjust_for_multiple_comparisons(tasks)
    return Analysis(list(runs), tasks, labels, _profile(tasks, labels), select, tolerance, comparisons)


def adjust_for_multiple_comparisons(tasks: Sequence[TaskResult]) -> int:
    """Set every row's Holm-adjusted p-value over the family of all tests in the report; returns its size."""
    rows = [row for task in tasks for row in task.rows]
    for row, q in zip(rows, holm([row.p_value for row in rows])):
        row.p_holm = q
    return sum(not math.isnan(row.p_value) for row in rows)


def _task_result(
    task: str,
    runs: list[Run],
    baseline: str | None,
    select: str,
    tolerance: float,
    explicit_target: float | None,
) -> TaskResult:
    used = [r for r in runs if r.used]
    main_metric = used[0].main_metric if used else (runs[0].main_metric or "loss")
    higher = used[0].higher_is_better if used else bool(runs[0].higher_is_better)
    configurations = []
    for label in sorted({r.label for r in runs}):
        mine = [r for r in runs if r.label == label]
        varying = _varying_keys(mine)
        for key in sorted({r.configuration for r in mine}):
            group = sorted((r for r in mine if r.configuration == key), key=lambda r: (str(r.seed), str(r.path)))
            params = {k: group[0].identity.get(k) for k in varying}
            configurations.append(Configuration(task, label, key, params, group, main_metric, higher, select))
    best: list[Configuration] = []
    for label in sorted({c.label for c in configurations}):
        candidates = sorted((c for c in configurations if c.label == label and c.eligible), key=lambda c: c.sort_key)
        if candidates:
            best.append(candidates[0])
    best.sort(key=lambda c: (c.sort_key, c.label))
    reference = baseline if baseline is not None else (best[0].label if best else None)
    ref_config = next((c for c in best if c.label == reference), None)
    rows = []
    for config in best:
        row = Row(config, reference if ref_config is not None else None)
        if ref_config is not None and config is not ref_config:
            row.difference = config.test.mean - ref_config.test.mean
            row.p_value = welch_p_value(config.test_values, ref_config.test_values)
        rows.append(row)
    result = TaskResult(task, main_metric, higher, runs, configurations, rows, row_baseline(rows, reference))
    _set_target(result, tolerance, explicit_target)
    return result


def row_baseline(rows: list[Row], reference: str | None) -> str | None:
    return reference if any(r.label == reference for r in rows) else None


def _set_target(result: TaskResult, tolerance: float, explicit: float | None) -> None:
    val_key = f"val/{result.main_metric}"
    firsts = []
    for run in result.runs:
        if run.used:
            _, _, values = run.series(val_key)
            if values and math.isfinite(values[0]):
                firsts.append(values[0])
    result.initial = float(np.median(firsts)) if firsts else math.nan
    means = [r.config.val_summary.mean for r in result.rows if math.isfinite(r.config.val_summary.mean)]
    if means:
        result.best_val = max(means) if result.higher_is_better else min(means)
    if explicit is not None:
        result.target = float(explicit)
        result.target_rule = "given with --target"
    else:
        result.target = profiles.relaxed_target(result.best_val, result.initial, tolerance, result.higher_is_better)
        result.target_rule = (
            f"best mean final {val_key} {_fmt_value(result.best_val)}, relaxed by {tolerance:g} of the "
            f"improvement over the initial {_fmt_value(result.initial)}"
        )
    for row in result.rows:
        steps, seconds = [], []
        for run in row.config.used_runs:
            if run.status == rundir.DIVERGED or not math.isfinite(result.target):
                steps.append(math.inf)
                seconds.append(math.inf)
                continue
            s, t, v = run.series(val_key)
            step, second = profiles.time_to_target(s, t, v, result.target, result.higher_is_better)
            steps.append(step)
            seconds.append(second)
        row.steps_per_seed, row.seconds_per_seed = steps, seconds
        row.steps_to_target = profiles.median_time(steps)
        row.seconds_to_target = profiles.median_time(seconds)


def _profile(tasks: list[TaskResult], labels: list[str]) -> ProfileResult:
    steps = np.full((len(tasks), len(labels)), math.inf)
    seconds = np.full((len(tasks), len(labels)), math.inf)
    for p, task in enumerate(tasks):
        for s, label in enumerate(labels):
            row = task.row(label)
            if row is not None:
                steps[p, s], seconds[p, s] = row.steps_to_target, row.seconds_to_target
    r_steps, r_seconds = profiles.ratios(steps), profiles.ratios(seconds)
    return ProfileResult(
        [t.task for t in tasks],
        labels,
        steps,
        seconds,
        r_steps,
        r_seconds,
        profiles.score(r_steps),
        profiles.score(r_seconds),
    )


def _varying_keys(runs: list[Run]) -> list[str]:
    """Identity keys whose values differ between the configurations of these runs (the searched ones)."""
    keys = sorted({k for r in runs for k in r.identity})
    varying = []
    for key in keys:
        values = {json.dumps(r.identity.get(key), sort_keys=True, default=str) for r in runs}
        if len(values) > 1:
            varying.append(key)
    # the learning rate first: it is what a sweep varies most often
    return sorted(varying, key=lambda k: (k != "optim.lr", k))


def _short(key: str) -> str:
    return key[len("optim.") :] if key.startswith("optim.") else key


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
