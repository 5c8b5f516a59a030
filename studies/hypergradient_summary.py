"""The numbers behind docs/results/hypergradients.md, from the `hypergradient` sweep's run directories.

    optimlab sweep hypergradient --root runs
    python studies/hypergradient_summary.py runs/hypergradient --figure docs/images/hypergradient_lr.png

Per task and base optimizer (SGD-momentum, Adam) it prints the six methods (MARTHE, RTHO, HD, and the step,
exponential and SGDR schedules) with final test accuracy and test loss (mean and 95 % t interval over seeds)
and the roughness of their learning-rate trajectory: the total variation of log(lr) over the logged steps
(sum of |log lr_{k+1} - log lr_k|; 0 for a constant lr, log 2 per halving, large for oscillating or
restarting schedules). Then the paper's claims as pairwise tests (Welch's t-test, Holm over all tests of the
page): on test accuracy, MARTHE against the best schedule (chosen on validation accuracy), MARTHE against
RTHO, RTHO against HD; on the log of the lr roughness (the difference shown as a ratio of geometric means),
MARTHE against RTHO and against HD.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from optimlab.report.load import Run
from optimlab.report.stats import holm, welch_p_value
from sweep_summary import compute_spent, interval, read_sweeps, value

SCHEDULES = ("step", "exponential", "sgdr")


def method_of(run: Run) -> tuple[str, str]:
    """(base optimizer, method) from the run's optimizer label: sgd+marthe -> (sgd, marthe), sgd_hd -> (sgd, hd)."""
    label = run.label
    if "+" in label:
        base, method = label.split("+")
        return base, method
    if "@" in label:
        base, schedule = label.split("@")
        return base, schedule
    if label.endswith("_hd"):
        return label[: -len("_hd")], "hd"
    return label, "constant"


def lr_roughness(run: Run) -> float:
    _, _, lrs = run.series("lr")
    lrs = [v for v in lrs if math.isfinite(v) and v > 0]
    if len(lrs) < 2:
        return math.nan
    logs = np.log(lrs)
    return float(np.abs(np.diff(logs)).sum())


def grouped(runs: list[Run]) -> dict[tuple[str, str], dict[str, list[Run]]]:
    out: dict = defaultdict(lambda: defaultdict(list))
    for run in runs:
        base, method = method_of(run)
        out[(run.task, base)][method].append(run)
    return out


def best_schedule(methods: dict[str, list[Run]]) -> str:
    def score(name: str) -> float:
        return float(np.nanmean([value(r, "val/accuracy") for r in methods[name]]))

    return max((m for m in SCHEDULES if m in methods), key=score)


def tables(data) -> tuple[list[str], list[str]]:
    methods_table = ["| task | optimizer | method | test accuracy | test loss | lr roughness (TV of log lr) | runs |",
                     "|---|---|---|---|---|---|---|"]
    comparisons, tests = [], []
    for (task, base), methods in sorted(data.items()):
        for name in ("marthe", "rtho", "hd", *SCHEDULES):
            runs = methods.get(name, [])
            if not runs:
                continue
            acc = [value(r, "test/accuracy") for r in runs]
            loss = [value(r, "test/loss") for r in runs]
            rough = [lr_roughness(r) for r in runs]
            diverged = sum(r.status == "diverged" for r in runs)
            methods_table.append(f"| {task} | {base} | {name} | {interval(acc)} | {interval(loss)} | "
                                 f"{interval(rough, 2)} | {len(runs)}{f' ({diverged} diverged)' if diverged else ''} |")
        if not all(m in methods for m in ("marthe", "rtho", "hd")) or not any(m in methods for m in SCHEDULES):
            continue
        best = best_schedule(methods)
        for a, b in (("marthe", best), ("marthe", "rtho"), ("rtho", "hd")):
            acc_a = [value(r, "test/accuracy") for r in methods[a]]
            acc_b = [value(r, "test/accuracy") for r in methods[b]]
            tests.append(welch_p_value(acc_a, acc_b))
            comparisons.append((task, base, a, b, float(np.nanmean(acc_a) - np.nanmean(acc_b))))
        for a, b in (("marthe", "rtho"), ("marthe", "hd")):  # smoothness: Welch on log roughness
            rough_a = [math.log(lr_roughness(r)) for r in methods[a]]
            rough_b = [math.log(lr_roughness(r)) for r in methods[b]]
            tests.append(welch_p_value(rough_a, rough_b))
            comparisons.append((task, base, a, b, float(np.exp(np.mean(rough_a) - np.mean(rough_b)))))
    corrected = holm(tests)
    order_table = ["| task | optimizer | comparison | difference | p (Welch) | p (Holm) | verdict |",
                   "|---|---|---|---|---|---|---|"]
    for i, ((task, base, a, b, diff), p) in enumerate(zip(comparisons, corrected)):
        if i % 5 < 3:
            what = f"test accuracy {diff:+.4f}"
            verdict = "no significant difference" if not p < 0.05 else (f"{a} better" if diff > 0 else f"{b} better")
        else:
            what = f"lr roughness x{diff:.2f}"
            verdict = "no significant difference" if not p < 0.05 else (f"{a} smoother" if diff < 1 else f"{b} smoother")
        order_table.append(f"| {task} | {base} | {a} vs {b} | {what} | {tests[i]:.3g} | {p:.3g} | {verdict} |")
    return methods_table, order_table


def figure(data, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(data)
    fig, axes = plt.subplots(2, len(keys), figsize=(3.4 * len(keys), 5.2), squeeze=False)
    colors = dict(zip(("marthe", "rtho", "hd", *SCHEDULES), ("tab:red", "tab:orange", "tab:purple", "tab:blue",
                                                              "tab:green", "tab:gray")))
    for j, key in enumerate(keys):
        for name, color in colors.items():
            runs = [r for r in data[key].get(name, []) if r.status == "completed"]
            if not runs:
                continue
            steps, _, lrs = runs[0].series("lr")  # seed 0's trajectory: the schedules are deterministic
            axes[0][j].plot(steps, lrs, color=color, label=name, lw=1)
            curves = [r.series("val/accuracy") for r in runs]
            length = min(len(c[2]) for c in curves)
            values = np.array([c[2][:length] for c in curves])
            axes[1][j].plot(curves[0][0][:length], values.mean(axis=0), color=color, label=name, lw=1)
        axes[0][j].set_title(f"{key[0]}, {key[1]}", fontsize=9)
        axes[0][j].set_yscale("log")
        axes[0][j].set_ylabel("lr (seed 0)")
        axes[1][j].set_ylabel("val accuracy (mean)")
        axes[1][j].set_xlabel("step")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    args, runs, with_result = read_sweeps(__doc__.splitlines()[0])
    data = grouped(with_result)
    methods_table, order_table = tables(data)
    print("## Compute\n\n" + compute_spent(runs) + "\n")
    print("## Methods (mean [95% CI] over seeds)\n\n" + "\n".join(methods_table) + "\n")
    print("## The paper's ordering, test by test\n\n" + "\n".join(order_table))
    if args.figure:
        figure(data, args.figure)


if __name__ == "__main__":
    main()
