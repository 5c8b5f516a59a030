"""Sweep backends: parallel efficiency of the local pool, and Ray's per-run overhead.

    python benchmarks/sweep.py [--runs 8] [--workers 2] [--steps 300] [--no-ray]

Measures, in one process and on the same machine state:
  single   wall time of one run through the local backend with 1 worker (the run alone, all cores idle
           but one, with the thread count a pool run gets: max(1, cores // workers));
  local    wall time of N equal runs (same config, different seeds) on the local backend with `workers`;
  ray      the same N runs on the Ray backend (a private local Ray instance, started inside the timing).
The ideal local time is N x single / workers; efficiency = ideal / actual (1.0 = perfect scaling). Ray's
overhead per run is (ray wall - local wall) / N x workers: the extra time each run slot spends, Ray start-up
included. Every run is a full `optimlab train` subprocess (MNIST-1D MLP), as in a real sweep.

On a shared machine other processes steal cores; the single run and the pool are measured in alternating
rounds (--rounds) and the best of each is kept. The CPU seconds per run (children's user+sys time) are
printed too: if they are equal alone and in the pool, the runs do not slow each other down and any loss of
efficiency is the machine's other load, not the pool.

The pool's own overhead is measured apart with runs that only wait (2 s, no CPU), which the machine's load
does not disturb.

Last line: RESULT local_efficiency=<x> ray_overhead_s=<y> cpu_per_run_ratio=<alone / in the pool>
pool_efficiency_waiting=<z>
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from optimlab.sweep import parse_spec, run_sweep
from optimlab.sweep.execute import cpu_count, threads_per_run


def spec(name: str, seeds: list[int], steps: int):
    return parse_spec({
        "name": name,
        "base": {"task": "mnist1d_mlp", "optim": "adam", "train.steps": steps, "train.eval_every": steps,
                 "train.checkpoint_every": steps},
        "grid": {"optim.lr": 3e-3},
        "seeds": seeds,
    })


# A stand-in run that only waits (no CPU): isolates the pool's own overhead from the machine's CPU load.
SLEEPER = (
    "import json, pathlib, sys, time; time.sleep(float(sys.argv[2])); d = pathlib.Path(sys.argv[1]); "
    "d.mkdir(parents=True, exist_ok=True); (d / 'summary.json').write_text(json.dumps({'status': 'completed'}))"
)


def sleeper(seconds: float):
    return lambda run: [sys.executable, "-c", SLEEPER, str(run.run_dir), str(seconds)]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(name: str, seeds: list[int], steps: int, root: Path, **kwargs) -> tuple[float, float]:
    """(wall seconds, CPU seconds per run of the runs' processes) of one sweep."""
    cpu, start = children_cpu(), time.perf_counter()
    result = run_sweep(spec(name, seeds, steps), root=root, progress=False, **kwargs)
    wall = time.perf_counter() - start
    if result.exit_code != 0:
        raise SystemExit(f"{name}: runs did not complete: {result.counts}")
    return wall, (children_cpu() - cpu) / len(seeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    threads = threads_per_run(args.workers)
    root = Path(tempfile.mkdtemp(prefix="optimlab-bench-sweep-"))
    load = os.getloadavg()[0]
    try:
        timed("warmup", [1000], args.steps, root, workers=1, cpus_per_run=threads)  # data cache, page cache
        singles, locals_, seed = [], [], 0
        for r in range(args.rounds):  # alternate, so that both see the same drift in the machine's load
            singles.append(timed(f"single{r}", [2000 + r], args.steps, root, workers=1, cpus_per_run=threads))
            seeds = list(range(seed, seed + args.runs))
            seed += args.runs
            locals_.append(timed(f"local{r}", seeds, args.steps, root, workers=args.workers))
        (single, single_cpu), (local, local_cpu) = min(singles), min(locals_)
        ideal = args.runs * single / args.workers
        efficiency = ideal / local
        print(f"machine: {cpu_count()} cores, load average {load:.2f} at start, {os.getloadavg()[0]:.2f} now; "
              f"{args.runs} runs of {args.steps} steps, {args.workers} workers, {threads} thread(s) per run")
        print(f"one run alone     {single:7.2f} s  (rounds: {', '.join(f'{w:.2f}' for w, _ in singles)}); "
              f"{single_cpu:.2f} CPU s")
        print(f"local, {args.workers} workers  {local:7.2f} s  (rounds: {', '.join(f'{w:.2f}' for w, _ in locals_)}); "
              f"{local_cpu:.2f} CPU s per run")
        print(f"ideal {ideal:.2f} s = {args.runs} x {single:.2f} / {args.workers}; efficiency {efficiency:.3f}")
        sleep_single, _ = timed("sleep1", [3000], args.steps, root, workers=1, command=sleeper(2.0))
        sleep_pool, _ = timed("sleepN", list(range(3001, 3001 + args.runs)), args.steps, root, workers=args.workers,
                              command=sleeper(2.0))
        sleep_efficiency = args.runs * sleep_single / args.workers / sleep_pool
        print(f"waiting runs (2 s, no CPU): one {sleep_single:.2f} s, {args.runs} on {args.workers} workers "
              f"{sleep_pool:.2f} s; pool efficiency {sleep_efficiency:.3f} (the pool's own overhead)")
        overhead = float("nan")
        if not args.no_ray:
            ray, _ = timed("ray", list(range(seed, seed + args.runs)), args.steps, root, workers=args.workers,
                           backend="ray")
            overhead = (ray - local) / args.runs * args.workers
            print(f"ray, {args.workers} workers    {ray:7.2f} s  (incl. ray.init; overhead per run {overhead:+.2f} s)")
        print(f"RESULT local_efficiency={efficiency:.3f} ray_overhead_s={overhead:.2f} "
              f"cpu_per_run_ratio={single_cpu / local_cpu:.3f} pool_efficiency_waiting={sleep_efficiency:.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
