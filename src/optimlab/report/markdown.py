"""The report as Markdown: the same tables as the HTML page, figures referenced as files beside it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from optimlab.report import tables
from optimlab.report.analysis import Analysis


def render(analysis: Analysis, figures: dict[str, list[Path]], baseline: str | None, notes: Sequence[str] = ()) -> str:
    out = ["# optimlab report", ""]
    out += [_intro(analysis, baseline), ""]
    out += ["## Verdicts", ""]
    lines = tables.verdict_lines(analysis)
    out += [f"- {_bold(verdict, text)}" for verdict, text in lines] if lines else [NO_VERDICTS]
    out += [""]
    extra = [*tables.warnings(analysis, list(notes)), *tables.headline_scores(analysis)]
    if extra:
        out += [*(f"- {line}" for line in extra), ""]
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
            out += [f"### Time to target (val/{task.main_metric} {'≥' if task.higher_is_better else '≤'} "
                    f"{tables.fmt(task.target)})", ""]
            out += [*table(tables.times(task)), "", tables.seconds_caveat(task), ""]
        else:
            out += [NOTHING, ""]
        for path in figures.get(task.task, []):
            out += [f"![{path.stem}]({path.name})", ""]
        out += ["### All configurations", "", *table(tables.configurations(task)), ""]
    out += ["## Performance profiles", ""]
    if analysis.has_profiles:
        out += [*table(tables.profile_table(analysis)), "", SECONDS_CAVEAT, ""]
        for path in figures.get("profiles", []):
            out += [f"![{path.stem}]({path.name})", ""]
    else:
        out += [tables.no_profiles_reason(analysis), ""]
    out += ["## Rules", ""]
    out += [f"- {line}" for line in tables.methods(analysis)]
    out += ["", "Tables as CSV: " + ", ".join(f"`{name}`" for name in tables.csv_names(analysis)) + ".", ""]
    return "\n".join(out)


NOTHING = "No completed or diverged run on this task: nothing to compare (see the runs that did not complete)."
NO_VERDICTS = "No comparison: no task has a baseline and another optimizer with results."
SECONDS_CAVEAT = ("Scores in wall seconds depend on the machine's load while the runs trained: identical runs "
                  "can score anywhere from 0 to 1 when optimizers are close in cost. Read them with the spread "
                  "of each task's seconds to target (its time-to-target table); steps are exact.")


def _bold(verdict: str, text: str) -> str:
    """The verdict's words in bold: 'task: X **is better than** Y: ...'."""
    from optimlab.report.verdicts import WORDS

    words = WORDS[verdict]
    return text.replace(f" {words} ", f" **{words}** ", 1)


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
