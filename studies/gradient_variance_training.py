"""Training with each direction of the gradient-variance study, in one process: final metrics per run.

For every task, data variant, direction and seed, one `optimlab train` run (through `optimlab.train.train`,
so each run is exactly the command line's) with plain SGD at one learning rate:

    sgd     the mini-batch gradient            gc      gradient clustering's stratified estimate
    svrg    the SVRG control variate           kfac    the K-FAC-preconditioned gradient (precond=kfac)
    gc_sampled  gc with train.sampler=stratified (the stratified batch is the training batch)

One JSON line per run goes to `--out`: the configuration, the summary's final training/validation/test
loss and accuracy, and the run's wall and CPU seconds. Run directories go under `--runs` (a scratch
directory: only the JSON lines are the study's record).

    python studies/gradient_variance_training.py --tasks mnist1d_mlp digits_cnn --seeds 0 1 2 3 4 \\
        --steps 3000 --out training.jsonl --runs /tmp/gv_runs
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from optimlab.config import load_config
from optimlab.train import train

DIRECTIONS = {
    "sgd": [],
    "svrg": ["direction=svrg", "direction.snapshot_every={snapshot}"],
    "gc": ["direction=gc", "direction.snapshot_every={snapshot}", "direction.clusters=10", "direction.citers=3"],
    "kfac": ["precond=kfac"],
    # GC-SGD with the stratified batches as the training batches (no extra gradient per step)
    "gc_sampled": ["direction=gc", "direction.snapshot_every={snapshot}", "direction.clusters=10", "direction.citers=3",
                   "train.sampler=stratified"],  # fmt: skip
}


def overrides(task: str, duplicates: int, copies: int, direction: str, args: argparse.Namespace, seed: int) -> list[str]:
    data = [f"task.duplicates={duplicates}", f"task.duplicate_copies={copies}"] if duplicates else []
    extra = [o.format(snapshot=args.snapshot_every) for o in DIRECTIONS[direction]]
    return [f"task={task}", *data, "optim=sgd", f"optim.lr={args.lr}", f"train.steps={args.steps}",
            f"train.eval_every={args.steps}", f"seed={seed}", *extra]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["mnist1d_mlp", "digits_cnn"])
    parser.add_argument("--duplicates", nargs="+", type=int, default=[0, 10], help="0: the task's own data")
    parser.add_argument("--copies", type=int, default=200)
    parser.add_argument("--directions", nargs="+", default=["sgd", "svrg", "gc", "kfac"], choices=list(DIRECTIONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--snapshot-every", type=int, default=500, help="SVRG snapshots and GC clusterings")
    parser.add_argument("--out", default="gradient_variance_training.jsonl")
    parser.add_argument("--runs", default="runs/gradient_variance_training")
    args = parser.parse_args()
    with Path(args.out).open("a") as out:
        for seed in args.seeds:
            for task in args.tasks:
                for duplicates in args.duplicates:
                    for direction in args.directions:
                        name = f"{task}-d{duplicates}-{direction}-s{seed}"
                        cfg = load_config(
                            [*overrides(task, duplicates, args.copies, direction, args, seed),
                             f"run_dir={Path(args.runs) / name}", "train.resume=false"]  # fmt: skip
                        )
                        wall, cpu = time.perf_counter(), time.process_time()
                        summary = train(cfg)
                        record = {"task": task, "duplicates": duplicates, "direction": direction, "seed": seed,
                                  "lr": args.lr, "steps": args.steps, "status": summary["status"],
                                  **summary["final"], "wall_s": time.perf_counter() - wall,
                                  "cpu_s": time.process_time() - cpu}  # fmt: skip
                        out.write(json.dumps(record) + "\n")
                        out.flush()
                        print(name, record["status"], f"{record['cpu_s']:.1f} cpu-s", flush=True)


if __name__ == "__main__":
    main()
