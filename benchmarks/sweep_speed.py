"""Sweep wall time: a fresh `python` process per run (backend `fresh`) against warm workers (backend `local`)
and population training (backend `population`).

    python benchmarks/sweep_speed.py [--tasks mnist1d_mlp digits_cnn] [--steps 1500] [--rounds 3] [--workers N]
                                     [--variants fresh warm population]

The grid of each task: Adam at 4 learning rates (1e-3, 3e-3, 1e-2, 3e-2) x 4 seeds = 16 runs of `--steps`
steps, on `--workers` workers (default: one per core, as `optimlab compare` runs). Each variant runs in a
process of its own (`optimlab sweep SPEC --backend B` in a fresh temporary root), timed from the command's
start to its end, so each pays its own start-up (imports, the warm workers' fork server). The data is
generated and cached before timing. Variants alternate within each round (in a rotating order) and the
ratio fresh / variant is taken per round; the figures are the medians over rounds, so load from other
processes on a shared machine hits every variant alike.

Last line: RESULT <task>_fresh_s=<median> <task>_warm_s=<median> <task>_warm_speedup=<median ratio>
<task>_population_s=<median> <task>_population_speedup=<median ratio> ...
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

from optimlab.sweep.execute import cpu_count

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


def warm_data(task: str) -> None:
    """Generate and cache the task's data before any timing."""
    from optimlab.tasks import build_task

    build_task(task, {}, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["mnist1d_mlp", "digits_cnn"])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=cpu_count())
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
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
