"""The report as Markdown: the same tables as the HTML page, figures referenced as files beside it."""

from __future__ import annotations

from pathlib import Path

from optimlab.report import tables
from optimlab.report.analysis import Analysis


def render(analysis: Analysis, figures: dict[str, list[Path]], baseline: str | None) -> str:
    out = ["# optimlab report", ""]
    out += [_intro(analysis, baseline), ""]
    if tables.has_stopped(analysis.runs):  # a search stopped trials early: say what each optimizer was given
        out += [f"Tuning budget (runs and training steps, early-stopped runs included): "
                f"{tables.tuning_budget(analysis.runs)}.", ""]
    out += ["## Runs", "", *table(tables.overview(analysis)), ""]
    header, rows = tables.problem_runs(analysis)
    out += ["### Runs that did not complete", ""]
    out += [*table((header, rows)), ""] if rows else ["None: every run completed.", ""]
    for task in analysis.tasks:
        direction = "higher is better" if task.higher_is_better else "lower is better"
        out += [f"## Task `{task.task}`", ""]
        out += [
            f"Main metric `val/{task.main_metric}` ({direction}). Best configuration of each optimizer chosen on "
            f"validation, reported on test; baseline for Δ and p: `{task.baseline or 'none'}`.",
            "",
        ]
        if task.rows:
            out += [*table(tables.best(task, analysis.select)), ""]
        else:
            out += [NOTHING, ""]
        for path in figures.get(task.task, []):
            out += [f"![{path.stem}]({path.name})", ""]
        out += ["### All configurations", "", *table(tables.configurations(task)), ""]
    out += ["## Performance profiles", ""]
    out += [*table(tables.profile_table(analysis)), ""]
    for path in figures.get("profiles", []):
        out += [f"![{path.stem}]({path.name})", ""]
    out += ["## Rules", ""]
    out += [f"- {line}" for line in tables.methods(analysis)]
    out += ["", "Tables as CSV: `runs.csv`, `configs.csv`, `best.csv`, `profiles.csv`.", ""]
    return "\n".join(out)


NOTHING = "No completed or diverged run on this task: nothing to compare (see the runs that did not complete)."


def _intro(analysis: Analysis, baseline: str | None) -> str:
    ref = f"`{baseline}`" if baseline else "per task, the optimizer best on validation"
    return (
        f"{len(analysis.runs)} runs ({tables.run_count(analysis.runs)}) on {len(analysis.tasks)} task(s), "
        f"{len(analysis.labels)} optimizer(s). Baseline: {ref}."
    )


def table(data: tables.Table) -> list[str]:
    header, rows = data
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
