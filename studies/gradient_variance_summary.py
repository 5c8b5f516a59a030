"""Summaries and a figure from studies/gradient_variance.py's JSON lines: the numbers behind each claim.

    python studies/gradient_variance_summary.py runs/*.jsonl --figure docs/images/gradient_variance.png

Prints, per claim of the study, the measured ratios (medians over runs, with their range):

1. variance rises during training: SG-B var at the last measured step / at the first;
2. smaller learning rates coincide with higher variance: SG-B var at lr_small / at lr_large, same step;
3. normalized variance tracks convergence better than variance: Spearman correlations, over runs, of the
   final training loss with the time-averaged nvar and with the time-averaged var;
4. GC below SG-2B with duplicated data: GC var / SG-2B var after the first clustering, with and without;
5. SVRG on deep models: SVRG var / SG-B var at the measured steps at least 30 steps after step 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def load(paths: list[str]) -> list[dict]:
    return [json.loads(line) for path in paths for line in Path(path).read_text().splitlines() if line.strip()]


def runs(records: list[dict]) -> dict[tuple, dict[int, dict[str, dict]]]:
    """{(task, duplicates, lr, seed): {step: {estimator: record}}}"""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in records:
        out[(r["task"], r["duplicates"], r["lr"], r["seed"])][r["step"]][r["estimator"]] = r
    return out


def spread(values: list[float]) -> str:
    if not values:
        return "no data"
    return f"median {statistics.median(values):.3g} (range {min(values):.3g} to {max(values):.3g}, n={len(values)})"


def spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def summarise(by_run: dict) -> dict[str, str]:
    out = {}
    rises = [steps[max(steps)]["sg_b"]["var"] / steps[min(steps)]["sg_b"]["var"] for steps in by_run.values()]
    out["1 variance rises (last / first SG-B var)"] = spread(rises)
    lrs = sorted({key[2] for key in by_run})
    ratios = []
    if len(lrs) >= 2:
        for (task, dup, lr, seed), steps in by_run.items():
            other = by_run.get((task, dup, lrs[-1], seed))
            if lr == lrs[0] and other:
                common = sorted(set(steps) & set(other) - {0})
                ratios += [steps[s]["sg_b"]["var"] / other[s]["sg_b"]["var"] for s in common[-2:]]
    out[f"2 smaller lr, higher variance (SG-B var at lr={lrs[0]} / at lr={lrs[-1]}, last 2 points)"] = spread(ratios)
    final_loss, mean_nvar, mean_var = [], [], []
    for steps in by_run.values():
        final_loss.append(steps[max(steps)]["sg_b"]["train_loss"])
        mean_nvar.append(statistics.mean(s["sg_b"]["nvar"] for s in steps.values()))
        mean_var.append(statistics.mean(s["sg_b"]["var"] for s in steps.values()))
    if len(final_loss) >= 3:
        out["3 Spearman(loss at the last measured step, mean nvar) vs (same, mean var)"] = (
            f"{spearman(final_loss, mean_nvar):.2f} vs {spearman(final_loss, mean_var):.2f} over {len(final_loss)} runs"
        )
    for dup in sorted({key[1] for key in by_run}):
        gc = [s["gc"]["var"] / s["sg_2b"]["var"] for key, steps in by_run.items() if key[1] == dup
              for step, s in steps.items() if step > 0]  # fmt: skip
        out[f"4 GC var / SG-2B var, duplicates={dup}"] = spread(gc)
        gc_sgb = [s["gc"]["var"] / s["sg_b"]["var"] for key, steps in by_run.items() if key[1] == dup
                  for step, s in steps.items() if step > 0]  # fmt: skip
        out[f"4 GC var / SG-B var, duplicates={dup}"] = spread(gc_sgb)
    for task in sorted({key[0] for key in by_run}):
        svrg = [s["svrg"]["var"] / s["sg_b"]["var"] for key, steps in by_run.items() if key[0] == task
                for step, s in steps.items() if step >= 30]  # fmt: skip
        out[f"5 SVRG var / SG-B var, {task}, steps >= 30"] = spread(svrg)
    return out


def figure(by_run: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({key[0] for key in by_run})
    columns = sorted({(key[1], key[2]) for key in by_run})
    fig, grid = plt.subplots(len(tasks), len(columns), figsize=(3.0 * len(columns), 2.6 * len(tasks)), squeeze=False)
    axes = [[ax for row in grid for ax in row]]
    panels = [(task, dup, lr) for task in tasks for dup, lr in columns]
    for ax, (task, dup, lr) in zip(axes[0], panels):
        if not any(key[:3] == (task, dup, lr) for key in by_run):
            ax.set_visible(False)
            continue
        seed = min(key[3] for key in by_run if key[:3] == (task, dup, lr))
        steps = by_run[(task, dup, lr, seed)]
        xs = sorted(steps)
        for name in ("sg_b", "sg_2b", "svrg", "kfac", "gc"):
            ys = [steps[x][name]["var"] for x in xs]
            ax.plot([x + 1 for x in xs], ys, marker="o", markersize=3, label=name)
        floor = min(steps[x]["sg_b"]["var"] for x in xs) / 1e3  # SVRG's exact zero at a snapshot is off-scale
        ax.set_ylim(bottom=floor)
        ax.set(xscale="log", yscale="log", title=f"{task} lr={lr}" + (f" dup={dup}" if dup else ""), xlabel="step + 1")
        ax.title.set_fontsize(8)
    for row in grid:
        row[0].set_ylabel("var")
    grid[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--figure")
    args = parser.parse_args()
    by_run = runs(load(args.files))
    for claim, value in summarise(by_run).items():
        print(f"{claim}: {value}")
    if args.figure:
        figure(by_run, args.figure)


if __name__ == "__main__":
    main()
