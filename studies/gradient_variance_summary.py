"""The numbers behind docs/results/gradient_variance.md, from the `gradient_variance` sweep's run directories.

    optimlab sweep gradient_variance --workers 1 --root ROOT
    python studies/gradient_variance_summary.py ROOT/gradient_variance \\
        --json docs/results/data/gradient_variance_summary.json --figures docs/images \\
        --csv docs/results/data/gradient_variance

The sweep measures each estimator in a run of its own on the same SGD trajectory (an observed direction,
`apply=false`): per (task, duplicates, lr, seed), the SG-2B run (plain SGD, draws of twice the batch) and the
SVRG, GC and K-FAC runs, whose `sgd_` statistics are SG-B's. `records` turns them into one record per
measured step and estimator: `var`, `nvar` (instr/direction_variance/{var,nvar}, or sgd_var, sgd_nvar for
SG-B) and `loss`, the mean loss of the training batches of the steps around the measured one (the run logs
every step's batch loss; the full training loss is not evaluated during training). Then, per claim, per
(task, data, lr) group, the mean over seeds with a 95 % Student-t interval and, where a comparison is
claimed, a paired t-test across seeds (scipy.stats):

1. variance rises during training: log10 of SG-B var at the last measured step / at step 0, and at its peak;
2. smaller learning rates coincide with higher variance: log10 of SG-B var at lr_small / at lr_large, paired
   by seed, (a) at equal steps (the measured steps from `--late` on) and (b) at equal training loss
   (log var interpolated in log loss, at levels both runs reached);
3. normalized variance tracks convergence speed better than variance: Spearman correlations over runs of the
   training loss at the end of the run with the time-averaged SG-B nvar and with the time-averaged var, per
   task and pooled, with a bootstrap interval (runs resampled) of each and of their difference;
4. GC below SG-2B with duplicated data: mean over measured steps of log10 GC var / SG-2B var, per group, and
   its difference with / without duplicates (paired by seed and lr);
5. SVRG on deep models: mean over measured steps after step 0 of log10 SVRG var / SG-B var; and the training
   runs: each direction's final metrics minus SGD's, paired by seed.

A ratio r is reported as log10 r; 10**mean is the geometric-mean ratio. With `--json` the same numbers are
written as one JSON document, with `--figures DIR` the study's plots, with `--csv PREFIX` the records.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from optimlab.report.load import Run
from sweep_summary import compute_spent, read_sweeps

ESTIMATORS = ("sg_b", "sg_2b", "svrg", "gc", "kfac")


# -- statistics --------------------------------------------------------------------------------------------
def t_interval(values, confidence: float = 0.95) -> dict:
    """Mean, 95 % Student-t interval and two-sided one-sample t-test against 0 of `values` (seeds)."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    out = {"n": int(len(x)), "mean": float(x.mean()) if len(x) else math.nan}
    if len(x) >= 2:
        sem = float(x.std(ddof=1) / math.sqrt(len(x)))
        half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * sem)
        out.update(low=out["mean"] - half, high=out["mean"] + half)
        out["p"] = float(stats.ttest_1samp(x, 0.0).pvalue) if sem > 0 else (0.0 if out["mean"] != 0 else 1.0)
    return out


def bootstrap_spearman(loss, a, b, draws: int = 5000, seed: int = 0) -> dict:
    """Spearman rho(loss, a), rho(loss, b) and rho_a - rho_b, each with a 95 % percentile bootstrap
    interval over runs; `p_diff` is the bootstrap share of resamples with rho_a - rho_b <= 0."""
    loss, a, b = map(np.asarray, (loss, a, b))
    rng = np.random.default_rng(seed)

    def rhos(index):
        with warnings.catch_warnings():  # a resample with a constant column has no correlation: NaN, dropped
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            return stats.spearmanr(loss[index], a[index]).statistic, stats.spearmanr(loss[index], b[index]).statistic

    base = rhos(np.arange(len(loss)))
    samples = np.array([rhos(rng.integers(0, len(loss), len(loss))) for _ in range(draws)])
    samples = samples[np.isfinite(samples).all(axis=1)]
    diff = samples[:, 0] - samples[:, 1]
    band = lambda v: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else [math.nan] * 2  # noqa: E731
    return {"n": int(len(loss)), "rho_nvar": float(base[0]), "rho_nvar_ci": band(samples[:, 0]),
            "rho_var": float(base[1]), "rho_var_ci": band(samples[:, 1]), "diff": float(base[0] - base[1]),
            "diff_ci": band(diff), "p_diff": float((diff <= 0).mean()) if len(diff) else math.nan}  # fmt: skip


# -- records -------------------------------------------------------------------------------------------------
PREFIX = "instr/direction_variance/"
END_WINDOW = 100  # the training loss at the end of a run: the mean loss of its last 100 training batches


def duplicates(run: Run) -> int:
    return int(run.config["task"].get("duplicates") or 0)


def kind(run: Run) -> tuple[str, str]:
    """("measured", estimator) for a run that measures an observed estimator, ("trained", direction) else."""
    cfg = run.config
    measured = "direction_variance" in ((cfg.get("instruments") or {}).get("names") or [])
    direction, precond = cfg["direction"]["name"], cfg["precond"]["name"]
    name = "kfac" if precond == "kfac" else direction
    if measured:
        return "measured", "sg_2b" if name == "sgd" else name
    if name == "gc" and cfg["train"].get("sampler") == "stratified":
        name = "gc_sampled"
    return "trained", name


def batch_losses(run: Run) -> np.ndarray:
    """The loss of every step's training batch: the run logs every step (train.log_every=1), and the line at
    step k + 1 holds the batch of step k."""
    steps, _, values = run.series("train/loss")
    out = np.full(int(run.summary["step"]), np.nan)
    for step, value in zip(steps, values):
        out[int(step) - 1] = value
    return out


def loss_near(losses: np.ndarray, step: int, cap: int = 50) -> float:
    """The training loss at `step`: the mean batch loss over steps step - w .. step + w, w = min(step // 10,
    cap), a window short against the step's distance from the start (the loss changes little within it)."""
    w = min(step // 10, cap)
    return float(np.nanmean(losses[max(0, step - w): step + w + 1]))


def measurements(run: Run) -> dict[int, dict[str, float]]:
    """{measured step: {var, nvar, sgd_var, sgd_nvar}} from the run's metrics.jsonl."""
    out = {}
    for row in run.metrics:
        if PREFIX + "step" in row:
            out[int(row[PREFIX + "step"])] = {k: float(row[PREFIX + k]) for k in ("var", "nvar", "sgd_var", "sgd_nvar")}
    return out


def records_of(runs: list[Run]) -> tuple[list[dict], list[dict], dict]:
    """(measurement records, training records, checks) from the sweep's runs with a result.

    A measurement record is one estimator at one measured step of one trajectory (task, duplicates, lr, seed);
    SG-B comes from the `sgd_` statistics of the SVRG, GC and K-FAC runs (the same draws in each: the
    first run's values are used, and `checks` reports how far the others are from them), SG-2B from the run
    that draws batches of twice the size. `checks` also counts the trajectories whose runs ended with equal
    parameters (`params_sha256`), which is what "one SGD trajectory" requires.
    """
    trajectories: dict = defaultdict(dict)
    training = []
    for run in runs:
        what, name = kind(run)
        key = (run.config["task"]["name"], duplicates(run), float(run.config["optim"]["lr"]), run.seed)
        if what == "measured":
            trajectories[key][name] = run
            continue
        losses = batch_losses(run)
        extra, examples = 0.0, 0.0
        for row in reversed(run.metrics):  # the hooks' cumulative counters, from the last line that has them
            if any(k.endswith("extra_grad_evals") for k in row):
                extra = sum(float(row.get(f"{p}/extra_grad_evals", 0.0)) for p in ("direction", "precond"))
                examples = sum(float(row.get(f"{p}/extra_examples", 0.0)) for p in ("direction", "precond"))
                break
        batch = int(run.config["task"]["batch_size"])
        training.append({"task": key[0], "duplicates": key[1], "direction": name, "seed": run.seed, "lr": key[2],
                         "steps": int(run.summary["step"]), "status": run.status,
                         "train/loss": float(np.nanmean(losses[-END_WINDOW:])),
                         **{m: run.final(m) for m in ("val/loss", "val/accuracy", "test/loss", "test/accuracy")},
                         "wall_s": float(run.summary.get("wall_time") or math.nan),
                         "grad_evals": int(run.summary["step"]) + extra + examples / batch})  # fmt: skip
    out, checks = [], {"trajectories": 0, "complete": 0, "same_params": 0, "sgb_max_rel_diff": 0.0}
    for key, by_name in sorted(trajectories.items()):
        checks["trajectories"] += 1
        observed = [by_name[n] for n in ("svrg", "gc", "kfac") if n in by_name]
        if set(by_name) != {"sg_2b", "svrg", "gc", "kfac"}:
            continue  # a trajectory enters the statistics once all four of its runs have ended
        checks["complete"] += 1
        checks["same_params"] += len({r.summary.get("params_sha256") for r in by_name.values()}) == 1
        measured = {name: measurements(run) for name, run in by_name.items()}
        first = measurements(observed[0])
        losses = batch_losses(observed[0])
        end_loss = float(np.nanmean(losses[-END_WINDOW:]))
        for other in observed[1:]:
            for step, values in measurements(other).items():
                if step in first:
                    diff = abs(values["sgd_var"] / first[step]["sgd_var"] - 1)
                    checks["sgb_max_rel_diff"] = max(checks["sgb_max_rel_diff"], diff)
        task, dup, lr, seed = key
        svrg_every = int(by_name["svrg"].config["direction"]["snapshot_every"])
        common = {"task": task, "duplicates": dup, "lr": lr, "seed": seed, "end_loss": end_loss}
        for step, values in sorted(first.items()):
            loss = loss_near(losses, step)
            out.append({**common, "step": step, "estimator": "sg_b", "loss": loss,
                        "var": values["sgd_var"], "nvar": values["sgd_nvar"]})  # fmt: skip
            for name, series in measured.items():
                if step in series:
                    out.append({**common, "step": step, "estimator": name, "loss": loss,
                                "var": series[step]["var"], "nvar": series[step]["nvar"],
                                "fresh": name == "svrg" and step % svrg_every == 0})  # fmt: skip
    return out, training, checks


def runs(records: list[dict]) -> dict[tuple, dict[int, dict[str, dict]]]:
    """{(task, duplicates, lr, seed): {step: {estimator: record}}}"""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in records:
        out[(r["task"], r["duplicates"], r["lr"], r["seed"])][r["step"]][r["estimator"]] = r
    return {key: dict(steps) for key, steps in out.items()}


def groups(by_run: dict) -> dict[tuple, dict[int, dict]]:
    """{(task, duplicates, lr): {seed: steps}}"""
    out: dict = defaultdict(dict)
    for (task, dup, lr, seed), steps in by_run.items():
        out[(task, dup, lr)][seed] = steps
    return dict(sorted(out.items()))


def log_ratio(steps: dict, num: str, den: str, at: list[int], field: str = "var") -> float:
    values = [math.log10(steps[s][num][field] / steps[s][den][field]) for s in at
              if steps[s][num][field] > 0 and steps[s][den][field] > 0]  # fmt: skip
    return float(np.mean(values)) if values else math.nan


def at_loss(steps: dict, levels: np.ndarray, field: str = "var") -> np.ndarray:
    """log10 SG-B `field` at the given full-loss levels, interpolated linearly in log loss."""
    points = sorted((math.log(s["sg_b"]["loss"]), math.log10(s["sg_b"][field])) for s in steps.values())
    x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    return np.interp(np.log(levels), x, y)


# -- the claims -----------------------------------------------------------------------------------------------
def claim_rise(by_group: dict) -> dict:
    out = {}
    for (task, dup, lr), seeds in by_group.items():
        first = [math.log10(s[max(s)]["sg_b"]["var"] / s[min(s)]["sg_b"]["var"]) for s in seeds.values()]
        peak = [math.log10(max(x["sg_b"]["var"] for x in s.values()) / s[min(s)]["sg_b"]["var"]) for s in seeds.values()]
        nvar = [s[max(s)]["sg_b"]["nvar"] - s[min(s)]["sg_b"]["nvar"] for s in seeds.values()]
        out[f"{task} dup={dup} lr={lr}"] = {"log10_last_over_first": t_interval(first),
                                            "log10_peak_over_first": t_interval(peak),
                                            "nvar_last_minus_first": t_interval(nvar)}  # fmt: skip
    return out


def claim_lr(by_group: dict, late: int) -> dict:
    out = {}
    keys = {(task, dup) for task, dup, _ in by_group}
    for task, dup in sorted(keys):
        lrs = sorted(lr for t, d, lr in by_group if (t, d) == (task, dup))
        if len(lrs) < 2:
            continue
        small, large = by_group[(task, dup, lrs[0])], by_group[(task, dup, lrs[-1])]
        steps_equal, loss_equal, overlap = [], [], []
        for seed in sorted(set(small) & set(large)):
            a, b = small[seed], large[seed]
            common = sorted(s for s in set(a) & set(b) if s >= late)
            steps_equal.append(log_ratio({s: {"x": a[s]["sg_b"], "y": b[s]["sg_b"]} for s in common}, "x", "y", common))
            low = max(min(x["sg_b"]["loss"] for x in a.values()), min(x["sg_b"]["loss"] for x in b.values()))
            high = min(max(x["sg_b"]["loss"] for x in a.values()), max(x["sg_b"]["loss"] for x in b.values()))
            if high > low * 1.05:
                levels = np.geomspace(low, high, 7)[1:-1]
                loss_equal.append(float(np.mean(at_loss(a, levels) - at_loss(b, levels))))
                overlap.append([low, high])
        out[f"{task} dup={dup} lr={lrs[0]} vs {lrs[-1]}"] = {
            "log10_var_small_over_large_equal_steps": t_interval(steps_equal),
            "log10_var_small_over_large_equal_loss": t_interval(loss_equal),
            "loss_overlap": overlap,
        }
    return out


def claim_nvar(by_run: dict, draws: int = 5000) -> dict:
    out = {}
    tasks = sorted({key[0] for key in by_run})
    for name, keys in [*((t, [k for k in by_run if k[0] == t]) for t in tasks), ("pooled", list(by_run))]:
        loss = [by_run[k][max(by_run[k])]["sg_b"]["end_loss"] for k in keys]
        nvar = [np.mean([s["sg_b"]["nvar"] for s in by_run[k].values()]) for k in keys]
        var = [np.mean([s["sg_b"]["var"] for s in by_run[k].values()]) for k in keys]
        if len(keys) >= 4:
            out[name] = bootstrap_spearman(loss, nvar, var, draws)
    return out


def claim_gc(by_group: dict) -> dict:
    out, per = {}, {}
    for (task, dup, lr), seeds in by_group.items():
        vs_2b = {seed: log_ratio(s, "gc", "sg_2b", sorted(s)) for seed, s in seeds.items()}
        vs_b = {seed: log_ratio(s, "gc", "sg_b", sorted(s)) for seed, s in seeds.items()}
        per[(task, dup, lr)] = vs_2b
        out[f"{task} dup={dup} lr={lr}"] = {"log10_gc_over_sg2b": t_interval(vs_2b.values()),
                                            "log10_gc_over_sgb": t_interval(vs_b.values())}  # fmt: skip
    for (task, dup, lr), with_dup in per.items():
        without = per.get((task, 0, lr))
        if dup and without:
            diff = [with_dup[s] - without[s] for s in sorted(set(with_dup) & set(without))]
            out[f"{task} dup={dup} lr={lr}"]["log10_gc_over_sg2b_dup_minus_nodup"] = t_interval(diff)
    return out


def claim_svrg(by_group: dict, training: list[dict]) -> dict:
    out: dict = {"variance": {}, "training": {}}
    for (task, dup, lr), seeds in by_group.items():
        # not at the steps of a snapshot: there the SVRG direction is the full gradient, variance 0 up to rounding
        ratio = [log_ratio(s, "svrg", "sg_b", [x for x in sorted(s) if not s[x]["svrg"].get("fresh", x == 0)])
                 for s in seeds.values()]  # fmt: skip
        out["variance"][f"{task} dup={dup} lr={lr}"] = {"log10_svrg_over_sgb": t_interval(ratio)}
    out["training"] = paired_training(training, "svrg")
    return out


def kfac_nvar(by_group: dict) -> dict:
    """The K-FAC direction's nvar minus SG-B's, averaged over the measured steps, per group."""
    out = {}
    for (task, dup, lr), seeds in by_group.items():
        diff = [np.mean([x["kfac"]["nvar"] - x["sg_b"]["nvar"] for x in s.values()]) for s in seeds.values()]
        out[f"{task} dup={dup} lr={lr}"] = {"kfac_nvar_minus_sgb": t_interval(diff)}
    return out


def training_table(training: list[dict]) -> dict:
    """Per (task, duplicates, direction): final metrics' means with t intervals over seeds, CPU seconds."""
    cells: dict = defaultdict(list)
    for r in training:
        cells[(r["task"], r["duplicates"], r["direction"])].append(r)
    out = {}
    for (task, dup, direction), rows in sorted(cells.items()):
        out[f"{task} dup={dup} {direction}"] = {
            metric: t_interval([r[metric] for r in rows])
            for metric in ("train/loss", "val/loss", "val/accuracy", "test/loss", "test/accuracy", "wall_s", "grad_evals")
        }
    return out


def paired_training(training: list[dict], direction: str) -> dict:
    """`direction` minus SGD, paired by seed, for each final metric and (as a ratio) the CPU time."""
    by = {(r["task"], r["duplicates"], r["direction"], r["seed"]): r for r in training}
    out = {}
    for task, dup in sorted({(r["task"], r["duplicates"]) for r in training}):
        seeds = sorted(s for t, d, name, s in by if (t, d, name) == (task, dup, direction) and (t, d, "sgd", s) in by)
        if not seeds:
            continue
        pairs = [(by[(task, dup, direction, s)], by[(task, dup, "sgd", s)]) for s in seeds]
        entry = {m: t_interval([a[m] - b[m] for a, b in pairs]) for m in ("val/loss", "val/accuracy", "test/accuracy")}
        entry["log10_wall_ratio"] = t_interval([math.log10(a["wall_s"] / b["wall_s"]) for a, b in pairs])
        entry["grad_evals_ratio"] = float(np.mean([a["grad_evals"] / b["grad_evals"] for a, b in pairs]))
        out[f"{task} dup={dup} {direction} - sgd"] = entry
    return out


def summarise(records: list[dict], training: list[dict], late: int, draws: int = 5000) -> dict:
    by_run = runs(records)
    by_group = groups(by_run)
    return {
        "runs": len(by_run),
        "seeds": sorted({k[3] for k in by_run}),
        "steps": sorted({s for steps in by_run.values() for s in steps}),
        "1_variance_rises": claim_rise(by_group),
        "2_smaller_lr_higher_variance": claim_lr(by_group, late),
        "3_nvar_tracks_convergence": claim_nvar(by_run, draws),
        "4_gc_below_sg2b_with_duplicates": claim_gc(by_group),
        "5_svrg_on_deep_models": claim_svrg(by_group, training),
        "kfac_nvar": kfac_nvar(by_group),
        "training": training_table(training),
        "training_vs_sgd": {name: paired_training(training, name) for name in ("svrg", "gc", "gc_sampled", "kfac")},
    }


# -- figures ------------------------------------------------------------------------------------------------------
def _band(ax, xs, rows, label, color, log=True):
    rows = np.array(rows)
    centre = 10 ** np.log10(rows).mean(0) if log else rows.mean(0)
    ax.plot(xs, centre, marker="o", markersize=2.5, color=color, label=label)
    ax.fill_between(xs, rows.min(0), rows.max(0), color=color, alpha=0.2, linewidth=0)


def figures(records: list[dict], training: list[dict], directory: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_group = groups(runs(records))
    tasks = sorted({k[0] for k in by_group})
    dups = sorted({k[1] for k in by_group})
    lrs = sorted({k[2] for k in by_group})
    colors = {"sg_b": "C0", "sg_2b": "C1", "svrg": "C2", "gc": "C3", "kfac": "C4"}
    written = []

    # SG-B var and nvar along training, per task and data, both learning rates
    fig, grid = plt.subplots(2, len(tasks) * len(dups), figsize=(3.2 * len(tasks) * len(dups), 5.2), squeeze=False)
    for col, (task, dup) in enumerate((t, d) for t in tasks for d in dups):
        for lr, color in zip(lrs, ("C0", "C3", "C2")):
            seeds = by_group.get((task, dup, lr))
            if not seeds:
                continue
            xs = sorted(set.intersection(*(set(s) for s in seeds.values())))
            for row, field in enumerate(("var", "nvar")):
                _band(grid[row][col], [x + 1 for x in xs], [[s[x]["sg_b"][field] for x in xs] for s in seeds.values()],
                      f"lr={lr}", color, log=field == "var")  # fmt: skip
        for row, field in enumerate(("var", "nvar")):
            ax = grid[row][col]
            ax.set(xscale="log", yscale="log" if field == "var" else "linear", xlabel="step + 1", ylabel=f"SG-B {field}")
            ax.set_title(f"{task}" + (f", {dup} duplicated" if dup else ""), fontsize=8)
    grid[0][0].legend(fontsize=7)
    fig.suptitle("SG-B variance along training (geometric mean over seeds; band: min to max)", fontsize=9)
    fig.tight_layout()
    written.append(_save(fig, directory, "gradient_variance_sgb.png"))

    # each estimator's var relative to SG-B's
    fig, grid = plt.subplots(len(lrs), len(tasks) * len(dups), figsize=(3.2 * len(tasks) * len(dups), 2.7 * len(lrs)),
                             squeeze=False)  # fmt: skip
    for col, (task, dup) in enumerate((t, d) for t in tasks for d in dups):
        for row, lr in enumerate(lrs):
            ax, seeds = grid[row][col], by_group.get((task, dup, lr))
            if not seeds:
                ax.set_visible(False)
                continue
            xs = [x for x in sorted(set.intersection(*(set(s) for s in seeds.values()))) if x > 0]
            for name in ("sg_2b", "svrg", "gc"):
                at = [x for x in xs if not any(s[x][name].get("fresh") for s in seeds.values())]  # SVRG's snapshots: 0
                _band(ax, [x + 1 for x in at], [[s[x][name]["var"] / s[x]["sg_b"]["var"] for x in at]
                                                for s in seeds.values()], name, colors[name])  # fmt: skip
            ax.axhline(1.0, color="k", linewidth=0.6)
            ax.set(xscale="log", yscale="log", xlabel="step + 1", ylabel="var / SG-B var")
            ax.set_title(f"{task}" + (f", {dup} dup" if dup else "") + f", lr={lr}", fontsize=8)
    grid[0][0].legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, directory, "gradient_variance_estimators.png"))

    # claim 2 at equal loss: SG-B var against the full training loss, both learning rates
    fig, grid = plt.subplots(1, len(tasks) * len(dups), figsize=(3.2 * len(tasks) * len(dups), 2.8), squeeze=False)
    for col, (task, dup) in enumerate((t, d) for t in tasks for d in dups):
        ax = grid[0][col]
        for lr, color in zip(lrs, ("C0", "C3", "C2")):
            for i, steps in enumerate(by_group.get((task, dup, lr), {}).values()):
                xs = sorted(steps)
                ax.plot([steps[x]["sg_b"]["loss"] for x in xs], [steps[x]["sg_b"]["var"] for x in xs], color=color,
                        marker="o", markersize=2, linewidth=0.8, alpha=0.7, label=f"lr={lr}" if i == 0 else None)  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="full training loss", ylabel="SG-B var")
        ax.invert_xaxis()
        ax.set_title(f"{task}" + (f", {dup} duplicated" if dup else ""), fontsize=8)
    grid[0][0].legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, directory, "gradient_variance_by_loss.png"))

    # claim 3: final loss against time-averaged nvar and var
    by_run = runs(records)
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.0))
    for task, marker in zip(tasks, "os^"):
        for (t, dup, lr, _seed), steps in by_run.items():
            if t != task:
                continue
            loss = steps[max(steps)]["sg_b"]["end_loss"]
            color = "C0" if lr == lrs[0] else "C3"
            fill = color if dup else "none"
            for ax, field in zip(axes, ("nvar", "var")):
                ax.scatter(np.mean([s["sg_b"][field] for s in steps.values()]), loss, marker=marker,
                           edgecolors=color, facecolors=fill, s=18)  # fmt: skip
    axes[0].set(xlabel="time-averaged SG-B nvar", ylabel="full training loss, last step", yscale="log")
    axes[1].set(xlabel="time-averaged SG-B var", xscale="log", yscale="log")
    axes[0].set_title("o mnist1d_mlp, ^ digits_cnn; blue lr small, red large; filled: duplicates", fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, directory, "gradient_variance_convergence.png"))
    plt.close("all")
    return written


def write_csv(rows: list[dict], path: str, columns: list[str]) -> None:
    """The records as CSV (floats to 5 significant digits): the study's committed data."""
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(f"{row[c]:.5g}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    Path(path).write_text("\n".join(lines) + "\n")


RECORD_COLUMNS = ["task", "duplicates", "lr", "seed", "step", "estimator", "loss", "end_loss", "var", "nvar"]
TRAINING_COLUMNS = ["task", "duplicates", "direction", "seed", "lr", "steps", "status", "train/loss", "val/loss",
                    "val/accuracy", "test/loss", "test/accuracy", "wall_s", "grad_evals"]  # fmt: skip


def _save(fig, directory: str, name: str) -> str:
    path = str(Path(directory) / name)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    return path


# -- the page's tables -----------------------------------------------------------------------------------------
def _p(entry: dict) -> str:
    p = entry.get("p", math.nan)
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.0e}".replace("e-0", "e-") if p >= 1e-4 else "< 1e-4"


def _p_is(entry: dict) -> str:
    p = _p(entry)
    return f"p {p}" if p.startswith("<") else f"p = {p}"


def _ratio(entry: dict) -> str:
    """A log10 ratio's geometric mean with its interval: `6.8× [5.1, 9.3]`."""
    if not entry or not entry.get("n"):
        return "no data"
    digits = lambda v: f"{10**v:.3g}"  # noqa: E731
    if "low" not in entry:
        return f"{digits(entry['mean'])}× (n={entry['n']})"
    return f"{digits(entry['mean'])}× [{digits(entry['low'])}, {digits(entry['high'])}]"


def _diff(entry: dict, places: int = 3) -> str:
    if not entry or not entry.get("n"):
        return "no data"
    if "low" not in entry:
        return f"{entry['mean']:+.{places}f} (n={entry['n']})"
    return f"{entry['mean']:+.{places}f} [{entry['low']:+.{places}f}, {entry['high']:+.{places}f}]"


def _pm(entry: dict, places: int) -> str:
    """Mean ± half-width of the 95 % interval."""
    if "low" not in entry:
        return f"{entry['mean']:.{places}g}"
    return f"{entry['mean']:.{places}g} ± {(entry['high'] - entry['low']) / 2:.2g}"


def _group(key: str) -> tuple[str, str, str]:
    task, dup, lr = key.split(" ")
    return task, "duplicates" if dup != "dup=0" else "own", lr.removeprefix("lr=")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


DIRECTION_LABELS = {"sgd": "sgd", "svrg": "svrg", "gc": "gc", "gc_sampled": "gc, stratified sampler", "kfac": "sgd + K-FAC"}


def tables(summary: dict) -> dict[str, str]:
    """The page's tables, by block name (the `<!-- gv:NAME -->` blocks of docs/results/gradient_variance.md)."""
    out = {}
    rows = []
    for key, e in summary["1_variance_rises"].items():
        rows.append([*_group(key), _ratio(e["log10_last_over_first"]), _p(e["log10_last_over_first"]),
                     _ratio(e["log10_peak_over_first"]), _p(e["log10_peak_over_first"]),
                     _diff(e["nvar_last_minus_first"], 2), _p(e["nvar_last_minus_first"])])  # fmt: skip
    out["rise"] = _table(["task", "data", "lr", "var last / first", "p", "var peak / first", "p", "nvar last − first", "p"], rows)
    rows = []
    for key, e in summary["2_smaller_lr_higher_variance"].items():
        task, dup = key.split(" ")[:2]
        steps, loss = e["log10_var_small_over_large_equal_steps"], e["log10_var_small_over_large_equal_loss"]
        rows.append([task, "duplicates" if dup != "dup=0" else "own", _ratio(steps), _p(steps), _ratio(loss), _p(loss)])
    out["lr"] = _table(["task", "data", "(a) equal steps", "p", "(b) equal training loss", "p"], rows)
    rows = []
    for name, e in summary["3_nvar_tracks_convergence"].items():
        band = lambda v: f"[{v[0]:+.2f}, {v[1]:+.2f}]"  # noqa: E731
        rows.append([name.replace("pooled", "both tasks"), str(e["n"]), f"{e['rho_nvar']:+.2f} {band(e['rho_nvar_ci'])}",
                     f"{e['rho_var']:+.2f} {band(e['rho_var_ci'])}", f"{e['diff']:+.2f} {band(e['diff_ci'])}",
                     f"{e['p_diff']:.3f}"])  # fmt: skip
    out["nvar"] = _table(["runs", "n", "ρ(loss, mean nvar)", "ρ(loss, mean var)", "difference", "bootstrap p (difference ≤ 0)"], rows)
    rows = []
    for key, e in summary["4_gc_below_sg2b_with_duplicates"].items():
        dup = e.get("log10_gc_over_sg2b_dup_minus_nodup")
        rows.append([*_group(key), _ratio(e["log10_gc_over_sg2b"]), _p(e["log10_gc_over_sg2b"]), _ratio(e["log10_gc_over_sgb"]),
                     _p(e["log10_gc_over_sgb"]), _ratio(dup) if dup else "", _p(dup) if dup else ""])  # fmt: skip
    out["gc"] = _table(["task", "data", "lr", "GC / SG-2B", "p", "GC / SG-B", "p", "duplicates' effect on GC / SG-2B", "p"], rows)
    rows = []
    for key, e in summary["5_svrg_on_deep_models"]["variance"].items():
        k = summary["kfac_nvar"][key]["kfac_nvar_minus_sgb"]
        rows.append([*_group(key), _ratio(e["log10_svrg_over_sgb"]), _p(e["log10_svrg_over_sgb"]), _diff(k, 3), _p(k)])
    out["svrg"] = _table(["task", "data", "lr", "SVRG var / SG-B var", "p", "K-FAC nvar − SG-B nvar", "p"], rows)
    rows = []
    order = list(DIRECTION_LABELS)
    for key, e in sorted(summary["training"].items(), key=lambda item: (*item[0].split(" ")[:2], order.index(item[0].split(" ")[2]))):
        task, dup, direction = key.split(" ")
        rows.append([task, "duplicates" if dup != "dup=0" else "own", DIRECTION_LABELS[direction], _pm(e["train/loss"], 3),
                     _pm(e["val/loss"], 3), _pm(e["val/accuracy"], 3), _pm(e["test/accuracy"], 3),
                     f"{e['grad_evals']['mean']:.0f}", f"{e['wall_s']['mean']:.0f}"])  # fmt: skip
    out["training"] = _table(["task", "data", "direction", "train loss", "val loss", "val accuracy", "test accuracy",
                              "gradients", "wall s"], rows)  # fmt: skip
    rows = []
    for direction, entries in summary["training_vs_sgd"].items():
        for key, e in entries.items():
            task, dup = key.split(" ")[:2]
            rows.append([task, "duplicates" if dup != "dup=0" else "own", DIRECTION_LABELS[direction],
                         f"{_diff(e['val/loss'])}, {_p_is(e['val/loss'])}",
                         f"{_diff(e['test/accuracy'])}, {_p_is(e['test/accuracy'])}",
                         f"{e['grad_evals_ratio']:.2f}×"])  # fmt: skip
    rows.sort(key=lambda r: (r[0], r[1] == "duplicates"))  # stable: directions stay in their order
    out["paired"] = _table(["task", "data", "direction", "Δ val loss", "Δ test accuracy", "gradients"], rows)
    return out


def write_blocks(page: Path, blocks: dict[str, str]) -> None:
    """Replace the text between `<!-- gv:NAME -->` and `<!-- /gv:NAME -->` in `page` by `blocks[NAME]`."""
    text = page.read_text()
    for name, body in blocks.items():
        start, end = f"<!-- gv:{name} -->", f"<!-- /gv:{name} -->"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            text = head + start + "\n" + body + "\n" + end + rest.split(end, 1)[1]
    page.write_text(text)


# -- printing -----------------------------------------------------------------------------------------------------
def fmt(entry: dict) -> str:
    if not entry or not entry.get("n"):
        return "no data"
    if "low" not in entry:
        return f"{entry['mean']:+.3f} (n={entry['n']})"
    return f"{entry['mean']:+.3f} [{entry['low']:+.3f}, {entry['high']:+.3f}] p={entry['p']:.2g} (n={entry['n']})"


def print_summary(summary: dict, indent: str = "") -> None:
    for key, value in summary.items():
        if isinstance(value, dict) and "mean" in value and "n" in value:
            print(f"{indent}{key}: {fmt(value)}")
        elif isinstance(value, dict):
            print(f"{indent}{key}:")
            print_summary(value, indent + "  ")
        else:
            print(f"{indent}{key}: {value}")


def options(parser) -> None:
    parser.add_argument("--late", type=int, default=300, help="claim 2 at equal steps: measured steps from this on")
    parser.add_argument("--json", help="write the summary here")
    parser.add_argument("--figures", help="write the plots into this directory")
    parser.add_argument("--csv", help="write the records (and training records) as CSV files with this prefix")
    parser.add_argument("--page", type=Path, help="rewrite the tables of this page (its <!-- gv:NAME --> blocks)")


def main() -> None:
    args, every, done = read_sweeps(__doc__.splitlines()[0], options)
    records, training, checks = records_of(done)
    print(compute_spent(every))
    print(f"trajectories: {checks}")
    summary = summarise(records, training, args.late)
    summary["checks"] = checks
    summary["compute"] = compute_spent(every)
    print_summary(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    blocks = tables(summary)
    blocks["compute"] = (
        f"From the run directories: {summary['compute']}; on a shared machine at `nice -n 19` a run's wall time "
        f"includes the time it waited for a core, so this overstates the CPU time. Trajectories: "
        f"{checks['complete']} with all four runs ended, {checks['same_params']} of them with equal final parameters "
        f"in all four; SG-B's var in the SVRG, GC and K-FAC runs of one trajectory: "
        + ("identical" if checks["sgb_max_rel_diff"] == 0 else f"relative difference at most {checks['sgb_max_rel_diff']:.1g}")
        + " (the same draws)."
    )
    if args.page:
        write_blocks(args.page, blocks)
    else:
        print("\n\n".join(blocks.values()))
    if args.figures and records:
        for path in figures(records, training, args.figures):
            print(f"wrote {path}")
    if args.csv:
        key = lambda r: (r["task"], r["duplicates"], r["lr"], r["seed"], r["step"], ESTIMATORS.index(r["estimator"]))  # noqa: E731
        write_csv(sorted(records, key=key), f"{args.csv}_records.csv", RECORD_COLUMNS)
        if training:
            order = lambda r: (r["task"], r["duplicates"], r["direction"], r["seed"])  # noqa: E731
            write_csv(sorted(training, key=order), f"{args.csv}_training.csv", TRAINING_COLUMNS)


if __name__ == "__main__":
    main()
