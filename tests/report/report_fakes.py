"""Fake run directories written per docs/run-directory.md, with known numbers.

Trajectories are piecewise linear: the validation main metric goes from `initial` at step 0 to the run's
final value at step `reach` and stays there; evaluations every 10 steps; `time` = step * `step_time`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import yaml

STEPS = 100
EVAL_EVERY = 10


def write_run(
    root: Path,
    name: str,
    *,
    task: str = "cls",
    optim: str = "sgd",
    lr: float = 0.1,
    seed: int = 0,
    val: float = 0.8,
    test: float | None = None,
    status: str = "completed",
    hyper: str = "none",
    schedule: str = "constant",
    main_metric: str = "accuracy",
    higher: bool = True,
    initial: float = 0.1,
    reach: int = 80,
    step_time: float = 0.01,
    diverged_step: int = 30,
    val_loss: float = 0.5,
    configuration_hash: str | None = None,
    strict: bool = False,
    extra: dict[str, Callable[[int], float]] | None = None,
) -> Path:
    """One fake run directory. `configuration_hash` is written to summary.json when given (runs written
    before the field existed have none); `strict` writes non-finite numbers as null (as the trainer does
    now) instead of bare NaN tokens; `extra` maps more metrics.jsonl keys to a function of the step."""
    run = root / name
    run.mkdir(parents=True)
    config = {
        "seed": seed,
        "run_dir": str(run),
        "task": {"name": task, "batch_size": 32, "eval_batch_size": 1000, "data_dir": "/nowhere", "width": 64},
        "optim": {"name": optim, "lr": lr, "weight_decay": 0.0},
        "schedule": {"name": schedule, "warmup_steps": 0, "T_0": 50},
        "hyper": {"name": hyper, "hyper_lr": 1e-8},
        "train": {"steps": STEPS, "log_every": 10, "eval_every": EVAL_EVERY, "device": "cpu", "resume": True},
        "log": {"tensorboard": False},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    last = diverged_step if status == "diverged" else STEPS
    if status == "failed":
        last = 20
    lines = []
    for step in range(0, last + 1, EVAL_EVERY):
        record = {"step": step, "time": step * step_time}
        if step > 0:
            bad = status == "diverged" and step >= diverged_step
            record["train/loss"] = math.nan if bad else 2.0 - 1.5 * min(1, step / reach)
            moving = hyper != "none" or schedule != "constant"
            record["lr"] = lr * (1 + 0.5 * math.sin(step / 15)) if moving else lr
            for key, value in (extra or {}).items():
                record[key] = value(step)
        if not (status == "diverged" and step >= diverged_step):
            record[f"val/{main_metric}"] = initial + (val - initial) * min(1.0, step / reach)
            if main_metric != "loss":
                record["val/loss"] = 2.0 - 1.5 * min(1, step / reach)
        if step == STEPS and status == "completed":
            record[f"test/{main_metric}"] = test
            if main_metric != "loss":
                record["test/loss"] = 1.0 - test
        lines.append(_dumps(record, strict))
    text = "\n".join(lines) + "\n"
    if status == "failed":
        text += '{"step": 30, "ti'  # a partial last line, as after kill -9
    (run / "metrics.jsonl").write_text(text)
    final = {}
    if status == "completed":
        final = {"train/loss": 0.5, f"val/{main_metric}": val, f"test/{main_metric}": test}
        if main_metric != "loss":
            final.update({"val/loss": val_loss, "test/loss": 1.0 - test})
    elif status == "diverged":
        final = {"train/loss": math.nan}
    summary = {
        "status": status,
        "step": last,
        "steps": STEPS,
        "task": task,
        "optim": optim,
        "hyper": hyper,
        "schedule": schedule,
        "seed": seed,
        "config_hash": "0000000000",
        "main_metric": main_metric,
        "higher_is_better": higher,
        "final": final,
        "best": {"step": last, f"val/{main_metric}": val} if status == "completed" else {},
        "diverged_step": diverged_step if status == "diverged" else None,
        "error": "RuntimeError: out of memory\nTraceback ..." if status == "failed" else None,
        "wall_time": last * step_time,
        "params_sha256": "0" * 64,
        "versions": {"optimlab": "0.1.0"},
        "device": "cpu",
        "git_commit": None,
    }
    if configuration_hash is not None:
        summary["configuration_hash"] = configuration_hash
    (run / "summary.json").write_text(_dumps(summary, strict))
    return run


def _dumps(record: dict, strict: bool) -> str:
    if not strict:
        return json.dumps(record)  # NaN as a bare token, as run directories written before strict JSON
    clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
    if isinstance(clean.get("final"), dict):
        clean["final"] = {k: None if isinstance(v, float) and not math.isfinite(v) else v
                          for k, v in clean["final"].items()}
    return json.dumps(clean, allow_nan=False)


# (task, optim, hyper, schedule, lr) -> per seed (val, test); None marks a diverged/failed seed.
CLS = dict(task="cls", main_metric="accuracy", higher=True, initial=0.1)
QUAD = dict(task="quad", main_metric="loss", higher=False, initial=2.0)
PLAN = [
    # cls: accuracy, higher is better
    (CLS, "sgd", "none", "constant", 0.01, [(0.70, 0.69), (0.72, 0.70), (0.71, 0.70)], 80, 0.01),
    (CLS, "sgd", "none", "constant", 0.1, [(0.85, 0.84), (0.87, 0.86), (0.86, 0.83)], 80, 0.01),
    (CLS, "sgd", "none", "constant", 1.0, ["diverged", (0.95, 0.94), (0.96, 0.95)], 80, 0.01),
    (CLS, "adam", "none", "constant", 1e-3, [(0.88, 0.88), (0.89, 0.87), (0.90, 0.89)], 40, 0.02),
    (CLS, "adam", "none", "constant", 1e-2, [(0.80, 0.79), (0.82, 0.80), "failed"], 40, 0.02),
    (CLS, "sgd", "marthe", "constant", 0.1, [(0.83, 0.82), (0.84, 0.84)], 60, 0.03),
    (CLS, "sgd", "none", "sgdr", 0.1, [(0.86, 0.85), (0.87, 0.85)], 60, 0.01),
    # quad: loss, lower is better
    (QUAD, "sgd", "none", "constant", 0.1, [(0.30, 0.31), (0.32, 0.33)], 80, 0.01),
    (QUAD, "sgd", "none", "constant", 0.5, [(0.20, 0.21), (0.22, 0.25)], 80, 0.01),
    (QUAD, "adam", "none", "constant", 0.01, [(0.25, 0.26), (0.26, 0.27)], 40, 0.02),
]


def write_plan(root: Path) -> Path:
    for task, optim, hyper, schedule, lr, seeds, reach, step_time in PLAN:
        for seed, outcome in enumerate(seeds):
            name = f"{task['task']}/{optim}-{hyper}-{schedule}-lr{lr}-s{seed}"
            common = dict(task, optim=optim, hyper=hyper, schedule=schedule, lr=lr, seed=seed, reach=reach,
                          step_time=step_time)  # fmt: skip
            if isinstance(outcome, str):
                write_run(root, name, status=outcome, val=0.5, **common)
            else:
                write_run(root, name, val=outcome[0], test=outcome[1], **common)
    return root
