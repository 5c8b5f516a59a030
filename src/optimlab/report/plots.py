"""PNG figures of a report: loss curves with seed bands, lr sensitivity, lr traces, performance profiles.

matplotlib is imported when a figure is drawn, and only its object API (`Figure`) is used: no pyplot, no
global backend state, so drawing works headless and in threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from optimlab.report import profiles
from optimlab.report.analysis import Analysis, ProfileResult, TaskResult
from optimlab.report.load import Run

DPI = 100


def colors(labels: list[str]) -> dict[str, str]:
    """One colour per optimizer label, the same in every figure."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: _hex(palette(i % palette.N)) for i, label in enumerate(labels)}


def draw_all(analysis: Analysis, out_dir: Path, series: Sequence[str] = ()) -> dict[str, list[Path]]:
    """Every figure, as files in `out_dir`; returns the written paths by section ('profiles' or a task).

    `series`: metrics.jsonl keys (resolved by `optimlab.report.series.resolve`) drawn per task, one figure
    each, after the task's standard figures; a task whose runs did not log a key gets no figure for it.
    """
    palette = colors(analysis.labels)
    figures: dict[str, list[Path]] = {}
    for task in analysis.tasks:
        stem = slug(task.task)
        written = [
            plot_curves(task, palette, out_dir / f"{stem}-curves.png"),
            plot_lr_sensitivity(task, palette, out_dir / f"{stem}-lr-sensitivity.png"),
            plot_lr_traces(task, palette, out_dir / f"{stem}-lr-traces.png"),
            *(plot_series(task, key, palette, out_dir / f"{stem}-series-{slug(key)}.png") for key in series),
        ]
        figures[task.task] = [p for p in written if p is not None]
    profile_png = out_dir / "performance-profiles.png"
    if analysis.has_profiles:
        path = plot_profiles(analysis.profile, palette, profile_png)
        figures["profiles"] = [path] if path is not None else []
    else:  # one task: no profile; an earlier report's figure in out_dir would contradict the page
        profile_png.unlink(missing_ok=True)
        figures["profiles"] = []
    return figures


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-") or "task"


# --------------------------------------------------------------------------------------------------------
# Figures


def plot_curves(task: TaskResult, palette: dict[str, str], path: Path) -> Path | None:
    """train/loss and val/<main metric> vs step of each optimizer's best configuration.

    The line is the mean over seeds at each logged step; the band spans the minimum to the maximum.
    """
    val_key = f"val/{task.main_metric}"
    fig, axes = _figure(1, 2, (11, 3.8))
    drawn = False
    for ax, key in zip(axes, ("train/loss", val_key)):
        drawn = _draw_bands(ax, task, key, palette) or drawn
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        if key.endswith("loss") and _all_positive(ax):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if not drawn:
        return None
    axes[0].set_title("training loss (mean, min-max over seeds)", fontsize=10)
    axes[1].set_title(f"validation {task.main_metric} (mean, min-max over seeds)", fontsize=10)
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(task.task, fontsize=11)
    return _save(fig, path)


def _draw_bands(ax, task: TaskResult, key: str, palette: dict[str, str]) -> bool:
    """Each optimizer's best configuration: the mean of `key` over its seeds at each logged step, and a band
    from the minimum to the maximum. Whether anything was drawn."""
    drawn = False
    for row in task.rows:
        runs = row.config.used_runs
        steps, mean, low, high = band([r.series(key) for r in runs])
        if not len(steps):
            continue
        drawn = True
        color = palette[row.label]
        ax.plot(steps, mean, color=color, lw=1.6, label=f"{row.label} (n={len(runs)})")
        ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)
    return drawn


def plot_series(task: TaskResult, key: str, palette: dict[str, str], path: Path) -> Path | None:
    """One logged metrics.jsonl series vs step of each optimizer's best configuration: the mean over its
    seeds at each logged step, the band from the minimum to the maximum; None if no such run logged it."""
    fig, axes = _figure(1, 1, (6.5, 4.0))
    ax = axes[0]
    if not _draw_bands(ax, task, key, palette):
        return None
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(f"{task.task}: {key} (mean, min-max over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_lr_sensitivity(task: TaskResult, palette: dict[str, str], path: Path) -> Path | None:
    """Selection value (mean over seeds, error bar = std) vs optim.lr, log x, one line per optimizer.

    Where several configurations share a learning rate, the best one on validation is shown. A
    configuration with diverged seeds is an x off the line (at the mean of its other seeds, or on the
    lower edge if all diverged), labelled with how many diverged.
    """
    fig, axes = _figure(1, 1, (6.5, 4.0))
    ax = axes[0]
    from matplotlib.transforms import blended_transform_factory

    edge = blended_transform_factory(ax.transData, ax.transAxes)
    drawn = False
    for label in sorted({c.label for c in task.configurations}):
        by_lr: dict[float, list] = {}
        for config in task.configurations:
            if config.label == label and config.eligible and config.lr is not None and config.lr > 0:
                by_lr.setdefault(config.lr, []).append(config)
        if not by_lr:
            continue
        color = palette[label]
        chosen = [(lr, min(by_lr[lr], key=lambda c: c.sort_key)) for lr in sorted(by_lr)]
        clean = [(lr, c) for lr, c in chosen if c.n_diverged == 0 and c.val_summary.n > 0]
        if clean:
            x = [lr for lr, _ in clean]
            y = [c.val_summary.mean for _, c in clean]
            err = [0.0 if math.isnan(c.val_summary.std) else c.val_summary.std for _, c in clean]
            ax.errorbar(x, y, yerr=err, color=color, marker="o", ms=4, capsize=3, lw=1.4, label=label)
            drawn = True
        for lr, c in chosen:
            if c.n_diverged == 0:
                continue
            share = f"{c.n_diverged}/{len(c.used_runs)} diverged"
            if c.val_summary.n > 0:  # some seeds diverged: the others' mean, as an x, not on the line
                ax.plot([lr], [c.val_summary.mean], "x", color=color, ms=8, mew=2)
                ax.annotate(share, (lr, c.val_summary.mean), textcoords="offset points", xytext=(5, -12),
                            fontsize=7, color=color)  # fmt: skip
            else:
                ax.plot([lr], [0.03], "x", color=color, ms=8, mew=2, transform=edge, clip_on=False)
                ax.annotate(share, (lr, 0.03), xycoords=edge, textcoords="offset points", xytext=(5, 2),
                            fontsize=7, color=color)  # fmt: skip
            drawn = True
    if not drawn:
        return None
    ax.set_xscale("log")
    ax.set_xlabel("optim.lr")
    select = task.configurations[0].select if task.configurations else "final"
    ax.set_ylabel(f"{select} val/{task.main_metric}")
    ax.set_title(f"{task.task}: learning-rate sensitivity (mean ± std over seeds; x: seeds diverged)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_lr_traces(task: TaskResult, palette: dict[str, str], path: Path) -> Path | None:
    """The logged learning rate vs step of every seed of the best configuration of each optimizer whose
    learning rate moves (a hypergradient method, a schedule, or an optimizer that adapts its own lr)."""
    fig, axes = _figure(1, 1, (6.5, 4.0))
    ax = axes[0]
    drawn = False
    for row in task.rows:
        if not _moving_lr(row.config.runs[0]):
            continue
        for i, run in enumerate(row.config.used_runs):
            steps, _, lr = run.series("lr")
            if not steps:
                continue
            ax.plot(steps, lr, color=palette[row.label], lw=1.2, alpha=0.8, label=row.label if i == 0 else None)
            drawn = True
    if not drawn:
        return None
    if _all_positive(ax):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("lr (first parameter group)")
    ax.set_title(f"{task.task}: learning rate where it moves (one line per seed)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_profiles(profile: ProfileResult, palette: dict[str, str], path: Path) -> Path | None:
    """rho_s(tau) over tau (log x) for time to target in steps and in wall seconds."""
    if not profile.tasks or not profile.labels:
        return None
    fig, axes = _figure(1, 2, (11, 4.0))
    for ax, r, unit in zip(axes, (profile.ratio_steps, profile.ratio_seconds), ("steps", "wall seconds")):
        taus = profiles.tau_grid(r)
        rho = profiles.profile(r, taus)
        for s, label in enumerate(profile.labels):
            ax.step(taus, rho[s], where="post", color=palette[label], lw=1.8, label=label)
        ax.axvline(profiles.R_MAX, color="0.5", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("tau (time to target / fastest optimizer's)")
        ax.set_ylabel("fraction of tasks")
        ax.set_title(f"performance profile, time to target in {unit} ({len(profile.tasks)} tasks)", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=8, loc="lower right")
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------------
# Helpers


def band(series: list[tuple[list[float], list[float], list[float]]]):
    """(steps, mean, min, max) over seeds at each step any seed logged; non-finite values are skipped."""
    values: dict[float, list[float]] = {}
    for steps, _, ys in series:
        for step, y in zip(steps, ys):
            if math.isfinite(y):
                values.setdefault(step, []).append(y)
    steps = np.array(sorted(values))
    if not len(steps):
        return steps, steps, steps, steps
    mean = np.array([np.mean(values[s]) for s in steps])
    low = np.array([np.min(values[s]) for s in steps])
    high = np.array([np.max(values[s]) for s in steps])
    return steps, mean, low, high


def _moving_lr(run: Run) -> bool:
    """A hypergradient method or schedule in the config, or a logged lr that changes (e.g. `sgd_hd`)."""
    hyper = (run.config.get("hyper") or {}).get("name", "none")
    schedule = (run.config.get("schedule") or {}).get("name", "constant")
    if hyper not in (None, "none") or schedule not in (None, "constant"):
        return True
    _, _, lr = run.series("lr")
    finite = [v for v in lr if math.isfinite(v)]
    return len(set(finite)) > 1


def _figure(rows: int, cols: int, size: tuple[float, float]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    return fig, list(axes)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def _all_positive(ax) -> bool:
    ys = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    ys = [y[np.isfinite(y)] for y in ys]
    ys = [y for y in ys if y.size]
    return bool(ys) and all((y > 0).all() for y in ys)


def _hex(rgba) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(round(255 * c)) for c in rgba[:3]))
