"""Trainer overhead: steps per second of `optimlab.train.train` against a hand-written PyTorch loop.

Same task (data and model init), batch, optimizer and number of steps, in one process, interleaved; the
overhead is the median over rounds of the ratio of the two times. Our time is the run's `wall_time` (the loop from its first step to its summary,
including the evaluations at step 0 and at the end, logging and the final checkpoint); the hand-written
loop only samples batches and steps.

    python benchmarks/trainer_overhead.py --steps 3000 --repeats 5

Last line: `RESULT overhead=<fraction>` (0.02 means the optimlab loop is 2 % slower).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from optimlab.config import load_config
from optimlab.optim import build_optimizer
from optimlab.tasks import build_task
from optimlab.train import train


def hand_written_loop(task_name: str, optim: str, lr: float, batch_size: int, steps: int, seed: int) -> float:
    """What a researcher writes by hand: shuffled batches, forward, loss, backward, step."""
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
        if step % per_epoch == 0:
            order = torch.randperm(len(x), generator=generator)
        index = order[(step % per_epoch) * batch_size : (step % per_epoch + 1) * batch_size]
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def optimlab_loop(task_name: str, optim: str, lr: float, batch_size: int, steps: int, seed: int) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config(
            [
                f"task={task_name}", f"task.batch_size={batch_size}", f"optim={optim}", f"optim.lr={lr}",
                f"train.steps={steps}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}",
                "train.log_every=100", f"seed={seed}", f"run_dir={run_dir}", "log.progress=never",
            ]
        )
        return train(cfg)["wall_time"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d_mlp")
    parser.add_argument("--optim", default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setting = (args.task, args.optim, args.lr, args.batch_size, args.steps, 0)

    build_task(args.task)  # warm the data cache
    hand_written_loop(*setting[:4], 200, 0)  # warm-up
    ours, theirs = [], []
    for _ in range(args.repeats):
        theirs.append(hand_written_loop(*setting))
        ours.append(optimlab_loop(*setting))
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    # Each round runs both back to back, so the median of per-round ratios cancels slow drifts in machine load.
    overhead = statistics.median(o / t for o, t in zip(ours, theirs)) - 1
    print(f"task={args.task} optim={args.optim} batch={args.batch_size} steps={args.steps} threads={args.threads}")
    print(f"hand-written loop: {args.steps / theirs_s:8.1f} steps/s  (median of {args.repeats}: {theirs_s:.3f} s)")
    print(f"optimlab loop:     {args.steps / ours_s:8.1f} steps/s  (median of {args.repeats}: {ours_s:.3f} s)")
    print(f"RESULT overhead={overhead:.4f}")


if __name__ == "__main__":
    main()
