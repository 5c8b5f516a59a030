"""Cost of the gradient instruments on a small ConvNet (CPU), side by side in one process.

Model: 3x3 convs of 16 and 32 channels (ReLU, 2x2 max pooling each), a linear head; batches of 64 random
28x28 inputs, 10 classes; torch SGD(momentum=0.9). Iterations timed:

- plain:       zero_grad, forward, backward of the mean loss, optimizer step
- byproduct:   the same backward with `record_moments` attached (per-example mean, second moment and
               variance of every parameter from the layer inputs and output gradients) and the study's
               per-layer statistics computed from them, every step
- byproduct16: the by-product statistics on every 16th step only (blocks are 16 steps)
- backpack:    BackPACK's Variance + BatchL2Grad extensions in the same backward (`pip install
               optimlab[bench]`; skipped with a note if BackPACK is not installed)
- grad_stats:  a plain step with optimlab's `grad_stats` instrument hook every step, as the training loop
               calls it, by-product mode (the loop reports the backward's seed as StepInfo.grad_scale)
- grad_stats_recompute: the same hook when the loop gives no grad_scale: it recomputes the per-example
               moments in a pass of its own
- draw:        one draw of `direction_variance` (a gradient on an independent batch and the optimizer's
               peeked direction), timed over a measurement of T=8 draws
- hvp:         one Hessian-vector product of `hessian_top` (slope between 5 and 15 power iterations)

Blocks of `--block` iterations of each variant are interleaved over `--repeats` rounds in a rotating
order; every ratio is the median over rounds of the per-round ratio to `plain`, so load from other
processes on a shared machine hits every variant alike.
The final line is `RESULT byproduct_over_plain=... byproduct16_over_plain=... backpack_over_plain=...
byproduct_over_backpack=... grad_stats_over_plain=... grad_stats_recompute_over_plain=... draw_over_plain=...
hvp_over_plain=...`.

    python benchmarks/instruments.py [--threads 1] [--repeats 9] [--block 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from optimlab.config import InstrumentsConfig
from optimlab.instruments import record_moments, top_eigenvalue
from optimlab.instruments.direction_variance import DirectionVariance
from optimlab.instruments.grad_stats import GradStats
from optimlab.instruments.statistics import Estimate, layer_statistics
from optimlab.tasks import Split, Task
from optimlab.train.hooks import RunContext, StepInfo

BATCH = 64


def convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )


def make_split(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split((torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)))


class Bench:
    def __init__(self, split: Split, backpack: bool) -> None:
        torch.manual_seed(0)
        self.split = split
        self.model = convnet()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.i = 0
        task = Task(name="bench", train=split, val=split, test=split, model=self.model)
        self.ctx = RunContext(task=task, model=self.model, optimizer=self.optimizer, device=torch.device("cpu"),
                              seed=0, batch_size=BATCH, steps=10**9)
        cfg = dataclasses.replace(InstrumentsConfig(), every=1, draws=8)
        self.grad_stats = GradStats(cfg, self.ctx)
        self.grad_stats_recompute = GradStats(cfg, self.ctx)
        self.direction = DirectionVariance(cfg, self.ctx)
        self.backpack = None
        if backpack:
            from backpack import extend

            self.backpack_model = extend(convnet())
            self.backpack_loss = extend(nn.CrossEntropyLoss())
            self.backpack_optimizer = torch.optim.SGD(self.backpack_model.parameters(), lr=0.01, momentum=0.9)
            self.backpack = True

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = (self.i * BATCH) % (len(self.split) - BATCH)
        self.i += 1
        return self.split.batch(torch.arange(start, start + BATCH))

    def plain(self) -> None:
        x, y = self.batch()
        self.optimizer.zero_grad()
        F.cross_entropy(self.model(x), y).backward()
        self.optimizer.step()

    def byproduct(self) -> None:
        x, y = self.batch()
        self.optimizer.zero_grad()
        with record_moments(self.model, grad_scale=1.0 / BATCH) as recorder:
            F.cross_entropy(self.model(x), y).backward()
        moments = recorder.moments(BATCH)
        layer_statistics({k: Estimate(m.mean, m.mean.square(), m.variance / BATCH) for k, m in moments.items()})
        self.optimizer.step()

    def backpack_step(self) -> None:
        from backpack import backpack
        from backpack.extensions import BatchL2Grad, Variance

        x, y = self.batch()
        self.backpack_optimizer.zero_grad()
        with backpack(Variance(), BatchL2Grad()):
            self.backpack_loss(self.backpack_model(x), y).backward()
        self.backpack_optimizer.step()

    def grad_stats_step(self, recompute: bool = False) -> None:
        hook = self.grad_stats_recompute if recompute else self.grad_stats
        x, y = self.batch()
        info = StepInfo(step=self.i, batch=(x, y), indices=torch.arange(BATCH))
        hook.before_backward(info)
        self.optimizer.zero_grad()
        F.cross_entropy(self.model(x), y).backward()
        if not recompute:
            info.grad_scale = 1.0 / BATCH
        hook.after_backward(info)
        hook.stats()
        self.optimizer.step()

    def measure_draws(self) -> None:
        self.direction.after_backward(StepInfo(step=0, batch=self.batch(), indices=torch.arange(BATCH)))
        self.direction.stats()

    def hvps(self, iterations: int) -> None:
        x, y = self.batch()
        top_eigenvalue(lambda: F.cross_entropy(self.model(x), y), list(self.model.parameters()),
                       iterations=iterations, tol=0.0, generator=torch.Generator().manual_seed(0))


def timed(fn, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--block", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import backpack  # noqa: F401

        have_backpack = True
    except ImportError:
        have_backpack = False
        print("BackPACK is not installed (pip install optimlab[bench]): its column is skipped")
    bench = Bench(make_split(4096, 0), have_backpack)
    block = args.block

    def every16() -> None:
        bench.byproduct()
        for _ in range(block - 1):
            bench.plain()

    variants = {
        "plain": lambda: timed(bench.plain, block),
        "byproduct": lambda: timed(bench.byproduct, block),
        "byproduct16": lambda: timed(every16, 1) / block,
        "grad_stats": lambda: timed(bench.grad_stats_step, block),
        "grad_stats_recompute": lambda: timed(lambda: bench.grad_stats_step(True), block),
        "draw": lambda: timed(bench.measure_draws, 1) / 8,
        "hvp": lambda: (timed(lambda: bench.hvps(15), 1) - timed(lambda: bench.hvps(5), 1)) / 10,
    }
    if have_backpack:
        variants["backpack"] = lambda: timed(bench.backpack_step, block)
    for run in variants.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(variants[name]())

    def ratio(a: str, b: str = "plain") -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads={args.threads}, "
          f"batch {BATCH}, block {block}, {args.repeats} rounds")
    print(f"{'variant':20s} {'ms/iter':>9s} {'/plain':>8s}   (medians of per-round ratios)")
    for name in names:
        print(f"{name:20s} {1e3 * statistics.median(times[name]):9.2f} {ratio(name):8.2f}")
    backpack_part = ""
    if have_backpack:
        backpack_part = (f"backpack_over_plain={ratio('backpack'):.3f} "
                         f"byproduct_over_backpack={ratio('byproduct', 'backpack'):.3f} ")
    print(
        f"RESULT byproduct_over_plain={ratio('byproduct'):.3f} byproduct16_over_plain={ratio('byproduct16'):.3f} "
        f"{backpack_part}grad_stats_over_plain={ratio('grad_stats'):.3f} "
        f"grad_stats_recompute_over_plain={ratio('grad_stats_recompute'):.3f} draw_over_plain={ratio('draw'):.3f} "
        f"hvp_over_plain={ratio('hvp'):.3f}"
    )


if __name__ == "__main__":
    main()
