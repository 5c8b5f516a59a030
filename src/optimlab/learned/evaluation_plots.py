"""Figures of `optimlab evaluate` / `optimlab baseline`: per task, training and validation loss against step
for each optimizer, the mean over its seeds (and replicates) with a band from the minimum to the maximum, as
Optimizer Amalgamation's plots draw them. The curves and bands are `optimlab.report.plots`' own."""

from __future__ import annotations

import json
from pathlib import Path

from optimlab.report.load import read_run
from optimlab.report.plots import _all_positive, _figure, _save, band, colors, slug


def plot_tasks(root: Path, shown: dict[str, list[str]], overlays: list[str] = ()) -> list[Path]:
    """`<root>/plots/<task>.png` for each task, with the optimizers (labels under `<root>/runs/<task>/`)
    in `shown`, and those of the other evaluation directories in `overlays` on the same task (a baseline's
    best learning rate); returns the paths written."""
    others = [(Path(d), json.loads((Path(d) / "evaluation.json").read_text())["results"]) for d in overlays]
    paths = []
    for task, labels in shown.items():
        curves = [(root / "runs" / task / label, label) for label in labels]
        for other, results in others:
            res = results.get(task, {})
            extra = [res["best"]] if res.get("best") else [k for k in res if k != "best"]
            curves += [(other / "runs" / task / label, label) for label in extra if label not in labels]
        path = plot_task(curves, root / "plots" / f"{slug(task)}.png", task)
        if path is not None:
            paths.append(path)
    return paths


def plot_task(curves: list[tuple[Path, str]], path: Path, title: str) -> Path | None:
    """One figure: each (directory of an optimizer's seed runs, label) as a mean line and min-max band."""
    palette = colors([label for _, label in curves])
    fig, axes = _figure(1, 2, (11, 3.8))
    drawn = False
    for folder, label in curves:
        runs = [read_run(p.parent) for p in sorted(folder.rglob("summary.json"))]
        for ax, key in zip(axes, ("train/loss", "val/loss")):
            steps, mean, low, high = band([r.series(key) for r in runs])
            if not len(steps):
                continue
            drawn = True
            ax.plot(steps, mean, color=palette[label], lw=1.6, label=f"{label} (n={len(runs)})")
            ax.fill_between(steps, low, high, color=palette[label], alpha=0.2, lw=0)
    if not drawn:
        return None
    for ax, key in zip(axes, ("train/loss", "val/loss")):
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        if _all_positive(ax):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.set_title(f"{key} (mean, min-max over seeds)", fontsize=10)
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)
