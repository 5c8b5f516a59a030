"""The numbers behind docs/results/amalgamation.md, from the study's run directories.

    python studies/amalgamation_summary.py /work/amal --page docs/results/amalgamation.md \
        --figure docs/images/amalgamation_scores.png --trajectories docs/images/amalgamation_trajectories.png \
        --csv docs/results/data/amalgamation_scores.csv

ROOT holds the meta-training runs `<config>_s<seed>/` (each with `summary.json` and, beside it,
`<config>_s<seed>.time`: user CPU s, system CPU s and wall s from GNU time), the choice teachers `choiceT_s<seed>/`,
and under `eval/<problem>/` one `optimlab evaluate` run_dir per configuration (`eval/<problem>/<config>/`; replicates
evaluated later in `eval/<problem>/<config>_b/`) and one `optimlab baseline` run_dir per analytical optimizer
(`eval/<problem>/adam/`, `eval/<problem>/rmsprop/`). Every command's GNU time file lies beside its run_dir
(`eval/<problem>/*.time`, a later top-up of the same run_dir in `<name>_top.time`); `cost/*.time` are the
single runs that costed the queue. A replicate is identified by the meta-training seed in its `optim.path`.

It writes, in Markdown (to stdout, or with `--page FILE` between the lines `<!-- summary:begin -->` and
`<!-- summary:end -->` of FILE):

- the compute: meta-training per configuration, evaluation per problem;
- per problem, the metric log(best validation loss) per configuration: mean and 2 standard errors of the
  per-replicate means (a replicate's mean is over its evaluation seeds), the 95 % t interval, and the standard
  deviation of the per-replicate means (the spread across meta-training replicates). A baseline's
  "replicates" are its seeds at its best learning rate;
- the paper's claims as tests, with Holm's correction over every test in the table: Welch's t-test of each
  amalgamated optimizer against Adam and RMSProp (no pairing: different units); the paired t-test against
  plain RNNProp over the meta-training seeds (replicate s of every configuration starts from the same policy
  weights and meta-training trajectories), with Welch's p beside it; the Brown-Forsythe test (Levene's test
  centred on the median) of min-max against min-max with the relative Gaussian perturbation for the spread.
  The rows "all problems" use each replicate's mean score over the problems every configuration was
  evaluated on;
- per claim, the count of comparisons each way and a verdict by a fixed rule (`verdict`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from optimlab.learned.suite import SUITES
from optimlab.report.stats import ALPHA, holm, summarize, welch_p_value

CONFIGS = {  # run-name prefix -> description (the study's five meta-training configurations)
    "plain": "RNNProp (no distillation)",
    "minmax": "min-max distillation (Adam, RMSProp)",
    "mean": "mean distillation (Adam, RMSProp)",
    "choice": "choice distillation (small-pool choice policy)",
    "rg": "min-max + relative Gaussian perturbation",
}
AMALGAMATED = ("minmax", "mean", "choice", "rg")
BASELINES = ("adam", "rmsprop")
PROBLEMS = [p.name for p in SUITES["amalgamation"]]
ALL = "all problems"
BEGIN, END = "<!-- summary:begin -->", "<!-- summary:end -->"


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


def eval_cost(root: Path) -> dict[str, dict]:
    """problem -> {cpu, wall, runs}: every evaluation command's time file, and the finished training runs.
    A linked run directory (baselines shared with another study root) is another study's cost: not counted."""
    out = {}
    for folder in sorted(p for p in (root / "eval").glob("*") if p.is_dir()):
        times = [t for t in (read_time(p) for p in folder.glob("*.time")) if t]
        own = [d for d in folder.iterdir() if d.is_dir() and not d.is_symlink()]
        runs = sum(1 for d in own for _ in d.glob("runs/**/summary.json"))
        out[folder.name] = {"cpu": sum(t[0] for t in times), "wall": sum(t[1] for t in times), "runs": runs}
    return out


def replicate_seed(run_dir: Path, task: str, replicate: str) -> int | None:
    """The meta-training seed of an evaluated replicate, from the `optim.path` (`..._s<seed>`) of its runs."""
    for config in sorted((run_dir / "runs" / task / "learned" / f"replicate{replicate}").glob("seed*/config.yaml")):
        found = re.search(r"^\s*path:\s*\S*_s(\d+)\s*$", config.read_text(), re.MULTILINE)
        if found:
            return int(found.group(1))
    return None


def learned_scores(root: Path) -> dict[str, dict[str, dict[int, list[float]]]]:
    """problem -> config -> {meta-training seed: [per evaluation seed scores]}."""
    out: dict[str, dict] = {}
    for config in CONFIGS:
        paths = sorted(root.glob(f"eval/*/{config}/evaluation.json")) + sorted(
            root.glob(f"eval/*/{config}_b/evaluation.json")
        )
        for path in paths:
            for task, res in json.loads(path.read_text())["results"].items():
                reps = res["learned"]["replicates"]
                for k in sorted(reps, key=int):
                    seed = replicate_seed(path.parent, task, k)
                    if seed is None:
                        raise SystemExit(f"{path.parent}: cannot tell the meta-training seed of replicate {k}")
                    out.setdefault(task, {}).setdefault(config, {})[seed] = reps[k]
    return out


def baseline_scores(root: Path) -> tuple[dict, dict]:
    """problem -> optimizer -> [score per seed] at its best lr; and problem -> optimizer -> {lr: mean}."""
    best, grid = {}, {}
    for optim in BASELINES:
        for path in sorted(root.glob(f"eval/*/{optim}/evaluation.json")):
            for task, res in json.loads(path.read_text())["results"].items():
                label = res["best"]
                if label is None:  # every lr diverged
                    continue
                best.setdefault(task, {})[optim] = list(res[label]["replicates"]["0"])
                grid.setdefault(task, {})[optim] = {
                    k.split("-lr")[1]: v["mean"] for k, v in res.items() if k != "best"
                } | {"best": label.split("-lr")[1]}
    return best, grid


def replicate_mean(scores: list[float]) -> float:
    """A replicate's mean score over its seeds; nan when a seed's score is not finite (a diverged run)."""
    return float(np.mean(scores)) if scores and all(math.isfinite(v) for v in scores) else math.nan


def brown_forsythe(a: list[float], b: list[float]) -> float:
    x, y = [v for v in a if math.isfinite(v)], [v for v in b if math.isfinite(v)]
    if len(x) < 2 or len(y) < 2:
        return math.nan
    return float(stats.levene(x, y, center="median").pvalue)


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int]:
    """(mean difference a - b, two-sided paired t-test p, pairs) over the seeds where both are finite."""
    seeds = [s for s in a if s in b and math.isfinite(a[s]) and math.isfinite(b[s])]
    diffs = np.array([a[s] - b[s] for s in seeds])
    if len(seeds) < 2:
        return (float(diffs.mean()) if len(seeds) else math.nan), math.nan, len(seeds)
    if np.all(diffs == diffs[0]):
        return float(diffs.mean()), math.nan, len(seeds)
    return float(diffs.mean()), float(stats.ttest_1samp(diffs, 0.0).pvalue), len(seeds)


def fmt(x: float, digits: int = 3) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.{digits}f}"


@dataclass
class Test:
    problem: str
    claim: str  # "pool" | "plain" | "spread"
    name: str
    effect: float  # difference of means (amalgamated - other; negative: amalgamated better), or a std ratio
    p: float
    n: str  # the units on each side
    welch: float = math.nan  # the paired rows: Welch's p on the same values
    holm: float = math.nan


def collect(root: Path) -> dict:
    """Everything the page shows, from ROOT."""
    learned = learned_scores(root)
    base, grid = baseline_scores(root)
    problems = [p for p in PROBLEMS if p in learned or p in base] + sorted(set(learned) - set(PROBLEMS))
    by_seed = {p: {c: {s: replicate_mean(v) for s, v in learned[p][c].items()} for c in learned[p]} for p in learned}
    seeds_per_replicate = {
        p: {c: sorted({len(v) for v in learned[p][c].values()}) for c in learned[p]} for p in learned
    }
    # "all problems": each replicate's mean over the problems that every configuration of ROOT covers, all
    # replicates there (a root may hold only some of the configurations)
    configs = [c for c in CONFIGS if any(c in by_seed[p] for p in by_seed)]
    common = [p for p in problems if p in by_seed and set(by_seed[p]) == set(configs)]
    overall = {}
    for c in configs:
        seeds = set.intersection(*(set(by_seed[p][c]) for p in common)) if common else set()
        overall[c] = {s: float(np.mean([by_seed[p][c][s] for p in common])) for s in sorted(seeds)}
    return {"problems": problems, "by_seed": by_seed, "base": base, "grid": grid, "seeds": seeds_per_replicate,
            "common": common, "overall": overall}  # fmt: skip


def comparisons(data: dict) -> list[Test]:
    tests: list[Test] = []
    rows = [(p, data["by_seed"].get(p, {}), data["base"].get(p, {})) for p in data["problems"]]
    if len(data["common"]) > 1:
        rows.append((ALL, data["overall"], {}))
    for problem, learned, base in rows:
        for config in AMALGAMATED:
            if config not in learned:
                continue
            mine = list(learned[config].values())
            for optim in BASELINES:
                if optim in base:
                    effect = float(np.nanmean(mine) - np.mean(base[optim]))
                    n = f"{sum(map(math.isfinite, mine))} vs {len(base[optim])}"
                    tests.append(
                        Test(problem, "pool", f"{config} vs {optim}", effect, welch_p_value(mine, base[optim]), n)
                    )
            if "plain" in learned:
                effect, p, pairs = paired(learned[config], learned["plain"])
                welch = welch_p_value(mine, list(learned["plain"].values()))
                tests.append(Test(problem, "plain", f"{config} vs plain", effect, p, f"{pairs} pairs", welch))
        if "minmax" in learned and "rg" in learned:
            rg, mm = list(learned["rg"].values()), list(learned["minmax"].values())
            ratio = float(np.nanstd(rg, ddof=1) / np.nanstd(mm, ddof=1))
            n = f"{sum(map(math.isfinite, rg))} vs {sum(map(math.isfinite, mm))}"
            tests.append(Test(problem, "spread", "spread: rg vs minmax (std ratio)", ratio, brown_forsythe(rg, mm), n))
    for test, q in zip(tests, holm([t.p for t in tests])):
        test.holm = q
    return tests


def verdict(tests: list[Test]) -> str:
    """The fixed rule: a comparison counts when its Holm p < ALPHA. Confirmed: some count for the claim and
    none against; refuted: some against and none for; mixed: both; unclear: none counts."""
    favour = [t for t in tests if t.holm < ALPHA and _for_claim(t)]
    against = [t for t in tests if t.holm < ALPHA and not _for_claim(t)]
    if favour and against:
        return "mixed"
    if favour:
        return "confirmed"
    if against:
        return "refuted"
    return "unclear"


def _for_claim(test: Test) -> bool:
    """Whether the observed effect goes the paper's way (a smaller loss; a smaller spread)."""
    return test.effect < 1.0 if test.claim == "spread" else test.effect < 0.0


def claim_rows(tests: list[Test]) -> list[tuple[str, str, str]]:
    rows = []
    for claim, text in (("pool", "The amalgamated optimizer beats its pool members (Adam, RMSProp at their best lr)"),
                        ("plain", "The amalgamated optimizer beats plain RNNProp, meta-trained the same way"),
                        ("spread", "The relative Gaussian perturbation shrinks the spread across replicates")):  # fmt: skip
        mine = [t for t in tests if t.claim == claim and math.isfinite(t.p)]
        if not mine:
            continue
        good = sum(_for_claim(t) for t in mine)
        sig_good = sum(_for_claim(t) and t.holm < ALPHA for t in mine)
        sig_bad = sum(not _for_claim(t) and t.holm < ALPHA for t in mine)
        raw_good = sum(_for_claim(t) and t.p < ALPHA for t in mine)
        raw_bad = sum(not _for_claim(t) and t.p < ALPHA for t in mine)
        effects = [t.effect for t in mine]
        span = (f"std ratio {min(effects):.2f} to {max(effects):.2f}" if claim == "spread"
                else f"differences {min(effects):+.2f} to {max(effects):+.2f}")  # fmt: skip
        where = sorted({t.problem for t in mine} - {ALL})
        pooled = ", and all problems together" if any(t.problem == ALL for t in mine) else ""
        evidence = (f"{len(mine)} comparisons ({len(where)} problems{pooled}); {good} in the paper's direction; "
                    f"raw p < {ALPHA}: {raw_good} for, {raw_bad} against; Holm p < {ALPHA}: {sig_good} for, "
                    f"{sig_bad} against; {span}")  # fmt: skip
        rows.append((text, verdict(mine), evidence))
    return rows


def markdown(root: Path, data: dict, tests: list[Test]) -> str:
    out: list[str] = []
    w = out.append
    w("## Compute\n")
    w("| configuration | replicates (completed) | meta-iterations per replicate | inner steps (all) | CPU s | wall s |")
    w("|---|---|---|---|---|---|")
    meta_cpu = meta_wall = 0.0
    for row in meta_cost(root):
        name = CONFIGS.get(row["config"], "choice policy (teacher), small pool")
        w(f"| {row['config']}: {name} | {row['replicates']} ({row['completed']}) | "
          f"{', '.join(map(str, row['iterations']))} | {row['inner_steps']:,} | {row['cpu']:.0f} | {row['wall']:.0f} |")  # fmt: skip
        meta_cpu, meta_wall = meta_cpu + row["cpu"], meta_wall + row["wall"]
    w("")
    w("| evaluated problem | training runs finished | CPU s | process-wall s |")
    w("|---|---|---|---|")
    cost = eval_cost(root)
    for problem in [p for p in PROBLEMS if p in cost] + sorted(set(cost) - set(PROBLEMS)):
        c = cost[problem]
        w(f"| {problem} | {c['runs']} | {c['cpu']:.0f} | {c['wall']:.0f} |")
    eval_cpu, eval_wall = sum(c["cpu"] for c in cost.values()), sum(c["wall"] for c in cost.values())
    probes = [t for t in (read_time(p) for p in sorted(root.glob("cost/*.time"))) if t]
    probe_cpu, probe_wall = sum(t[0] for t in probes), sum(t[1] for t in probes)
    w("")
    w(f"Meta-training in all: {meta_cpu:.0f} CPU s, {meta_wall:.0f} process-wall s. "
      f"Evaluation in all: {eval_cpu:.0f} CPU s, {eval_wall:.0f} process-wall s"
      + (f", and {probe_cpu:.0f} CPU s ({probe_wall:.0f} wall s) for the single runs that costed it" if probes else "")
      + f". The study in all: {(meta_cpu + eval_cpu + probe_cpu) / 60:.0f} CPU minutes.\n")  # fmt: skip

    w("## Coverage\n")
    w("Per problem of the suite: replicates x evaluation seeds of each learned configuration, and seeds per "
      "learning rate of each baseline (its grid has 5 rates).\n")  # fmt: skip
    w(f"| problem | {' | '.join(CONFIGS)} | {' | '.join(BASELINES)} |")
    w("|---|" + "---|" * (len(CONFIGS) + len(BASELINES)))
    for problem in PROBLEMS:
        cells = []
        for c in CONFIGS:
            counts = data["seeds"].get(problem, {}).get(c)
            reps = len(data["by_seed"].get(problem, {}).get(c, {}))
            shown = "-" if not counts else (f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}")
            cells.append("not run" if not reps else f"{reps} x {shown}")  # an unfinished command counts as not run
        cells += [
            str(len(data["base"][problem][o])) if o in data["base"].get(problem, {}) else "not run" for o in BASELINES
        ]
        w(f"| {problem} | {' | '.join(cells)} |")
    w("")

    w("## Results\n")
    for problem in data["problems"]:
        w(f"### {problem}\n")
        for optim, g in data["grid"].get(problem, {}).items():
            cells = ", ".join(f"{lr}: {fmt(m)}" for lr, m in g.items() if lr != "best")
            w(f"- {optim} lr grid (mean score): {cells}; best {g['best']}")
        learned = data["by_seed"].get(problem, {})
        seeds = data["seeds"].get(problem, {})
        if learned:
            counts = sorted({n for c in seeds.values() for n in c})
            shown = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
            w(f"- evaluation seeds per replicate: {shown}")
        w("")
        w(
            "| optimizer | n | mean | ± 2 SE | 95 % CI | std of replicate means | per-replicate means (by meta-training seed) |"
        )
        w("|---|---|---|---|---|---|---|")
        groups = {c: list(v.values()) for c, v in learned.items()}
        groups |= dict(data["base"].get(problem, {}).items())
        for name in [*CONFIGS, *BASELINES]:
            if name not in groups:
                continue
            values = groups[name]
            s = summarize(values)
            two_se = 2 * s.std / math.sqrt(s.n) if s.n > 1 else math.nan
            label = CONFIGS.get(name, f"{name} (best lr; per seed)")
            w(f"| {label} | {s.n} | {fmt(s.mean)} | {fmt(two_se)} | [{fmt(s.ci_low)}, {fmt(s.ci_high)}] | "
              f"{fmt(s.std)} | {', '.join(fmt(v) for v in values)} |")  # fmt: skip
        w("")
    if len(data["common"]) > 1:
        w(f"### {ALL}\n")
        w(f"Each replicate's mean score over the {len(data['common'])} problems every configuration was evaluated on "
          f"({', '.join(data['common'])}).\n")  # fmt: skip
        w("| optimizer | n | mean | ± 2 SE | std of replicate means | per-replicate means |")
        w("|---|---|---|---|---|---|")
        for name, by in data["overall"].items():
            s = summarize(list(by.values()))
            two_se = 2 * s.std / math.sqrt(s.n) if s.n > 1 else math.nan
            w(f"| {CONFIGS[name]} | {s.n} | {fmt(s.mean)} | {fmt(two_se)} | {fmt(s.std)} | "
              f"{', '.join(fmt(v) for v in by.values())} |")  # fmt: skip
        w("")

    w("### Tests\n")
    w("Against Adam and RMSProp: Welch's t-test. Against plain RNNProp: the paired t-test over meta-training seeds "
      "(Welch's p beside it). Spread: the ratio of the standard deviations of the per-replicate means (with "
      "perturbation over without) and the Brown-Forsythe p. A difference is amalgamated minus the other: positive "
      f"means the amalgamated optimizer is worse. Holm's correction is over all {len(tests)} rows.\n")  # fmt: skip
    w("| problem | comparison | n | difference of means (spread: std ratio) | p | Holm p | Welch p (paired rows) |")
    w("|---|---|---|---|---|---|---|")
    for t in tests:
        shown = f"x{t.effect:.3f}" if t.claim == "spread" else f"{t.effect:+.3f}"
        w(f"| {t.problem} | {t.name} | {t.n} | {shown} | {fmt(t.p, 4)} | {fmt(t.holm, 4)} | "
          f"{fmt(t.welch, 4) if t.claim == 'plain' else ''} |")  # fmt: skip
    w("")
    w("### Claims by rule\n")
    w(
        f"A comparison counts when its Holm p is below {ALPHA}. **confirmed**: some count for the claim and none "
        "against; **refuted**: some against and none for; **mixed**: both; **unclear**: none counts.\n"
    )
    w("| claim | rule's verdict | evidence |")
    w("|---|---|---|")
    for text, v, evidence in claim_rows(tests):
        w(f"| {text} | **{v}** | {evidence} |")
    return "\n".join(out) + "\n"


def write_page(page: Path, text: str) -> None:
    """Replace what lies between the BEGIN and END lines of `page` with `text`."""
    old = page.read_text()
    if BEGIN not in old or END not in old:
        raise SystemExit(f"{page} has no {BEGIN} ... {END} block")
    head, rest = old.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    page.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")


def write_csv(path: Path, root: Path, data: dict) -> None:
    """One row per training-run score: problem, optimizer, meta-training seed (learned), evaluation seed."""
    learned = learned_scores(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        out = csv.writer(file)
        out.writerow(["problem", "optimizer", "lr", "meta_seed", "eval_seed", "log_best_val_loss"])
        for problem in data["problems"]:
            for config, reps in learned.get(problem, {}).items():
                for seed, scores in sorted(reps.items()):
                    out.writerows([problem, config, "", seed, i, repr(v)] for i, v in enumerate(scores))
            for optim, scores in data["base"].get(problem, {}).items():
                lr = data["grid"][problem][optim]["best"]
                out.writerows([problem, optim, lr, "", i, repr(v)] for i, v in enumerate(scores))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--page", type=Path, default=None, help="write the tables into this page's summary block")
    parser.add_argument("--figure", type=Path, default=None, help="dot plot of the per-replicate means")
    parser.add_argument("--trajectories", type=Path, default=None, help="validation loss vs step, every problem")
    parser.add_argument("--csv", type=Path, default=None, help="every score, one row per training run")
    args = parser.parse_args(argv)
    data = collect(args.root)
    text = markdown(args.root, data, comparisons(data))
    if args.page:
        write_page(args.page, text)
    else:
        print(text, end="")
    if args.csv:
        write_csv(args.csv, args.root, data)
    groups = {
        p: {c: list(v.values()) for c, v in data["by_seed"].get(p, {}).items()} | data["base"].get(p, {})
        for p in data["problems"]
    }
    if args.figure and groups:
        plot(groups, args.figure)
    if args.trajectories and data["problems"]:
        plot_trajectories(args.root, data["problems"], args.trajectories)


def _save(plt, fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _grid(n: int, width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return plt, fig, axes.flat


def plot_trajectories(root: Path, problems: list[str], path: Path) -> None:
    """Validation loss against step on every problem (as `optimlab evaluate` plots one): per optimizer the mean
    over all its runs (every replicate and seed; a baseline at its best lr) and a band from the minimum to the
    maximum."""
    from optimlab.report.load import read_run
    from optimlab.report.plots import band

    plt, fig, axes = _grid(len(problems), 3.6, 2.9)
    handles = {}
    for ax, problem in zip(axes, problems):
        folders: dict[str, list[Path]] = {}
        for config in CONFIGS:
            for name in (config, f"{config}_b"):
                folders.setdefault(config, []).append(root / "eval" / problem / name / "runs" / problem / "learned")
        for optim in BASELINES:
            report = root / "eval" / problem / optim / "evaluation.json"
            if report.is_file():
                best = json.loads(report.read_text())["results"][problem]["best"]
                if best:
                    folders[optim] = [report.parent / "runs" / problem / best]
        for label, dirs in folders.items():
            i = [*CONFIGS, *BASELINES].index(label)  # one colour per optimizer on every panel
            runs = [read_run(p.parent) for d in dirs if d.is_dir() for p in sorted(d.rglob("summary.json"))]
            runs = [r for r in runs if r.status in ("completed", "diverged")]
            if not runs:
                continue
            steps, mean, low, high = band([r.series("val/loss") for r in runs])
            (line,) = ax.plot(steps, mean, color=f"C{i}", lw=1.2)
            ax.fill_between(steps, low, high, color=f"C{i}", alpha=0.12)
            handles.setdefault(label, line)
        ax.set_yscale("log")
        ax.set_title(problem, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes)[: len(problems)]:
        ax.set_xlabel("step", fontsize=8)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle("validation loss: mean and min-max band over all runs (learned: replicates x seeds; "
                 "baselines: seeds at the best lr)", fontsize=9)  # fmt: skip
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    _save(plt, fig, path)


def plot(groups: dict[str, dict[str, list[float]]], path: Path) -> None:
    plt, fig, axes = _grid(len(groups), 3.6, 3.0)
    for ax, (problem, by_name) in zip(axes, groups.items()):
        names = [n for n in (*CONFIGS, *BASELINES) if n in by_name]
        for i, name in enumerate(names):
            values = np.asarray(by_name[name], dtype=float)
            values = values[np.isfinite(values)]
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(len(values))
            ax.plot(i + jitter, values, "o", ms=3.5, alpha=0.6, color="C0" if name in CONFIGS else "C1")
            if len(values) > 1:
                mean, two_se = values.mean(), 2 * values.std(ddof=1) / math.sqrt(len(values))
                ax.errorbar(i + 0.3, mean, yerr=two_se, fmt="s", ms=3.5, color="k", capsize=2)
        ax.set_xticks(range(len(names)), names, rotation=35, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(problem, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("log(best validation loss); dots: per-replicate means (learned, blue) / per-seed scores "
                 "(baselines, orange); black: mean ± 2 SE", fontsize=9)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    _save(plt, fig, path)


if __name__ == "__main__":
    main()
