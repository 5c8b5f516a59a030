"""The report as one self-contained HTML file: inline CSS, PNG figures as base64 data URIs, no scripts,
no links to anything outside the file."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path

from optimlab import rundir
from optimlab.report import markdown, tables
from optimlab.report.analysis import Analysis

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d232b;
       max-width: 1320px; margin: 24px auto; padding: 0 20px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 6px; }
h2 { font-size: 20px; margin: 34px 0 8px; padding-top: 10px; border-top: 2px solid #e3e7ec; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p.lead { color: #4a5563; margin-top: 0; }
code { background: #f2f4f7; padding: 1px 4px; border-radius: 3px; font-size: 13px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 12px; }
th, td { border: 1px solid #d8dde3; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #f2f4f7; font-weight: 600; white-space: normal; vertical-align: bottom; }
td.text, th.text { text-align: left; white-space: normal; max-width: 360px; }
tr:nth-child(even) td { background: #fafbfc; }
td.better { background: #dff3e4 !important; color: #14532d; font-weight: 600; }
td.worse { background: #fbe3e3 !important; color: #7f1d1d; font-weight: 600; }
td.baseline { color: #4a5563; font-style: italic; }
td.bad { color: #9a3412; font-weight: 600; }
img { max-width: 100%; border: 1px solid #e3e7ec; margin: 6px 0; display: block; }
.figs { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
.figs img.half { max-width: calc(50% - 6px); }
details { margin: 6px 0 12px; }
summary { cursor: pointer; color: #2b4c7e; }
ul.rules li { margin-bottom: 4px; }
ul.verdicts { padding-left: 18px; }
ul.verdicts li { margin-bottom: 3px; }
ul.verdicts li.better { color: #14532d; font-weight: 600; }
ul.verdicts li.worse { color: #7f1d1d; font-weight: 600; }
ul.warnings li { color: #9a3412; }
"""

_VERDICTS = {"better", "worse", "baseline"}
_VERDICT_CLASS = {"better": "better", "worse": "worse", "n.s.": "ns", "n/a": "na"}


def render(analysis: Analysis, figures: dict[str, list[Path]], baseline: str | None, notes: Sequence[str] = ()) -> str:
    ref = f"<code>{escape(baseline)}</code>" if baseline else "per task, the optimizer best on validation"
    body = [
        "<h1>optimlab report</h1>",
        f'<p class="lead">{len(analysis.runs)} runs ({escape(tables.run_count(analysis.runs))}) on '
        f"{len(analysis.tasks)} task(s), {len(analysis.labels)} optimizer(s). Baseline: {ref}.</p>",
        "<h2>Verdicts</h2>",
    ]
    lines = tables.verdict_lines(analysis)
    if lines:
        body.append('<ul class="verdicts">' + "".join(f'<li class="{_VERDICT_CLASS[v]}">{escape(t)}</li>'
                                                      for v, t in lines) + "</ul>")
    else:
        body.append(f"<p>{escape(markdown.NO_VERDICTS)}</p>")
    warnings = tables.warnings(analysis, list(notes))
    if warnings:
        body.append('<ul class="warnings">' + "".join(f"<li>{escape(line)}</li>" for line in warnings) + "</ul>")
    scores = tables.headline_scores(analysis)
    if scores:
        body.append("<ul>" + "".join(f"<li>{escape(line)}</li>" for line in scores) + "</ul>")
    if tables.has_stopped(analysis.runs):  # a search stopped trials early: say what each optimizer was given
        body.append(f"<p>Tuning budget (runs and training steps, early-stopped runs included): "
                    f"{escape(tables.tuning_budget(analysis.runs))}.</p>")
    body += ["<h2>Runs</h2>", table(tables.overview(analysis), text_columns=2)]
    header, rows = tables.problem_runs(analysis)
    body.append("<h3>Runs that did not complete</h3>")
    body.append(table((header, rows), text_columns=7, bad_column=4) if rows else "<p>None: every run completed.</p>")
    for task in analysis.tasks:
        direction = "higher is better" if task.higher_is_better else "lower is better"
        base = f"<code>{escape(task.baseline)}</code>" if task.baseline else "none"
        body += [
            f"<h2>Task <code>{escape(task.task)}</code></h2>",
            f"<p>Main metric <code>val/{escape(task.main_metric)}</code> ({direction}). Best configuration of each "
            f"optimizer chosen on validation, reported on test; baseline for Δ and p: {base}.</p>",
            table(tables.best(task, analysis.select), text_columns=2, verdict_column=True)
            if task.rows
            else f"<p>{escape(markdown.NOTHING)}</p>",
            _times(task) if task.rows else "",
            _figures(figures.get(task.task, [])),
            "<details><summary>All configurations</summary>",
            table(tables.configurations(task), text_columns=2),
            "</details>",
        ]
    body.append("<h2>Performance profiles</h2>")
    if analysis.has_profiles:
        body += [table(tables.profile_table(analysis), text_columns=2), f"<p>{escape(markdown.SECONDS_CAVEAT)}</p>",
                 _figures(figures.get("profiles", []))]
    else:
        body.append(f"<p>{escape(tables.no_profiles_reason(analysis))}</p>")
    body += [
        "<h2>Rules</h2>",
        '<ul class="rules">' + "".join(f"<li>{escape(line)}</li>" for line in tables.methods(analysis)) + "</ul>",
        "<p>The same tables as CSV beside this file: "
        + ", ".join(f"<code>{name}</code>" for name in tables.csv_names(analysis)) + ".</p>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>optimlab report</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def table(data: tables.Table, text_columns: int = 1, verdict_column: bool = False, bad_column: int = -1) -> str:
    """An HTML table; the first `text_columns` columns are left-aligned text."""
    header, rows = data
    verdict_at = next((i for i, h in enumerate(header) if h.startswith("at ")), -1) if verdict_column else -1
    out = ["<table>", "<tr>" + "".join(_th(h, i < text_columns) for i, h in enumerate(header)) + "</tr>"]
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            classes = []
            if i < text_columns:
                classes.append("text")
            if i == verdict_at and cell in _VERDICTS:
                classes.append(cell)
            if i == bad_column and cell != rundir.COMPLETED:
                classes.append("bad")
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{escape(str(cell))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _times(task) -> str:
    sign = "≥" if task.higher_is_better else "≤"
    return (f"<h3>Time to target (<code>val/{escape(task.main_metric)}</code> {sign} {escape(tables.fmt(task.target))})"
            f"</h3>\n{table(tables.times(task))}\n<p>{escape(tables.seconds_caveat(task))}</p>")


def _th(text: str, is_text: bool) -> str:
    return f'<th class="text">{escape(text)}</th>' if is_text else f"<th>{escape(text)}</th>"


def _figures(paths: list[Path]) -> str:
    if not paths:
        return ""
    images = []
    for path in paths:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        half = ' class="half"' if not path.stem.endswith(("curves", "profiles")) else ""
        images.append(f'<img{half} alt="{escape(path.stem)}" src="data:image/png;base64,{data}">')
    return '<div class="figs">' + "".join(images) + "</div>"
