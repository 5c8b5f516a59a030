"""`write_report`: run directories in, Markdown + self-contained HTML + CSV + PNG out."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from optimlab.errors import ConfigError
from optimlab.report import html_page, markdown, plots, tables
from optimlab.report.analysis import DEFAULT_TOLERANCE, Analysis, analyze
from optimlab.report.load import load_runs
from optimlab.report.series import resolve as resolve_series


def write_report(
    run_dirs: Iterable[str | Path],
    out_dir: str | Path,
    baseline: str | None = None,
    *,
    metric: str | None = None,
    select: str = "final",
    tolerance: float = DEFAULT_TOLERANCE,
    targets: dict[str, float] | None = None,
    series: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> Path:
    """Read run directories and write a report into `out_dir`; returns `out_dir/index.html`.

    Writes `index.html` (self-contained: figures embedded), `report.md` (figures as files beside it),
    `verdicts.csv`, `runs.csv`, `configs.csv`, `best.csv`, the PNG figures and, across two or more tasks,
    `profiles.csv` and `performance-profiles.png`.

    Args:
        run_dirs: run directories, or folders holding them (searched recursively for summary.json).
        out_dir: created if missing; files of an earlier report there are overwritten.
        baseline: optimizer label (e.g. 'adam', 'sgd+marthe', 'sgd@sgdr') every other optimizer is tested
            against; None: per task, the optimizer best on validation.
        metric: override of the main metric, 'NAME', 'NAME:max' or 'NAME:min'.
        select: choose configurations on each run's 'final' (default) or 'best' validation value.
        tolerance: performance-profile target = best value relaxed by this fraction of the improvement.
        targets: explicit performance-profile targets of val/<main metric>, by task.
        series: metrics.jsonl keys or fnmatch patterns (e.g. 'train/grad_norm', 'optim/*') to plot over
            steps, one figure per task and key, in the task's section.
        notes: lines shown under the verdicts, about how the runs came to be (`optimlab compare` lists the
            learning rates it added to a grid, and why).

    Raises:
        ConfigError: no runs found, a malformed run directory, an unknown baseline, a series no run logged,
            or an unwritable out_dir.

    Example:
        >>> write_report(["runs/mnist1d_mlp"], "reports/mnist1d", baseline="adam")  # doctest: +SKIP
        PosixPath('reports/mnist1d/index.html')
    """
    runs = load_runs(run_dirs, metric=metric)
    keys = resolve_series(series, runs)
    analysis = analyze(runs, baseline, select=select, tolerance=tolerance, targets=targets)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the report directory {out}: {error.strerror}") from None
    if not os.access(out, os.W_OK):
        raise ConfigError(f"cannot write to the report directory {out}")
    return _write(analysis, out, baseline, keys, list(notes))


def _write(analysis: Analysis, out: Path, baseline: str | None, series: Sequence[str], notes: list[str]) -> Path:
    figures = plots.draw_all(analysis, out, series)
    tables.write_csvs(analysis, out)
    (out / "report.md").write_text(markdown.render(analysis, figures, baseline, notes))
    index = out / "index.html"
    index.write_text(html_page.render(analysis, figures, baseline, notes))
    return index
