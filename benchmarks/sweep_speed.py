"""Sweep wall time: a fresh `python` process per run (backend `fresh`) against warm workers (backend `local`)
and population training (backend `population`).

    python benchmarks/sweep_speed.py [--tasks mnist1d_mlp digits_cnn] [--steps 1500] [--rounds 3] [--workers N]
                                     [--variants fresh warm population] [--per-run N]

The grid of each task: Adam at 4 learning rates (1e-3, 3e-3, 1e-2, 3e-2) x 4 seeds = 16 runs of `--steps`
steps, on `--workers` workers (default: one per core, as `optimlab compare` runs). Each variant runs in a
process of its own (`optimlab sweep SPEC --backend B` in a fresh temporary root), timed from the command's
start to its end, so each pays its own start-up (imports, the warm workers' fork server). The data is
generated and cached before timing. Variants alternate within each round (in a rotating order) and the
ratio fresh / variant is taken per round; the figures are the medians over rounds, so load from other
processes on a shared machine hits every variant alike.

`--per-run N` first times single runs of each task, one after another on an otherwise idle pool: N runs of
1 step and N of `--steps` steps forked from one warm server (fork to exit), and N runs of 1 step as fresh
processes. A 1-step run is the per-run cost outside training (start-up, set-up, evaluations, run records);
the difference between the two warm figures is the training itself. From them, the warm ceiling: the most
warm workers can gain on this task, were their runs to cost nothing but their training, (fresh 1-step run +
training) / warm run; a task that trains long next to a process's start-up cannot go faster by being warm.

Last line: RESULT <task>_fresh_s=<median> <task>_warm_s=<median> <task>_warm_speedup=<median ratio>
<task>_population_s=<median> <task>_population_speedup=<median ratio> ... and, with --per-run,
<task>_warm_run_1step_s=<median> <task>_warm_run_s=<median> <task>_fresh_run_1step_s=<median>
<task>_warm_ceiling=<ratio>
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from optimlab.sweep.execute import PYTHON, Launch, cpu_count, thread_env

VARIANTS = {"fresh": "fresh", "warm": "local", "population": "population"}
LRS = [1e-3, 3e-3, 1e-2, 3e-2]


def write_spec(folder: Path, task: str, steps: int, seeds: int) -> Path:
    spec = {
        "name": f"speed_{task}",
        "base": {"task": task, "optim": "adam", "train.steps": steps},
        "grid": {"optim.lr": LRS},
        "seeds": seeds,
    }
    path = folder / f"speed_{task}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_variant(spec: Path, backend: str, workers: int, root: Path) -> float:
    """Wall seconds of one whole `optimlab sweep` process; the root is emptied first."""
    shutil.rmtree(root, ignore_errors=True)
    command = [sys.executable, "-m", "optimlab", "sweep", str(spec), "--backend", backend, "--workers", str(workers),
               "--root", str(root), "--no-progress"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{backend} sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall


def train_argv(task: str, steps: int, seed: int, run_dir: Path) -> tuple[str, ...]:
    return (PYTHON, "-m", "optimlab", "train", f"task={task}", "optim=adam", f"train.steps={steps}", f"seed={seed}",
            f"run_dir={run_dir}", "log.progress=never")


def per_run_costs(task: str, steps: int, runs: int, folder: Path) -> dict[str, float]:
    """Median wall seconds of single runs, one after another: warm (1 step, `steps` steps) and fresh (1 step)."""
    from optimlab.sweep.warm import ForkServer, execute_warm

    env = thread_env(1)
    server = ForkServer()
    times: dict[str, list[float]] = {"warm_run_1step_s": [], "warm_run_s": [], "fresh_run_1step_s": []}
    execute_warm(server, Launch("start", "", train_argv(task, 1, 0, folder / "start"), env), lambda _: None)
    for i in range(runs):
        for name, n in (("warm_run_1step_s", 1), ("warm_run_s", steps)):
            run_dir = folder / f"{name}-{i}"
            start = time.perf_counter()
            code, _ = execute_warm(server, Launch(name, str(run_dir), train_argv(task, n, i, run_dir), env),
                                   lambda _: None)
            times[name].append(time.perf_counter() - start)
            if code != 0:
                raise SystemExit(f"warm run of {task} failed ({code})")
        argv = [sys.executable if a == PYTHON else a for a in train_argv(task, 1, i, folder / f"fresh-{i}")]
        start = time.perf_counter()
        subprocess.run(argv, env={**os.environ, **env}, capture_output=True, check=True)
        times["fresh_run_1step_s"].append(time.perf_counter() - start)
    costs = {f"{task}_{name}": statistics.median(values) for name, values in times.items()}
    training = costs[f"{task}_warm_run_s"] - costs[f"{task}_warm_run_1step_s"]
    costs[f"{task}_warm_ceiling"] = (costs[f"{task}_fresh_run_1step_s"] + training) / costs[f"{task}_warm_run_s"]
    return costs


def warm_data(task: str) -> None:
    """Generate and cache the task's data before any timing."""
    from optimlab.tasks import build_task

    build_task(task, {}, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["mnist1d_mlp", "digits_cnn"])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="0: only the single runs of --per-run")
    parser.add_argument("--workers", type=int, default=cpu_count())
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--per-run", type=int, default=0, metavar="N",
                        help="first time N single runs of each task, warm and fresh (see above)")
    args = parser.parse_args()
    if args.rounds == 0 and not args.per_run:
        parser.error("--rounds 0 measures nothing without --per-run")
    if "fresh" not in args.variants:
        parser.error("--variants must include fresh (the ratios are against it)")
    variants = {name: VARIANTS[name] for name in args.variants}
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"python {platform.python_version()}, {cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
          f"workers {args.workers}, "
          f"{len(LRS) * args.seeds} runs x {args.steps} steps per sweep, {args.rounds} rounds", flush=True)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sweep_speed-") as tmp:
        folder = Path(tmp)
        for task in args.tasks:
            warm_data(task)
            if args.per_run:
                costs = per_run_costs(task, args.steps, args.per_run, folder / f"{task}-per-run")
                results.update(costs)
                print(f"{task} single runs (load {os.getloadavg()[0]:.1f}): "
                      + " ".join(f"{k.removeprefix(task + '_')}={v:.3f}" for k, v in costs.items()), flush=True)
            if args.rounds == 0:  # --per-run alone
                continue
            spec = write_spec(folder, task, args.steps, args.seeds)
            walls: dict[str, list[float]] = {name: [] for name in variants}
            names = list(variants)
            for round_ in range(args.rounds):
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:  # each variant first in turn
                    walls[name].append(run_variant(spec, variants[name], args.workers, folder / name))
                print(f"{task} round {round_} (load {os.getloadavg()[0]:.1f}): "
                      + " ".join(f"{n}={walls[n][-1]:.1f}s" for n in names), flush=True)
            results[f"{task}_fresh_s"] = statistics.median(walls["fresh"])
            for name in names[1:]:
                ratios = [f / w for f, w in zip(walls["fresh"], walls[name])]
                results[f"{task}_{name}_s"] = statistics.median(walls[name])
                results[f"{task}_{name}_speedup"] = statistics.median(ratios)
                print(f"{task}: {name} median {results[f'{task}_{name}_s']:.1f}s against fresh "
                      f"{results[f'{task}_fresh_s']:.1f}s, speedup per round {[round(r, 2) for r in ratios]}, "
                      f"median {results[f'{task}_{name}_speedup']:.2f}", flush=True)
    print("RESULT " + " ".join(f"{k}={v:.3f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
