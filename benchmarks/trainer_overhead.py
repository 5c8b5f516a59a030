"""Trainer overhead: steps per second of `optimlab.train.train` against a hand-written PyTorch loop.

Same task (data and model init), batch, optimizer and number of steps, in one process, interleaved; each
figure is the median over rounds of the ratio of the two times.

- `overhead` (steady state): seconds per step between the log at step `--from-step` and the last step. For
  optimlab this comes from `metrics.jsonl` timestamps, so it includes sampling, loss-window bookkeeping and
  the periodic logging; for the hand-written loop from clock readings at the same steps.
- `end_to_end`: the run's `wall_time` (the loop from the evaluation at step 0 to the summary: evaluations,
  final checkpoint and fsynced records included) against the hand-written loop's whole time.

    python benchmarks/trainer_overhead.py --steps 3000 --repeats 5

Last line: `RESULT overhead=<fraction> end_to_end=<fraction>` (0.02 means the optimlab loop is 2 % slower).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from optimlab.config import load_config
from optimlab.optim import build_optimizer
from optimlab.tasks import build_task
from optimlab.train import train


def hand_written_loop(task_name, optim, lr, batch_size, steps, seed, from_step) -> tuple[float, float]:
    """What a researcher writes by hand: shuffled batches, forward, loss, backward, step.

    Returns (seconds from `from_step` to the end, whole seconds)."""
    torch.manual_seed(seed)
    task = build_task(task_name)
    model = task.model
    optimizer = build_optimizer(optim, model.parameters(), lr=lr)
    x, y = task.train.tensors
    generator = torch.Generator().manual_seed(seed)
    per_epoch = len(x) // batch_size
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        if step == from_step:
            steady = time.perf_counter()
        if step % per_epoch == 0:
            order = torch.randperm(len(x), generator=generator)
        index = order[(step % per_epoch) * batch_size : (step % per_epoch + 1) * batch_size]
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    end = time.perf_counter()
    return end - steady, end - start


def optimlab_loop(task_name, optim, lr, batch_size, steps, seed, from_step) -> tuple[float, float]:
    """`optimlab.train.train` on the same setting: (seconds from `from_step` to the end, wall_time)."""
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config(
            [
                f"task={task_name}", f"task.batch_size={batch_size}", f"optim={optim}", f"optim.lr={lr}",
                f"train.steps={steps}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}",
                f"train.log_every={from_step}", f"seed={seed}", f"run_dir={run_dir}", "log.progress=never",
            ]
        )
        wall = train(cfg)["wall_time"]
        records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
        times = {r["step"]: r["time"] for r in records if "train/loss" in r}
        return times[steps] - times[from_step], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d_mlp")
    parser.add_argument("--optim", default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--from-step", type=int, default=100, help="steady state starts here (a log step)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.steps % args.from_step:
        parser.error("--steps must be a multiple of --from-step (both are log steps)")
    torch.set_num_threads(args.threads)
    setting = (args.task, args.optim, args.lr, args.batch_size, args.steps, 0, args.from_step)

    build_task(args.task)  # warm the data cache
    hand_written_loop(*setting[:4], 200, 0, 100)  # warm-up
    ours, theirs = [], []
    for _ in range(args.repeats):
        theirs.append(hand_written_loop(*setting))
        ours.append(optimlab_loop(*setting))
    # Each round runs both back to back, so medians of per-round ratios cancel slow drifts in machine load.
    steady = statistics.median(o[0] / t[0] for o, t in zip(ours, theirs)) - 1
    end_to_end = statistics.median(o[1] / t[1] for o, t in zip(ours, theirs)) - 1
    n = args.steps - args.from_step
    print(f"task={args.task} optim={args.optim} batch={args.batch_size} steps={args.steps} threads={args.threads}")
    for name, runs in (("hand-written loop", theirs), ("optimlab loop", ours)):
        rate = n / statistics.median(r[0] for r in runs)
        whole = statistics.median(r[1] for r in runs)
        print(f"{name:18s} {rate:8.1f} steps/s from step {args.from_step};  whole run {whole:.3f} s (median of {args.repeats})")
    print(f"RESULT overhead={steady:.4f} end_to_end={end_to_end:.4f}")


if __name__ == "__main__":
    main()
