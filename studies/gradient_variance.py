"""The gradient-variance study's measurement design (Faghri et al. 2020), in one process.

One plain-SGD trajectory; along it SVRG (snapshots), gradient clustering (full-batch GC) and K-FAC (factors
and inverses) are kept up to date on their schedules without ever changing the step, and at log-spaced
steps each estimator's direction is drawn `draws` times on independent batches at the same parameters:

    sg_b    mini-batch gradient, batch B          svrg   SVRG control variate, batch B
    sg_2b   mini-batch gradient, batch 2B         kfac   K-FAC-preconditioned gradient, batch B
    gc      stratified, weighted GC estimate, batch B

Every direction is the estimator's pure `direction(model, objective, batch, indices)`
(docs/directions.md), so measuring never moves the trajectory. Per estimator and step the script writes
the study's statistics of the direction over its draws, with unbiased per-coordinate moments:
`var` (mean over coordinates of the variance), `nvar` (mean over coordinates of variance / second moment),
the step's mini-batch loss, the mean loss over the whole training split (`full_loss`, in training mode and
side-effect free), the learning rate and the process's CPU seconds so far, one JSON line
each, to `--out`. Measured steps are `--points` log-spaced steps from 0, plus every `--every` steps and the
last step when `--every` is set (the log spacing alone stops at a third of the run).

    python studies/gradient_variance.py --task mnist1d_mlp --steps 2000 --lr 0.05 --duplicates 200 --seed 0

This runner is self-contained; the `gradient_variance` sweep (sweeps/gradient_variance.yaml) is the same
design through the trainer and the gradient instruments.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from optimlab.directions import SVRG, Direction, Objective
from optimlab.directions.base import side_effect_free
from optimlab.directions.clustering import GradientClustering
from optimlab.precond import KFAC
from optimlab.tasks import build_task
from optimlab.train.sampler import BatchSampler


def moments(draws: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """var and nvar of a direction from independent draws (unbiased per-coordinate variance)."""
    flat = torch.stack([torch.cat([d[k].detach().reshape(-1).double() for k in sorted(d)]) for d in draws])
    variance = flat.var(dim=0, unbiased=True)
    second = flat.pow(2).mean(dim=0)
    return {"var": float(variance.mean()), "nvar": float((variance / (second + 1e-30)).mean())}


def log_spaced(steps: int, points: int) -> list[int]:
    return sorted({0, *(round(10 ** (math.log10(steps) * i / points)) for i in range(1, points + 1))} - {steps})


def measured_steps(steps: int, points: int, every: int) -> set[int]:
    """`points` log-spaced steps from 0, and with `every` > 0 also every `every` steps and the last step."""
    extra = {*range(every, steps, every), steps - 1} if every > 0 else set()
    return set(log_spaced(steps, points)) | extra


def split_loss(model, objective, split, batch_size: int = 1024) -> float:
    """Mean loss over a whole split at the current parameters, in the model's mode; leaves no trace."""
    total, count = 0.0, 0.0
    with torch.no_grad(), side_effect_free(model):
        for start in range(0, len(split), batch_size):
            loss_sum, n = objective(model, split.batch(torch.arange(start, min(start + batch_size, len(split)))))
            total, count = total + float(loss_sum), count + float(n)
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d_mlp")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--duplicates", type=int, default=0, help="task.duplicates (copies: --copies)")
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--points", type=int, default=8, help="log-spaced measurement steps")
    parser.add_argument("--every", type=int, default=0, help="also measure every N steps and at the last (0: no)")
    parser.add_argument("--snapshot-every", type=int, default=500, help="SVRG snapshots (and GC's by default)")
    parser.add_argument("--gc-every", type=int, default=0, help="steps between GC clusterings (0: --snapshot-every)")
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--citers", type=int, default=2, help="GC: assignment/update passes per clustering")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="gradient_variance.jsonl")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    options = {"duplicates": args.duplicates, "duplicate_copies": args.copies} if args.duplicates else {}
    task = build_task(args.task, options)
    model, objective, split, b = task.model, Objective.of(task), task.train, args.batch_size
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    sampler = BatchSampler(len(split), b, args.seed)
    estimators: dict[str, Direction] = {
        "svrg": SVRG(model, args.snapshot_every),
        "gc": GradientClustering(
            model, clusters=args.clusters, citers=args.citers, snapshot_every=args.gc_every or args.snapshot_every
        ),
    }
    for direction in estimators.values():
        direction.bind(split, device="cpu", batch_size=b, seed=args.seed)
    uniform = Direction().bind(split, device="cpu", batch_size=b, seed=args.seed)
    kfac = KFAC(model, optimizer, objective=objective, t_cov=10, t_inv=100, kl_clip=None, seed=args.seed)
    with Path(args.out).open("a") as out:
        run(args, model, objective, split, optimizer, sampler, estimators, uniform, kfac, out)


def run(args, model, objective, split, optimizer, sampler, estimators, uniform, kfac, out) -> None:
    """The trajectory: plain SGD steps, scheduled estimator updates, measurements at log-spaced steps."""
    b = args.batch_size
    measured = measured_steps(args.steps, args.points, args.every)
    model.train()
    for step in range(args.steps):
        for direction in estimators.values():
            if direction.due(step)[1]:
                direction.infrequent(step, model, objective)
        index = sampler.next()
        batch = split.batch(index)
        optimizer.zero_grad()
        loss_sum, count = objective(model, batch)
        (loss_sum / count).backward()
        kfac.update(batch)  # factors and inverses on schedule; the step stays plain SGD
        if step in measured:
            full_loss = split_loss(model, objective, split)
            generator = torch.Generator().manual_seed(args.seed * 7919 + step)
            plans = {
                "sg_b": (uniform, b, uniform.direction),
                "sg_2b": (uniform, 2 * b, uniform.direction),
                "svrg": (estimators["svrg"], b, estimators["svrg"].direction),
                "gc": (estimators["gc"], b, estimators["gc"].direction),
                "kfac": (uniform, b, kfac.direction),
            }
            for name, (sampler_of, size, direction_fn) in plans.items():
                draws = []
                for _ in range(args.draws):
                    drawn = sampler_of.sample(generator, size)
                    draws.append(direction_fn(model, objective, split.batch(drawn), drawn))
                record = {"task": args.task, "duplicates": args.duplicates, "lr": args.lr, "seed": args.seed,
                          "step": step, "estimator": name, "train_loss": float(loss_sum.detach() / count),
                          "full_loss": full_loss, "cpu_s": time.process_time(), **moments(draws)}  # fmt: skip
                out.write(json.dumps(record) + "\n")
            out.flush()
        optimizer.step()


if __name__ == "__main__":
    main()
