"""Trainer overhead: time per step of `optimlab.train.train` against a hand-written PyTorch loop.

Same task (data and model init), batch, optimizer and number of steps, in one process. The two loops run
in alternating order, round after round (hand-written first in even rounds, optimlab first in odd ones), so
slow drifts of the machine's load and any first-or-second advantage fall on both; each figure is the median
and interquartile range over rounds of the per-round ratio of the two times, minus 1. Both clocks are read:
wall time (`time.perf_counter`) and this process's CPU time (`time.process_time`, all threads), which is
less sensitive to other processes taking the cores.

- `overhead` (steady state): time between the log at step `--from-step` and the last step. For optimlab the
  clocks are read as each `metrics.jsonl` record is written (so sampling, the loss window and the periodic
  logging are included); for the hand-written loop at the same steps.
- `end_to_end`: the whole call on both sides: building the task, model and optimizer and training; for
  optimlab also the config, the evaluations at step 0 and at the end, the final checkpoint and the fsynced
  run records.

    python benchmarks/trainer_overhead.py --steps 3000 --rounds 15

Last line: `RESULT overhead=<median> overhead_cpu=<median> end_to_end=<median> end_to_end_cpu=<median>`
(0.02 means the optimlab loop is 2 % slower).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from optimlab import rundir
from optimlab.config import load_config
from optimlab.optim import build_optimizer
from optimlab.tasks import build_task
from optimlab.train import train


class Clocks:
    """Wall and CPU seconds since construction."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def since(self, start: Clocks) -> tuple[float, float]:
        return self.wall - start.wall, self.cpu - start.cpu


def hand_written_loop(task_name, optim, lr, batch_size, steps, seed, from_step):
    """What a researcher writes by hand: shuffled batches, forward, loss, backward, step.

    Returns ((wall, cpu) from `from_step` to the end, (wall, cpu) of the whole call)."""
    begin = Clocks()
    torch.manual_seed(seed)
    task = build_task(task_name)
    model = task.model
    optimizer = build_optimizer(optim, model.parameters(), lr=lr)
    x, y = task.train.tensors
    generator = torch.Generator().manual_seed(seed)
    per_epoch = len(x) // batch_size
    model.train()
    for step in range(steps):
        if step == from_step:
            steady = Clocks()
        if step % per_epoch == 0:
            order = torch.randperm(len(x), generator=generator)
        index = order[(step % per_epoch) * batch_size : (step % per_epoch + 1) * batch_size]
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    end = Clocks()
    return end.since(steady), end.since(begin)


@contextmanager
def clocks_at_log_steps(found: dict[int, Clocks]):
    """Read both clocks as each training-loss record is written to metrics.jsonl (benchmark only)."""
    write = rundir.MetricsFile.write

    def timed(self, record):
        if "train/loss" in record:
            found[record["step"]] = Clocks()
        write(self, record)

    rundir.MetricsFile.write = timed
    try:
        yield found
    finally:
        rundir.MetricsFile.write = write


def optimlab_loop(task_name, optim, lr, batch_size, steps, seed, from_step):
    """`optimlab.train.train` on the same setting: ((wall, cpu) from `from_step` to the end, whole call)."""
    with tempfile.TemporaryDirectory() as run_dir, clocks_at_log_steps({}) as at:
        begin = Clocks()
        cfg = load_config(
            [
                f"task={task_name}", f"task.batch_size={batch_size}", f"optim={optim}", f"optim.lr={lr}",
                f"train.steps={steps}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}",
                f"train.log_every={from_step}", f"seed={seed}", f"run_dir={run_dir}", "log.progress=never",
            ]
        )
        train(cfg)
        end = Clocks()
    return at[steps].since(at[from_step]), end.since(begin)


def spread(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile)."""
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d_mlp")
    parser.add_argument("--optim", default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--from-step", type=int, default=100, help="steady state starts here (a log step)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (at least 4 for quartiles)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.steps % args.from_step:
        parser.error("--steps must be a multiple of --from-step (both are log steps)")
    if args.rounds < 4:
        parser.error("--rounds must be at least 4 (quartiles)")
    torch.set_num_threads(args.threads)
    setting = (args.task, args.optim, args.lr, args.batch_size, args.steps, 0, args.from_step)

    build_task(args.task)  # warm the data cache
    hand_written_loop(*setting[:4], 200, 0, 100)  # warm-up
    optimlab_loop(*setting[:4], 200, 0, 100)
    ours, theirs = [], []
    for round_ in range(args.rounds):
        if round_ % 2 == 0:
            theirs.append(hand_written_loop(*setting))
            ours.append(optimlab_loop(*setting))
        else:
            ours.append(optimlab_loop(*setting))
            theirs.append(hand_written_loop(*setting))

    n = args.steps - args.from_step
    print(f"task={args.task} optim={args.optim} batch={args.batch_size} steps={args.steps} threads={args.threads} "
          f"rounds={args.rounds} (medians; [q1, q3] over rounds)")
    for name, runs in (("hand-written loop", theirs), ("optimlab loop", ours)):
        wall = statistics.median(n / r[0][0] for r in runs)
        cpu = statistics.median(n / r[0][1] for r in runs)
        whole = statistics.median(r[1][0] for r in runs)
        print(f"{name:18s} {wall:8.1f} steps/s wall, {cpu:8.1f} steps/CPU-s from step {args.from_step}; "
              f"whole call {whole:.3f} s")
    result = {}
    for name, part, clock in (("overhead", 0, 0), ("overhead_cpu", 0, 1), ("end_to_end", 1, 0),
                              ("end_to_end_cpu", 1, 1)):
        ratios = [o[part][clock] / t[part][clock] - 1 for o, t in zip(ours, theirs)]
        q1, median, q3 = spread(ratios)
        result[name] = median
        print(f"{name:15s} median {median:+.4f}  IQR [{q1:+.4f}, {q3:+.4f}]  min {min(ratios):+.4f}  "
              f"max {max(ratios):+.4f}")
    print("RESULT " + " ".join(f"{k}={v:.4f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
