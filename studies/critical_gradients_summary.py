"""The numbers behind docs/results/critical_gradients.md, from the `critical_gradients` sweep's run directories.

    optimlab sweep critical_gradients --root runs
    python studies/critical_gradients_summary.py runs/critical_gradients --figure docs/images/critical_gradients.png

For every task and pair (base optimizer, its "_C" version) it prints three markdown tables:

1. **Tuned against tuned.** Each method's configuration is chosen on validation (mean final validation
   accuracy over seeds; the base optimizer has 2 configurations, the "_C" version 18); the chosen
   configurations are compared on test accuracy and on convergence speed. Convergence speed is the mean of
   the logged training losses over the run (the area under the training curve divided by its length: lower
   is faster). Welch's t-test; the p-values are Holm-corrected over the table's comparisons.
2. **Configuration by configuration.** Every "_C" configuration against the base optimizer at the same
   learning rate, paired by seed (same initial weights, same batches): how many are significantly better or
   worse in final validation accuracy (paired t-test, Holm within each task and "_C" optimizer).
3. **Grid edges.** Each method's chosen learning rate, flagged when it is the smallest or largest tried.

Also the compute spent (sum of the runs' wall times) and, with --figure, the training curves of the chosen
configurations (mean over seeds).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from optimlab.report.load import Run
from optimlab.report.stats import holm, welch_p_value
from sweep_summary import compute_spent, interval, read_sweeps, value

PAIRS = (("sgd", "sgd_c"), ("adam", "adam_c"), ("rmsprop", "rmsprop_c"))
MEMORY_KEYS = ("decay", "topC")


def config_of(run: Run) -> tuple:
    optim = run.config["optim"]
    return (float(optim["lr"]),) + tuple(optim.get(key) for key in MEMORY_KEYS if run.label.endswith("_c"))


def mean_train_loss(run: Run) -> float:
    _, _, values = run.series("train/loss")
    return float(np.mean(values)) if values and all(math.isfinite(v) for v in values) else math.nan


def grouped(runs: list[Run]) -> dict[str, dict[str, dict[tuple, list[Run]]]]:
    """{task: {optimizer: {configuration: [runs over seeds]}}}"""
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for run in runs:
        out[run.task][run.label][config_of(run)].append(run)
    return out


def chosen(configs: dict[tuple, list[Run]]) -> tuple[tuple, list[Run]]:
    """The configuration with the best mean final validation accuracy (diverged seeds count as 0)."""
    def score(item):
        values = [value(r, "val/accuracy") for r in item[1]]
        return float(np.mean([v if math.isfinite(v) else 0.0 for v in values]))

    return max(configs.items(), key=score)


def tuned_table(data) -> list[str]:
    rows, tests = [], []
    for task in sorted(data):
        for base, crit in PAIRS:
            if base not in data[task] or crit not in data[task]:
                continue
            (bc, bruns), (cc, cruns) = chosen(data[task][base]), chosen(data[task][crit])
            b_acc, c_acc = [value(r, "test/accuracy") for r in bruns], [value(r, "test/accuracy") for r in cruns]
            b_auc, c_auc = [mean_train_loss(r) for r in bruns], [mean_train_loss(r) for r in cruns]
            tests += [welch_p_value(c_acc, b_acc), welch_p_value(c_auc, b_auc)]
            rows.append([task, base, crit, bc, cc, b_acc, c_acc, b_auc, c_auc])
    corrected = holm(tests)
    lines = ["| task | base | \"_C\" | base config (lr) | \"_C\" config (lr, decay, topC) | test acc. base | test acc. \"_C\" "
             "| p (Holm) | mean train loss base | mean train loss \"_C\" | p (Holm) | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, (task, base, crit, bc, cc, b_acc, c_acc, b_auc, c_auc) in enumerate(rows):
        p_acc, p_auc = corrected[2 * i], corrected[2 * i + 1]
        verdict = []
        d_acc = np.nanmean(c_acc) - np.nanmean(b_acc)
        d_auc = np.nanmean(c_auc) - np.nanmean(b_auc)
        verdict.append(("ends better" if d_acc > 0 else "ends worse") if p_acc < 0.05 else "same end")
        verdict.append(("faster" if d_auc < 0 else "slower") if p_auc < 0.05 else "same speed")
        lines.append(f"| {task} | {base} | {crit} | {bc[0]:g} | {', '.join(f'{v:g}' for v in cc)} "
                     f"| {interval(b_acc)} | {interval(c_acc)} | {p_acc:.3g} | {interval(b_auc)} | {interval(c_auc)} "
                     f"| {p_auc:.3g} | {', '.join(verdict)} |")
    return lines


def paired_table(data) -> list[str]:
    """Every "_C" configuration against its base at the same lr, paired by seed."""
    entries, tests = [], []
    for task in sorted(data):
        for base, crit in PAIRS:
            base_by_lr = {c[0]: {r.seed: r for r in runs} for c, runs in data[task].get(base, {}).items()}
            for config, runs in data[task].get(crit, {}).items():
                reference = base_by_lr.get(config[0], {})
                pairs = [(value(r, "val/accuracy"), value(reference[r.seed], "val/accuracy"))
                         for r in runs if r.seed in reference]
                pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
                diffs = [a - b for a, b in pairs]
                if len(diffs) < 2:
                    p = math.nan
                elif np.std(diffs) == 0:  # every seed moved by the same amount: no variance to test against
                    p = 1.0 if diffs[0] == 0 else 0.0
                else:
                    p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
                tests.append(p)
                entries.append((task, base, crit, statistics.mean(diffs) if diffs else math.nan))
    # Holm within each (task, "_C" optimizer) family of configurations (18 to 20 tests each): over all 240 at
    # once, clear effects measured on 5 seeds (paired p-values around 1e-3) would not pass.
    families: dict = defaultdict(list)
    for index, (task, _base, crit, _diff) in enumerate(entries):
        families[(task, crit)].append(index)
    corrected = [math.nan] * len(tests)
    for indices in families.values():
        for index, q in zip(indices, holm([tests[i] for i in indices])):
            corrected[index] = q
    counts: dict = defaultdict(lambda: [0, 0, 0, 0])
    for (task, _base, crit, diff), p in zip(entries, corrected):
        c = counts[(task, crit)]
        c[3] += 1
        if math.isnan(p):
            continue
        if p < 0.05:
            c[0 if diff > 0 else 1] += 1
        else:
            c[2] += 1
    lines = ["| task | \"_C\" | better | worse | no significant difference | configurations |", "|---|---|---|---|---|---|"]
    for (task, crit), (better, worse, same, total) in sorted(counts.items()):
        lines.append(f"| {task} | {crit} | {better} | {worse} | {same} | {total} |")
    total = np.sum([c for c in counts.values()], axis=0)
    lines.append(f"| all | all | {total[0]} | {total[1]} | {total[2]} | {total[3]} |")
    return lines


def edge_table(data) -> list[str]:
    lines = ["| task | optimizer | lrs tried | chosen lr | on the edge |", "|---|---|---|---|---|"]
    for task in sorted(data):
        for label in sorted(data[task]):
            lrs = sorted({c[0] for c in data[task][label]})
            best = chosen(data[task][label])[0][0]
            edge = "yes" if len(lrs) > 1 and best in (lrs[0], lrs[-1]) else "no"
            lines.append(f"| {task} | {label} | {', '.join(f'{v:g}' for v in lrs)} | {best:g} | {edge} |")
    return lines


def figure(data, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(data)
    fig, axes = plt.subplots(len(PAIRS), len(tasks), figsize=(3.2 * len(tasks), 2.6 * len(PAIRS)), squeeze=False)
    for j, task in enumerate(tasks):
        for i, pair in enumerate(PAIRS):
            ax = axes[i][j]
            for label, color in zip(pair, ("tab:blue", "tab:red")):
                if label not in data[task]:
                    continue
                config, runs = chosen(data[task][label])
                curves = [r.series("train/loss") for r in runs if r.status == "completed"]
                if not curves:
                    continue
                steps = curves[0][0]
                values = np.array([c[2] for c in curves if len(c[2]) == len(steps)])
                mean = values.mean(axis=0)
                ax.plot(steps, mean, color=color, label=f"{label} {', '.join(f'{v:g}' for v in config)}")
                ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=color, alpha=0.2)
            ax.set_title(task, fontsize=9)
            ax.set_yscale("log")
            ax.legend(fontsize=6)
            if j == 0:
                ax.set_ylabel("train loss")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    args, runs, with_result = read_sweeps(__doc__.splitlines()[0])
    data = grouped(with_result)
    print("## Compute\n\n" + compute_spent(runs) + "\n")
    print("## Tuned against tuned (test accuracy, mean [95% CI] over seeds)\n\n" + "\n".join(tuned_table(data)) + "\n")
    print("## Every \"_C\" configuration against its base at the same lr (paired by seed, Holm per task and optimizer)\n\n"
          + "\n".join(paired_table(data)) + "\n")
    print("## Learning-rate grid edges\n\n" + "\n".join(edge_table(data)))
    if args.figure:
        figure(data, args.figure)


if __name__ == "__main__":
    main()
