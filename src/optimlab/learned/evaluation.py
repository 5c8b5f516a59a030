"""The evaluation protocol shared by `optimlab evaluate` (learned optimizers) and `optimlab baseline`
(analytical optimizers): every optimizer trains fresh models with the ordinary trainer on each task for a
fixed number of steps, `repeats` seeds each, and is scored by log(best validation loss) over the run (the
metric of Optimizer Amalgamation's evaluation, Huang et al. 2022). A baseline's learning rate is chosen per
task from a grid by the same score.

    <run_dir>/runs/<task>/<label>/seed<r>/      ordinary trainer run directories (`optimlab report` reads them)
    <run_dir>/evaluation.json                    per task and optimizer: scores, mean, 2 standard errors
    <run_dir>/evaluation.md                      the same as a table
    <run_dir>/plots/<task>.png                   losses vs step: mean and min-max band over seeds

`suite=amalgamation` runs a named evaluation suite instead of plain tasks (`optimlab.learned.suite`): each
problem brings its own task options, batch size, length (25 epochs), validation cadence (every epoch) and
trainer keys (DP-SGD), with 10 seeds by default.

Error bars are 2 standard errors of the per-replicate means when several learned-optimizer replicates
(`paths=[...]`) are given, else of the per-seed scores.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from optimlab import rundir
from optimlab.errors import ConfigError, unknown_name

SUITE_REPEATS = 10  # the original's evaluation repeats


@dataclass
class EvaluateConfig:
    paths: list[str] = field(default_factory=list)  # evaluate: learned-optimizer directories or shipped names
    path: Optional[str] = None  # evaluate: shorthand for one path
    optim: str = "adam"  # baseline: a registered optimizer
    lrs: list[float] = field(default_factory=lambda: [1e-3, 3e-3, 1e-2, 3e-2])  # baseline: the lr grid
    lr: float = 1.0  # evaluate: the learned optimizer's step multiplier
    suite: Optional[str] = None  # a named evaluation suite (amalgamation): `tasks` are its problems
    tasks: list[str] = field(default_factory=list)  # default [mnist1d_mlp]; with a suite, its problems (default all)
    repeats: Optional[int] = None  # seeds per task and optimizer (default 3; 10 with a suite)
    steps: Optional[int] = None  # default 1000; with a suite, each problem's 25 epochs
    eval_every: Optional[int] = None  # default 100; with a suite, one epoch
    batch_size: Optional[int] = None  # default 128; a suite sets each problem's own
    seed: int = 0
    run_dir: str = "runs/evaluate"
    train: list[str] = field(
        default_factory=list
    )  # extra trainer overrides for every run, e.g. ["train.clip_grad_norm=1"]
    options: dict = field(default_factory=dict)  # per-task options: options.mnist1d_mlp.width=32
    plots: bool = True  # <run_dir>/plots/<task>.png: losses vs step, mean and min-max band over seeds
    overlay: list[str] = field(default_factory=list)  # other evaluation run_dirs drawn on the same plots (a baseline)


def load_evaluate_config(overrides: list[str]) -> EvaluateConfig:
    items = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        items.append(item)
    try:
        tree = OmegaConf.from_dotlist(items)
        known = set(EvaluateConfig.__dataclass_fields__)
        for key in tree:
            if key not in known:
                raise unknown_name("key", str(key), known)
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvaluateConfig), tree))
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or ""
        raise ConfigError(f"key {key!r}: {str(error).splitlines()[0]}") from None
    if cfg.path:
        cfg.paths = [cfg.path, *cfg.paths]
    for key in ("repeats", "steps", "eval_every", "batch_size"):
        if getattr(cfg, key) is not None and getattr(cfg, key) <= 0:
            raise ConfigError(f"key {key!r}: must be positive, got {getattr(cfg, key)}")
    for other in cfg.overlay:
        if not (Path(other) / "evaluation.json").is_file():
            raise ConfigError(
                f"key 'overlay': {other} holds no evaluation.json (an optimlab evaluate/baseline run_dir)"
            )
    if cfg.suite is not None:
        from optimlab.learned.suite import suite_problems

        if cfg.batch_size is not None:
            raise ConfigError(f"key 'batch_size': suite {cfg.suite!r} sets each problem's batch size")
        cfg.tasks = [p.name for p in suite_problems(cfg.suite, cfg.tasks)]
        cfg.repeats = cfg.repeats or SUITE_REPEATS
        return cfg
    cfg.tasks = cfg.tasks or ["mnist1d_mlp"]
    cfg.repeats, cfg.steps = cfg.repeats or 3, cfg.steps or 1000
    cfg.eval_every, cfg.batch_size = cfg.eval_every or 100, cfg.batch_size or 128
    return cfg


def best_log_val_loss(run_dir: Path) -> float:
    """log of the smallest validation loss logged by a trainer run (inf when none is finite)."""
    best = math.inf
    path = Path(run_dir) / rundir.METRICS
    for line in path.read_text().splitlines() if path.is_file() else []:
        value = json.loads(line).get("val/loss")
        if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
            best = min(best, value)
    return math.log(best) if math.isfinite(best) else math.inf


def mean_and_2se(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values) or not values:
        return math.inf, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, 2 * math.sqrt(var / len(values))


def _train_one(cfg: EvaluateConfig, task: str, optim_overrides: list[str], seed: int, run_dir: Path) -> float:
    from optimlab.config import load_config
    from optimlab.train import train

    overrides = [*_problem_overrides(cfg, task), *optim_overrides, f"seed={seed}", f"run_dir={run_dir}",
                 "log.progress=never", *cfg.train]  # fmt: skip
    summary = train(load_config(overrides))
    if summary["status"] not in rundir.HAS_RESULT:
        raise ConfigError(f"run {run_dir} ended with status {summary['status']!r}: {summary.get('error')}")
    return best_log_val_loss(run_dir)


def _problem_overrides(cfg: EvaluateConfig, task: str) -> list[str]:
    """Task, options, batch size, length and validation cadence of one task (or suite problem)."""
    options = cfg.options.get(task) or {}
    if cfg.suite is not None:
        from optimlab.learned.suite import suite_problems, trainer_overrides

        (problem,) = suite_problems(cfg.suite, [task])
        return trainer_overrides(problem, steps=cfg.steps, eval_every=cfg.eval_every, options=options)
    return [
        f"task={task}", f"task.batch_size={cfg.batch_size}", f"train.steps={cfg.steps}",
        f"train.eval_every={cfg.eval_every}", f"train.checkpoint_every={cfg.steps}",
        *(f"task.{k}={v}" for k, v in options.items()),
    ]  # fmt: skip


def run_protocol(cfg: EvaluateConfig, entries: list[tuple[str, list[str], str]]) -> dict[str, Any]:
    """Train every (label, optimizer overrides, replicate) entry on every task and seed; returns per task and
    label {'scores': [[per seed] per replicate], 'mean', 'two_se'}."""
    out: dict[str, Any] = {}
    root = Path(cfg.run_dir)
    for task in cfg.tasks:
        results: dict[str, dict] = {}
        for label, optim_overrides, replicate in entries:
            scores = [
                _train_one(
                    cfg, task, optim_overrides, cfg.seed + r, root / "runs" / task / label / f"seed{cfg.seed + r}"
                )
                for r in range(cfg.repeats)
            ]
            results.setdefault(label, {"replicates": {}})["replicates"][replicate] = scores
        for entry in results.values():
            per_replicate = list(entry["replicates"].values())
            if len(per_replicate) > 1:
                values = [sum(s) / len(s) for s in per_replicate]
            else:
                values = per_replicate[0]
            entry["mean"], entry["two_se"] = mean_and_2se(values)
        out[task] = results
    return out


def evaluate_learned(cfg: EvaluateConfig) -> dict[str, Any]:
    from optimlab.learned.package import weights_sha256

    if not cfg.paths:
        raise ConfigError("key 'path': give the learned optimizer to evaluate (path=DIR or paths=[DIR,...])")
    entries = []
    for i, path in enumerate(cfg.paths):
        try:
            sha = weights_sha256(path)
        except ConfigError as error:
            raise ConfigError(f"key 'paths': {str(error).removeprefix('optim.path: ')}") from None
        label = f"learned-{sha[:10]}"
        entries.append(
            (label, ["optim=learned", f"optim.path={path}", f"optim.sha256={sha}", f"optim.lr={cfg.lr}"], str(i))
        )
    if len(entries) > 1:  # replicates of one optimizer: one label, scored over the replicates' means
        entries = [(f"learned/replicate{replicate}", overrides, replicate) for _, overrides, replicate in entries]
    results = run_protocol(cfg, entries)
    if len(cfg.paths) > 1:
        results = {task: _merge_replicates(res) for task, res in results.items()}
    return _write(cfg, "evaluate", results)


def _merge_replicates(results: dict) -> dict:
    merged = {"replicates": {}}
    for entry in results.values():
        merged["replicates"].update(entry["replicates"])
    values = [sum(s) / len(s) for s in merged["replicates"].values()]
    merged["mean"], merged["two_se"] = mean_and_2se(values)
    return {"learned": merged}


def evaluate_baseline(cfg: EvaluateConfig) -> dict[str, Any]:
    from optimlab.optim import get_optimizer_class

    get_optimizer_class(cfg.optim)
    entries = [(f"{cfg.optim}-lr{lr:g}", [f"optim={cfg.optim}", f"optim.lr={lr}"], "0") for lr in cfg.lrs]
    results = run_protocol(cfg, entries)
    for res in results.values():
        finite = {k: v for k, v in res.items() if math.isfinite(v["mean"])}
        best = min(finite, key=lambda k: finite[k]["mean"]) if finite else None
        res["best"] = best
    return _write(cfg, "baseline", results)


def _write(cfg: EvaluateConfig, kind: str, results: dict) -> dict:
    root = Path(cfg.run_dir)
    report = {
        "kind": kind,
        "suite": cfg.suite,
        "steps": cfg.steps,
        "repeats": cfg.repeats,
        "metric": "log(best validation loss)",
        "results": results,
    }
    if cfg.plots:
        from optimlab.learned.evaluation_plots import plot_tasks

        shown = {
            task: [res["best"]] if res.get("best") else [k for k in res if k != "best"] for task, res in results.items()
        }
        report["plots"] = [str(path) for path in plot_tasks(root, shown, cfg.overlay)]
    rundir.write_json(root / "evaluation.json", report)
    lines = ["| task | optimizer | mean log best val loss | ± 2 SE |", "|---|---|---|---|"]
    for task, res in results.items():
        for label, entry in res.items():
            if label == "best":
                continue
            mark = " (best lr)" if res.get("best") == label else ""
            lines.append(f"| {task} | {label}{mark} | {entry['mean']:.4f} | {entry['two_se']:.4f} |")
    (root / "evaluation.md").write_text("\n".join(lines) + "\n")
    return report
