"""The numbers behind docs/results/amalgamation.md, from the study's run directories.

    python studies/amalgamation_summary.py /work/amal --figure docs/images/amalgamation_scores.png \
        --trajectories docs/images/amalgamation_conv_train.png

ROOT holds the meta-training runs `<config>_s<seed>/` (each with `summary.json` and, beside it,
`<config>_s<seed>.time`: user CPU s, system CPU s and wall s from GNU time), the choice teachers `choiceT_s<seed>/`,
and under `eval/<problem>/` one `optimlab evaluate` run_dir per configuration (`eval/<problem>/<config>/`, all
its replicates in `paths=[...]`; replicates evaluated later, with the same seeds, in `eval/<problem>/<config>_b/`,
are appended in that order) and one `optimlab baseline` run_dir per analytical optimizer
(`eval/<problem>/adam/`, `eval/<problem>/rmsprop/`), each beside its own `.time` file.

It prints, in Markdown:

- meta-training cost per configuration (iterations, inner steps, CPU and wall time);
- per problem, the metric log(best validation loss) per configuration: mean and 2 standard errors of the
  per-replicate means (a replicate's mean is over its evaluation seeds), the 95 % t interval, and the standard
  deviation of the per-replicate means (the spread across meta-training replicates). A baseline's
  "replicates" are its seeds at its best learning rate;
- the paper's claims as tests, with Holm's correction over every test printed: Welch's t-test on
  per-replicate means (each amalgamated optimizer against Adam, RMSProp and plain RNNProp) and the
  Brown-Forsythe test (Levene's test centred on the median) of min-max against min-max with the relative
  Gaussian perturbation for the spread.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from optimlab.report.stats import holm, summarize, welch_p_value

CONFIGS = {  # run-name prefix -> description (the study's five meta-training configurations)
    "plain": "RNNProp (no distillation)",
    "minmax": "min-max distillation (Adam, RMSProp)",
    "mean": "mean distillation (Adam, RMSProp)",
    "choice": "choice distillation (small-pool choice policy)",
    "rg": "min-max + relative Gaussian perturbation",
}
AMALGAMATED = ("minmax", "mean", "choice", "rg")
BASELINES = ("adam", "rmsprop")


def read_time(path: Path) -> tuple[float, float] | None:
    """(CPU s, wall s) from a GNU time `%U %S %e` file, or None when it is missing or empty."""
    if not path.is_file() or not path.read_text().split():
        return None
    user, system, wall = (float(x) for x in path.read_text().split()[-3:])
    return user + system, wall


def meta_cost(root: Path) -> list[dict]:
    rows = []
    for prefix in ("choiceT", *CONFIGS):
        runs = sorted(root.glob(f"{prefix}_s[0-9]*"), key=lambda p: p.name)
        runs = [p for p in runs if p.is_dir() and (p / "summary.json").is_file()]
        if not runs:
            continue
        summaries = [json.loads((p / "summary.json").read_text()) for p in runs]
        times = [read_time(root / f"{p.name}.time") for p in runs]
        times = [t for t in times if t]
        rows.append({
            "config": prefix, "replicates": len(runs),
            "completed": sum(s.get("status") == "completed" for s in summaries),
            "iterations": [s["iterations"] for s in summaries],
            "inner_steps": sum(s["inner_steps"] for s in summaries),
            "cpu": sum(t[0] for t in times), "wall": sum(t[1] for t in times),
        })  # fmt: skip
    return rows


def learned_scores(root: Path) -> dict[str, dict[str, list[list[float]]]]:
    """problem -> config -> [per replicate: [per seed scores]]."""
    out: dict[str, dict] = {}
    for config in CONFIGS:
        paths = sorted(root.glob(f"eval/*/{config}/evaluation.json")) + sorted(
            root.glob(f"eval/*/{config}_b/evaluation.json")
        )
        for path in paths:
            for task, res in json.loads(path.read_text())["results"].items():
                reps = res["learned"]["replicates"]
                out.setdefault(task, {}).setdefault(config, []).extend(reps[k] for k in sorted(reps, key=int))
    return out


def baseline_scores(root: Path) -> tuple[dict, dict]:
    """problem -> optimizer -> [[score] per seed] at its best lr; and problem -> optimizer -> {lr: mean}."""
    best, grid = {}, {}
    for optim in BASELINES:
        for path in sorted(root.glob(f"eval/*/{optim}/evaluation.json")):
            for task, res in json.loads(path.read_text())["results"].items():
                label = res["best"]
                best.setdefault(task, {})[optim] = [[s] for s in res[label]["replicates"]["0"]]
                grid.setdefault(task, {})[optim] = {
                    k.split("-lr")[1]: v["mean"] for k, v in res.items() if k != "best"
                } | {"best": label.split("-lr")[1]}
    return best, grid


def replicate_means(per_replicate: list[list[float]]) -> list[float]:
    """Each replicate's mean score over its seeds; a replicate with a non-finite seed score counts as nan."""
    return [float(np.mean(s)) if all(math.isfinite(v) for v in s) else math.nan for s in per_replicate]


def brown_forsythe(a: list[float], b: list[float]) -> float:
    x, y = [v for v in a if math.isfinite(v)], [v for v in b if math.isfinite(v)]
    if len(x) < 2 or len(y) < 2:
        return math.nan
    return float(stats.levene(x, y, center="median").pvalue)


def fmt(x: float, digits: int = 3) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--figure", type=Path, default=None, help="dot plot of the per-replicate means")
    parser.add_argument("--trajectories", type=Path, default=None, help="conv_train validation loss vs step")
    args = parser.parse_args(argv)
    root = args.root

    print("## Meta-training cost\n")
    print(
        "| configuration | replicates (completed) | meta-iterations per replicate | inner steps (all) | CPU s | wall s |"
    )
    print("|---|---|---|---|---|---|")
    total_cpu = total_wall = 0.0
    for row in meta_cost(root):
        name = CONFIGS.get(row["config"], "choice policy (teacher), small pool")
        print(
            f"| {row['config']}: {name} | {row['replicates']} ({row['completed']}) | "
            f"{', '.join(map(str, row['iterations']))} | {row['inner_steps']:,} | {row['cpu']:.0f} | {row['wall']:.0f} |"
        )
        total_cpu, total_wall = total_cpu + row["cpu"], total_wall + row["wall"]
    print(f"\nMeta-training in all: {total_cpu:.0f} CPU s, {total_wall:.0f} process-wall s.")
    eval_times = [read_time(p) for p in sorted(root.glob("eval/*/*.time"))]
    eval_times = [t for t in eval_times if t]
    print(
        f"Evaluation in all: {sum(t[0] for t in eval_times):.0f} CPU s, "
        f"{sum(t[1] for t in eval_times):.0f} process-wall s.\n"
    )

    learned = learned_scores(root)
    base, grid = baseline_scores(root)
    problems = [p for p in learned if p in base] + [p for p in learned if p not in base]
    tests: list[tuple[str, str, float, float]] = []  # (problem, comparison, effect, p)
    means_by_problem: dict[str, dict[str, list[float]]] = {}
    for problem in problems:
        print(f"## {problem}\n")
        if problem in grid:
            for optim, g in grid[problem].items():
                cells = ", ".join(f"{lr}: {fmt(m)}" for lr, m in g.items() if lr != "best")
                print(f"- {optim} lr grid (mean score): {cells}; best {g['best']}")
            print()
        print("| optimizer | n | mean | ± 2 SE | 95 % CI | std of replicate means | per-replicate means |")
        print("|---|---|---|---|---|---|---|")
        groups = {c: replicate_means(v) for c, v in learned[problem].items()}
        groups |= {o: [s[0] for s in v] for o, v in base.get(problem, {}).items()}
        means_by_problem[problem] = groups
        for name, values in groups.items():
            s = summarize(values)
            two_se = 2 * s.std / math.sqrt(s.n) if s.n > 1 else math.nan
            label = CONFIGS.get(name, f"{name} (best lr; per seed)")
            print(
                f"| {label} | {s.n} | {fmt(s.mean)} | {fmt(two_se)} | [{fmt(s.ci_low)}, {fmt(s.ci_high)}] | "
                f"{fmt(s.std)} | {', '.join(fmt(v) for v in values)} |"
            )
        print()
        for config in AMALGAMATED:
            if config not in groups:
                continue
            for other in (*BASELINES, "plain"):
                if other in groups:
                    effect = float(np.nanmean(groups[config]) - np.nanmean(groups[other]))
                    tests.append(
                        (problem, f"{config} vs {other}", effect, welch_p_value(groups[config], groups[other]))
                    )
        if "minmax" in groups and "rg" in groups:
            ratio = float(np.nanstd(groups["rg"], ddof=1) / np.nanstd(groups["minmax"], ddof=1))
            tests.append(
                (problem, "spread: rg vs minmax (std ratio)", ratio, brown_forsythe(groups["rg"], groups["minmax"]))
            )
    adjusted = holm([t[3] for t in tests])
    print("## Tests (Welch on per-replicate means; Brown-Forsythe for the spread; Holm over all rows)\n")
    print("| problem | comparison | difference of means (spread: std ratio) | p | Holm p |")
    print("|---|---|---|---|---|")
    for (problem, name, effect, p), q in zip(tests, adjusted):
        shown = f"x{effect:.3f}" if name.startswith("spread") else f"{effect:+.3f}"
        print(f"| {problem} | {name} | {shown} | {fmt(p, 4)} | {fmt(q, 4)} |")
    if args.figure and means_by_problem:
        plot(means_by_problem, args.figure)
    if args.trajectories:
        plot_trajectories(root, "conv_train", args.trajectories)


def plot_trajectories(root: Path, problem: str, path: Path) -> None:
    """Validation loss against step on one problem: per optimizer the mean over all its runs (every replicate
    and seed; a baseline at its best lr) and a band from the minimum to the maximum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from optimlab.report.load import read_run
    from optimlab.report.plots import band

    folders: dict[str, list[Path]] = {}
    for config in CONFIGS:
        for name in (config, f"{config}_b"):
            folders.setdefault(config, []).append(root / "eval" / problem / name / "runs" / problem / "learned")
    for optim in BASELINES:
        report = root / "eval" / problem / optim / "evaluation.json"
        if report.is_file():
            best = json.loads(report.read_text())["results"][problem]["best"]
            folders[f"{optim} ({best.split('-lr')[1]})"] = [report.parent / "runs" / problem / best]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (label, dirs) in enumerate(folders.items()):
        runs = [read_run(p.parent) for d in dirs if d.is_dir() for p in sorted(d.rglob("summary.json"))]
        if not runs:
            continue
        steps, mean, low, high = band([r.series("val/loss") for r in runs])
        ax.plot(steps, mean, color=f"C{i}", label=f"{label} ({len(runs)} runs)")
        ax.fill_between(steps, low, high, color=f"C{i}", alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.set_title(f"{problem}: mean and min-max band over all runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def plot(groups: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False)
    for ax, (problem, by_name) in zip(axes[0], groups.items()):
        names = list(by_name)
        for i, name in enumerate(names):
            values = np.asarray(by_name[name], dtype=float)
            values = values[np.isfinite(values)]
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(len(values))
            ax.plot(i + jitter, values, "o", alpha=0.6, color="C0" if name in CONFIGS else "C1")
            if len(values) > 1:
                mean, two_se = values.mean(), 2 * values.std(ddof=1) / math.sqrt(len(values))
                ax.errorbar(i + 0.3, mean, yerr=two_se, fmt="s", color="k", capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_title(problem)
        ax.set_ylabel("log(best validation loss)")
        ax.grid(alpha=0.3)
    fig.suptitle("dots: per-replicate means (learned) / per-seed scores (baselines); black: mean ± 2 SE", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
