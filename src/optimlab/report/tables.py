"""The report's tables as plain (header, rows) data, shared by the Markdown and HTML pages, and the CSVs.

Display tables hold formatted strings; the CSVs hold raw numbers (empty for missing, `inf` for never).
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any

from optimlab import rundir
from optimlab.report.analysis import Analysis, TaskResult
from optimlab.report.load import Run
from optimlab.report.stats import ALPHA

# Status columns: those with final numbers first, then the rest in the run directory's order.
STATUS_ORDER = (*rundir.HAS_RESULT, *(s for s in rundir.STATUSES if s not in rundir.HAS_RESULT))

Table = tuple[list[str], list[list[str]]]


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for display: '—' if missing, 'never' for inf (a target not reached), integers exactly."""
    if value is None or math.isnan(value):
        return "—"
    if math.isinf(value):
        return "never" if value > 0 else "-inf"
    if value == int(value) and 1 <= abs(value) < 1e9:
        return str(int(value))
    return f"{value:.{digits}g}"


def pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "—"
    if not math.isnan(std) and std <= 1e-9 * max(1.0, abs(mean)):
        std = 0.0  # identical seeds up to rounding: 1.4e-16 would only be noise
    return fmt(mean) if math.isnan(std) else f"{fmt(mean)} ± {fmt(std, 2)}"


def p_text(p: float) -> str:
    if math.isnan(p):
        return "—"
    return "< 0.001" if p < 1e-3 else f"{p:.3f}"


def overview(analysis: Analysis) -> Table:
    """Run counts per task and status."""
    header = ["task", "main metric", "runs", *STATUS_ORDER, "optimizers", "configurations"]
    rows = []
    totals: Counter = Counter()
    for task in analysis.tasks:
        counts = Counter(r.status for r in task.runs)
        totals.update(counts)
        direction = "higher is better" if task.higher_is_better else "lower is better"
        rows.append(
            [
                task.task,
                f"val/{task.main_metric} ({direction})",
                str(len(task.runs)),
                *(str(counts.get(s, 0)) for s in STATUS_ORDER),
                str(len({c.label for c in task.configurations})),
                str(len(task.configurations)),
            ]
        )
    if len(analysis.tasks) > 1:
        configs = sum(len(t.configurations) for t in analysis.tasks)
        rows.append(
            ["all", "", str(len(analysis.runs)), *(str(totals.get(s, 0)) for s in STATUS_ORDER),
             str(len(analysis.labels)), str(configs)]
        )  # fmt: skip
    return header, rows


def best(task: TaskResult, select: str) -> Table:
    """Each optimizer's best configuration (chosen on validation), reported on test."""
    m = task.main_metric
    header = [
        "optimizer",
        "best configuration",
        "seeds",
        "diverged",
        "excluded",
        f"{select} val/{m}",
        f"test/{m}",
        "95 % CI",
    ]
    if m != "loss":
        header.append("test/loss")
    header += [f"Δ vs {task.baseline or 'baseline'}", "p (Welch)", f"at {ALPHA:g}", "steps to target", "s to target"]
    rows = []
    for row in task.rows:
        c = row.config
        cells = [
            row.label,
            f"{c.describe()} [{c.key}]",
            str(len(c.used_runs)),
            str(c.n_diverged),
            str(c.n_excluded),
            pm(c.val_summary.mean, c.val_summary.std),
            pm(c.test.mean, c.test.std),
            _interval(c.test.ci_low, c.test.ci_high),
        ]
        if m != "loss":
            cells.append(pm(c.test_loss.mean, c.test_loss.std))
        cells += [
            "—" if row.verdict == "baseline" else _signed(row.difference),
            p_text(row.p_value),
            row.verdict,
            fmt(row.steps_to_target),
            fmt(row.seconds_to_target, 3),
        ]
        rows.append(cells)
    return header, rows


def configurations(task: TaskResult) -> Table:
    """Every configuration of every optimizer, with its validation result; the chosen ones marked."""
    chosen = {id(r.config) for r in task.rows}
    header = ["optimizer", "configuration", "seeds", "diverged", "excluded", f"val/{task.main_metric}", "chosen"]
    ordered = sorted(task.configurations, key=lambda c: (c.label, c.sort_key))
    rows = [
        [
            c.label,
            f"{c.describe()} [{c.key}]",
            str(len(c.used_runs)),
            str(c.n_diverged),
            str(c.n_excluded),
            pm(c.val_summary.mean, c.val_summary.std),
            "✓" if id(c) in chosen else "",
        ]
        for c in ordered
    ]
    return header, rows


def problem_runs(analysis: Analysis) -> Table:
    """Every run that did not complete: never dropped silently."""
    header = ["run directory", "task", "optimizer", "seed", "status", "step", "detail"]
    rows = []
    for run in analysis.runs:
        if run.status == rundir.COMPLETED:
            continue
        detail = ""
        if run.status == rundir.DIVERGED:
            detail = f"diverged at step {run.summary.get('diverged_step')}"
        elif run.status == rundir.STOPPED:
            detail = "ended early on purpose (a search's early stopping)"
        elif run.summary.get("error"):
            detail = str(run.summary["error"]).splitlines()[0][:160]
        step = str(run.summary.get("step", ""))
        rows.append([str(run.path), run.task, run.label, str(run.seed), run.status, step, detail])
    return header, rows


def profile_table(analysis: Analysis) -> Table:
    """Time to target per task and optimizer (steps / seconds) with the target, and the AlgoPerf scores."""
    p = analysis.profile
    header = ["task", "target", *p.labels]
    rows = []
    for i, task in enumerate(analysis.tasks):
        cells = [task.task, f"val/{task.main_metric} {'≥' if task.higher_is_better else '≤'} {fmt(task.target)}"]
        for s in range(len(p.labels)):
            if task.row(p.labels[s]) is None:
                cells.append("not run")
            elif math.isinf(p.steps[i, s]):
                cells.append("never")
            else:
                cells.append(f"{fmt(p.steps[i, s])} steps (×{p.ratio_steps[i, s]:.2f}) / {fmt(p.seconds[i, s], 3)} s")
        rows.append(cells)
    rows.append(["score, steps", "AlgoPerf, r_max = 4", *(f"{v:.3f}" for v in p.score_steps)])
    rows.append(["score, seconds", "AlgoPerf, r_max = 4", *(f"{v:.3f}" for v in p.score_seconds)])
    return header, rows


def _interval(low: float, high: float) -> str:
    return "—" if math.isnan(low) else f"[{fmt(low)}, {fmt(high)}]"


def _signed(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:+.4g}"


# --------------------------------------------------------------------------------------------------------
# CSV files (raw numbers)


def write_csvs(analysis: Analysis, out_dir: Path) -> list[Path]:
    paths = [out_dir / "runs.csv", out_dir / "configs.csv", out_dir / "best.csv", out_dir / "profiles.csv"]
    _write(paths[0], *_runs_csv(analysis))
    _write(paths[1], *_configs_csv(analysis))
    _write(paths[2], *_best_csv(analysis))
    _write(paths[3], *_profiles_csv(analysis))
    return paths


def _runs_csv(analysis: Analysis):
    header = [
        "run_dir", "task", "optimizer", "configuration", "seed", "status", "lr", "step", "main_metric",
        "final_val", "final_test", "final_test_loss", "wall_time", "diverged_step", "error",
    ]  # fmt: skip
    rows = []
    for run in analysis.runs:
        m = run.main_metric
        rows.append(
            [
                str(run.path), run.task, run.label, run.configuration, run.seed, run.status, run.lr,
                run.summary.get("step"), m,
                run.final(f"val/{m}") if m else None, run.final(f"test/{m}") if m else None,
                run.final("test/loss"), run.summary.get("wall_time"), run.summary.get("diverged_step"),
                _one_line(run.summary.get("error")),
            ]
        )  # fmt: skip
    return header, rows


def _configs_csv(analysis: Analysis):
    header = ["task", "optimizer", "configuration", "params", "lr", "n", "n_diverged", "n_excluded",
              "val_mean", "val_std", "test_mean", "test_std", "chosen"]  # fmt: skip
    rows = []
    for task in analysis.tasks:
        chosen = {id(r.config) for r in task.rows}
        for c in task.configurations:
            rows.append(
                [task.task, c.label, c.key, c.describe(), c.lr, len(c.used_runs), c.n_diverged, c.n_excluded,
                 c.val_summary.mean, c.val_summary.std, c.test.mean, c.test.std, id(c) in chosen]
            )  # fmt: skip
    return header, rows


def _best_csv(analysis: Analysis):
    header = [
        "task", "optimizer", "configuration", "params", "main_metric", "higher_is_better", "n", "n_diverged",
        "n_excluded", "val_mean", "val_std", "test_mean", "test_std", "test_ci_low", "test_ci_high",
        "test_loss_mean", "test_loss_std", "baseline", "difference", "p_value", "verdict",
        "target", "steps_to_target", "seconds_to_target",
    ]  # fmt: skip
    rows = []
    for task in analysis.tasks:
        for row in task.rows:
            c = row.config
            rows.append(
                [
                    task.task, c.label, c.key, c.describe(), task.main_metric, task.higher_is_better,
                    c.test.n, c.n_diverged, c.n_excluded, c.val_summary.mean, c.val_summary.std,
                    c.test.mean, c.test.std, c.test.ci_low, c.test.ci_high, c.test_loss.mean, c.test_loss.std,
                    row.baseline, row.difference, row.p_value, row.verdict,
                    task.target, row.steps_to_target, row.seconds_to_target,
                ]
            )  # fmt: skip
    return header, rows


def _profiles_csv(analysis: Analysis):
    p = analysis.profile
    header = ["task", "optimizer", "target", "steps_to_target", "seconds_to_target", "ratio_steps", "ratio_seconds"]
    rows = []
    for i, task in enumerate(analysis.tasks):
        for s, label in enumerate(p.labels):
            rows.append([task.task, label, task.target, p.steps[i, s], p.seconds[i, s], p.ratio_steps[i, s],
                         p.ratio_seconds[i, s]])  # fmt: skip
    for s, label in enumerate(p.labels):
        rows.append(["score", label, "", "", "", p.score_steps[s], p.score_seconds[s]])
    return header, rows


def _write(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows([[_cell(v) for v in row] for row in rows])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return repr(value)  # shortest round-trip text
    return str(value)


def _one_line(value: Any) -> str:
    return "" if value is None else str(value).splitlines()[0] if str(value) else ""


def run_count(runs: list[Run]) -> str:
    counts = Counter(r.status for r in runs)
    return ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts.get(s))


def tuning_budget(runs: list[Run]) -> str:
    """Per optimizer, the runs it was given and the training steps they took (an early-stopped run counts the
    steps it ran): a search with early stopping spends less than trials x steps, and comparisons of tuned
    optimizers should state what each was given."""
    count: Counter = Counter()
    steps: Counter = Counter()
    for run in runs:
        count[run.label] += 1
        steps[run.label] += int(run.summary.get("step") or 0)
    return "; ".join(f"{label}: {count[label]} runs, {steps[label]} steps" for label in sorted(count))


def has_stopped(runs: list[Run]) -> bool:
    return any(run.status == rundir.STOPPED for run in runs)


def methods(analysis: Analysis) -> list[str]:
    """The statistical rules this report applied, one sentence each (docs/reports.md has the full text)."""
    select = "final validation value" if analysis.select == "final" else "best validation evaluation"
    return [
        "An optimizer is the optim name, plus +hyper for hypergradient runs and @schedule for a non-constant "
        "schedule. A configuration is a run's config without its seed (and without keys that do not change "
        "the computation), identified by summary.json's configuration_hash; its seeds are aggregated.",
        f"Each optimizer's best configuration is chosen on the mean over seeds of each run's {select} of the "
        "main metric (ties: the lower mean val/loss). Diverged runs count as the worst possible result; failed, "
        "running, interrupted and stopped (ended early by a search) runs are excluded from the statistics but "
        "listed and counted.",
        "The chosen configuration is reported on test: mean ± sample standard deviation (ddof=1) over its "
        "completed seeds, and the 95 % confidence interval mean ± t(0.975, n−1)·std/√n.",
        f"Δ and p compare the test main metric with the baseline's chosen configuration on the same task: "
        f"Welch's two-sided t-test (unequal variances); 'better'/'worse' when p < {ALPHA:g}, 'n.s.' otherwise, "
        "'n/a' with fewer than two seeds on either side. p-values are not corrected for multiple comparisons.",
        f"Performance profiles (Dolan & Moré 2002; AlgoPerf, Dahl et al. 2023): the target of a task is the best "
        f"mean final validation value of any optimizer, relaxed by {analysis.tolerance:g} of its improvement "
        "over the initial value (median first evaluation). Time to target is the first evaluation reaching "
        "it (steps, and training wall seconds), the median over seeds (never if at most half reach it; a "
        "diverged seed never does). ρ(τ) is the fraction of tasks whose time is within τ × the fastest "
        "optimizer's; the score is ∫₁⁴ ρ(τ) dτ / 3.",
    ]
