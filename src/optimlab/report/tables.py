"""The report's tables as plain (header, rows) data, shared by the Markdown and HTML pages, and the CSVs.

Display tables hold formatted strings; the CSVs hold raw numbers (empty for missing, `inf` for never).
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from optimlab import rundir
from optimlab.report.analysis import Analysis, TaskResult
from optimlab.report.load import Run
from optimlab.report.stats import ALPHA
from optimlab.report.verdicts import verdicts

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


def pm(mean: float, std: float, digits: int = 4) -> str:
    if math.isnan(mean):
        return "—"
    if not math.isnan(std) and std <= 1e-9 * max(1.0, abs(mean)):
        std = 0.0  # identical seeds up to rounding: 1.4e-16 would only be noise
    return fmt(mean, digits) if math.isnan(std) else f"{fmt(mean, digits)} ± {fmt(std, 2)}"


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
    header += [f"Δ vs {task.baseline or 'baseline'}", "p (Welch)", "p (Holm)", f"at {ALPHA:g}, Holm"]
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
            p_text(row.p_holm),
            row.verdict,
        ]
        rows.append(cells)
    return header, rows


def times(task: TaskResult) -> Table:
    """Time to the task's target per optimizer: steps (exact) and wall seconds with their spread over seeds."""
    header = ["optimizer", "reached (seeds)", "steps to target", "× fastest (steps)", "s to target",
              "s, mean ± 2 SE", "s, CV"]  # fmt: skip
    finite = [r.steps_to_target for r in task.rows if math.isfinite(r.steps_to_target)]
    fastest = min(finite) if finite else math.nan
    rows = []
    for row in task.rows:
        s = row.seconds_spread
        ratio = row.steps_to_target / fastest if fastest > 0 else (1.0 if row.steps_to_target == 0 else math.inf)
        rows.append(
            [
                row.label,
                f"{sum(math.isfinite(t) for t in row.steps_per_seed)}/{len(row.steps_per_seed)}",
                fmt(row.steps_to_target),
                "—" if math.isnan(fastest) or math.isinf(row.steps_to_target) else f"{ratio:.2f}",
                fmt(row.seconds_to_target, 3),
                "—" if s.n == 0 else fmt(s.mean, 3) if s.n < 2 else pm(s.mean, s.two_se, 3),
                "—" if math.isnan(s.cv) else f"{100 * s.cv:.0f} %",
            ]
        )
    return header, rows


def seconds_caveat(task: TaskResult) -> str:
    """One line on whether this task's seconds to target say anything beyond their noise."""
    reached = [r for r in task.rows if math.isfinite(r.seconds_to_target)]
    if len(reached) < 2:
        return ("Wall seconds vary between identical runs (shared machines, other load); steps to target are "
                "exact.")
    if task.seconds_resolved:
        return ("Wall seconds vary between identical runs; here the mean ± 2 SE intervals of the optimizers' "
                "seconds to target do not overlap, so their order in seconds stands out from that noise.")
    return ("Wall seconds vary between identical runs: here the mean ± 2 SE intervals of seconds to target "
            "overlap (or rest on one seed), so differences in seconds between these optimizers are within "
            "noise; compare steps, and cost per step separately.")


def verdict_lines(analysis: Analysis) -> list[tuple[str, str]]:
    """(verdict, sentence) per task and non-baseline optimizer: the report's answer, for its top."""
    return [(v.verdict, v.sentence()) for v in verdicts(analysis)]


def warnings(analysis: Analysis, notes: list[str]) -> list[str]:
    """Learning-rate grid notes (from `optimlab compare`) and every lr chosen on the edge of its grid."""
    lines = list(notes)
    lines += [f"Warning: {edge.describe()}." for task in analysis.tasks for edge in task.lr_edges]
    return lines


def headline_scores(analysis: Analysis) -> list[str]:
    """The performance-profile scores for the top of the report: in steps always (with two or more tasks),
    in seconds only when every task's seconds to target differ by more than their noise."""
    if not analysis.has_profiles:
        return []
    p = analysis.profile
    lines = ["Performance-profile score, time to target in steps (AlgoPerf, 1 = fastest on every task): "
             + ", ".join(f"{label} {v:.3f}" for label, v in zip(p.labels, p.score_steps)) + "."]
    noisy = [t.task for t in analysis.tasks if not t.seconds_resolved]
    if noisy:
        lines.append("Scores in wall seconds are left out of this summary: on " + ", ".join(noisy)
                     + " the optimizers' seconds to target differ by less than their seed-to-seed noise "
                     "(see Performance profiles).")
    else:
        lines.append("Performance-profile score, time to target in wall seconds: "
                     + ", ".join(f"{label} {v:.3f}" for label, v in zip(p.labels, p.score_seconds)) + ".")
    return lines


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
    noisy = any(not t.seconds_resolved for t in analysis.tasks)
    rows.append(["score, steps", "AlgoPerf, r_max = 4", *(f"{v:.3f}" for v in p.score_steps)])
    rows.append(["score, seconds", "AlgoPerf, r_max = 4" + (" (within noise)" if noisy else ""),
                 *(f"{v:.3f}" for v in p.score_seconds)])
    return header, rows


def no_profiles_reason(analysis: Analysis) -> str:
    return (f"Not drawn: performance profiles compare optimizers across tasks, and this report has "
            f"{len(analysis.tasks)} task. Over one task ρ(τ) is a step from 0 to 1 at each optimizer's ratio "
            "to the fastest, which the time-to-target table above already shows; profiles.csv is not written.")


def _interval(low: float, high: float) -> str:
    return "—" if math.isnan(low) else f"[{fmt(low)}, {fmt(high)}]"


def _signed(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:+.4g}"


# --------------------------------------------------------------------------------------------------------
# CSV files (raw numbers)


def csv_names(analysis: Analysis) -> list[str]:
    """The CSV files a report of `analysis` writes (profiles.csv only across two or more tasks)."""
    names = ["verdicts.csv", "runs.csv", "configs.csv", "best.csv"]
    return names + ["profiles.csv"] if analysis.has_profiles else names


def write_csvs(analysis: Analysis, out_dir: Path) -> list[Path]:
    """Write the CSVs; a profiles.csv left by an earlier report in `out_dir` is removed when there is none."""
    writers = {"verdicts.csv": _verdicts_csv, "runs.csv": _runs_csv, "configs.csv": _configs_csv,
               "best.csv": _best_csv, "profiles.csv": _profiles_csv}  # fmt: skip
    paths = []
    for name in csv_names(analysis):
        paths.append(out_dir / name)
        _write(out_dir / name, *writers[name](analysis))
    if not analysis.has_profiles:
        (out_dir / "profiles.csv").unlink(missing_ok=True)
    return paths


def _verdicts_csv(analysis: Analysis):
    header = ["task", "optimizer", "baseline", "verdict", "metric", "higher_is_better", "mean", "baseline_mean",
              "difference", "n", "baseline_n", "p_value", "p_holm", "comparisons", "alpha", "lr_edge", "sentence"]
    rows = []
    for v in verdicts(analysis):
        edges = "; ".join(f"{e.label} {e.side} ({e.best_lr:g})" for e in v.edges)
        rows.append([v.task, v.label, v.baseline, v.verdict, v.metric, v.higher_is_better, v.mean, v.baseline_mean,
                     v.difference, v.n, v.baseline_n, v.p_value, v.p_holm, v.comparisons, ALPHA, edges,
                     v.sentence()])  # fmt: skip
    return header, rows


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
        "test_loss_mean", "test_loss_std", "baseline", "difference", "p_value", "p_holm", "verdict", "lr",
        "lr_edge", "target", "steps_to_target", "seconds_to_target", "seconds_reached", "seconds_mean",
        "seconds_2se", "seconds_cv",
    ]  # fmt: skip
    rows = []
    for task in analysis.tasks:
        edges = {e.label: e.side for e in task.lr_edges}
        for row in task.rows:
            c, t = row.config, row.seconds_spread
            rows.append(
                [
                    task.task, c.label, c.key, c.describe(), task.main_metric, task.higher_is_better,
                    c.test.n, c.n_diverged, c.n_excluded, c.val_summary.mean, c.val_summary.std,
                    c.test.mean, c.test.std, c.test.ci_low, c.test.ci_high, c.test_loss.mean, c.test_loss.std,
                    row.baseline, row.difference, row.p_value, row.p_holm, row.verdict, c.lr,
                    edges.get(row.label, ""), task.target, row.steps_to_target, row.seconds_to_target,
                    t.n, t.mean, t.two_se, t.cv,
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
    """Plain text of a Python or NumPy scalar: '' for missing, 'inf', a float's shortest round-trip digits.

    NumPy scalars are converted first: numpy >= 2 writes `repr(np.float64(500.0))` as 'np.float64(500.0)'.
    """
    if value is None:
        return ""
    if isinstance(value, np.generic):
        value = value.item()  # np.float64 -> float, np.int64 -> int, np.bool_ -> bool
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return repr(float(value))  # shortest round-trip text
    if isinstance(value, int):
        return str(int(value))
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
        f"Welch's two-sided t-test (unequal variances). The {analysis.comparisons} p-values of the report form "
        f"one family, adjusted with Holm's step-down procedure (Holm 1979); the verdict is 'better'/'worse' "
        f"when the adjusted p < {ALPHA:g} (95 % family-wise confidence), 'n.s.' otherwise, 'n/a' with fewer "
        "than two seeds on either side or zero variance on both.",
        "A learning rate chosen on the edge of the learning rates an optimizer was run with (the smallest or "
        "the largest of two or more) is flagged: a better one may lie beyond it.",
        "Seconds to target are shown with their spread over the seeds that reached the target (mean ± 2 "
        "standard errors, coefficient of variation); seconds-based scores enter the summary only when, on "
        "every task, no two optimizers' mean ± 2 SE intervals overlap.",
        f"Performance profiles (Dolan & Moré 2002; AlgoPerf, Dahl et al. 2023): the target of a task is the best "
        f"mean final validation value of any optimizer, relaxed by {analysis.tolerance:g} of its improvement "
        "over the initial value (median first evaluation). Time to target is the first evaluation reaching "
        "it (steps, and training wall seconds), the median over seeds (never if at most half reach it; a "
        "diverged seed never does). ρ(τ) is the fraction of tasks whose time is within τ × the fastest "
        "optimizer's; the score is ∫₁⁴ ρ(τ) dτ / 3. Profiles are drawn only across two or more tasks.",
    ]
