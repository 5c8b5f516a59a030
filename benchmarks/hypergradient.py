"""Cost of hypergradient learning-rate control per training iteration, side by side in one process.

Model: a small ConvNet (3x3 convs of 16 and 32 channels, each followed by ReLU and 2x2 max pooling, then a
linear head), batches of 64 random 28x28 inputs, 10 classes. Iterations timed:

- plain:        zero_grad, forward, backward, torch SGD(momentum=0.9) step
- hd:           the same with optimlab's SGDHD (momentum 0.9)
- bare:         the arithmetic MARTHE cannot avoid, written out here: the gradient with its graph, one
                double-backward Hessian-vector product, the SGD step, one validation gradient (the floor)
- marthe:       optimlab.hyper.Marthe(SGD momentum 0.9, mu=0.99) `step(loss, val_closure)`, validation every
                step
- marthe_val10: the same with val_every=10 (the tangent still advances, with its HVP, on every step)
- bare_val10:   the bare arithmetic with the validation gradient every 10th step (the floor of marthe_val10)

Blocks of `--block` iterations of each variant are interleaved over `--repeats` rounds (in a rotating order)
and ratios are medians over rounds of per-round ratios, so that load from other processes hits every variant
alike.
The final line is `RESULT marthe_over_bare=... marthe_val10_over_plain=... hd_over_plain=... bare_over_plain=...`.

    python benchmarks/hypergradient.py [--threads 2] [--repeats 15] [--block 10]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from optimlab.hyper import Marthe
from optimlab.optim import SGDHD


def convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )


def make_data(n: int, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 1, 28, 28, generator=g), torch.randint(0, 10, (batch,), generator=g)) for _ in range(n)]


class Variant:
    """One model + optimizer and its iteration; data cycles through a fixed pool."""

    def __init__(self, name: str, train, val) -> None:
        torch.manual_seed(0)
        self.name, self.train, self.val = name, train, val
        self.model = convnet()
        self.params = list(self.model.parameters())
        self.i = 0
        lr = 0.01
        if name == "hd":
            self.opt = SGDHD(self.params, lr=lr, momentum=0.9, hypergrad_lr=1e-6)
        else:
            self.opt = torch.optim.SGD(self.params, lr=lr, momentum=0.9)
        if name.startswith("marthe"):
            self.hyper = Marthe(self.opt, hyper_lr=1e-7, mu=0.99, lr_bounds=(0.0, 0.05),
                                val_every=10 if name == "marthe_val10" else 1)
        if name.startswith("bare"):
            g = torch.Generator().manual_seed(1)
            self.vector = [torch.randn(p.shape, generator=g) * 1e-3 for p in self.params]
        self.step = getattr(self, "_" + name.split("_")[0])

    def batches(self):
        x, y = self.train[self.i % len(self.train)]
        xv, yv = self.val[self.i % len(self.val)]
        self.i += 1
        return x, y, xv, yv

    def _plain(self) -> None:
        x, y, _, _ = self.batches()
        self.opt.zero_grad(set_to_none=True)
        F.cross_entropy(self.model(x), y).backward()
        self.opt.step()

    _hd = _plain

    def _bare(self) -> None:
        validate = self.name == "bare" or self.i % 10 == 9
        x, y, xv, yv = self.batches()
        loss = F.cross_entropy(self.model(x), y)
        grads = torch.autograd.grad(loss, self.params, create_graph=True)
        hvp = torch.autograd.grad(grads, self.params, grad_outputs=self.vector)
        for p, g in zip(self.params, grads):
            p.grad = g.detach()
        self.opt.step()
        if validate:
            hvp = torch.autograd.grad(F.cross_entropy(self.model(xv), yv), self.params)
        self.sink = hvp

    def _marthe(self) -> None:
        x, y, xv, yv = self.batches()
        self.hyper.step(F.cross_entropy(self.model(x), y), lambda: F.cross_entropy(self.model(xv), yv))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--block", type=int, default=10, help="iterations per timed block (a multiple of 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train, val = make_data(8, 64, 1), make_data(4, 64, 2)
    names = ["plain", "hd", "bare", "marthe", "bare_val10", "marthe_val10"]
    variants = [Variant(n, train, val) for n in names]
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.warmup + args.repeats):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for v in order:
            start = time.perf_counter()
            for _ in range(args.block):
                v.step()
            elapsed = (time.perf_counter() - start) / args.block
            if r >= args.warmup:
                times[v.name].append(elapsed)

    med = {n: statistics.median(t) for n, t in times.items()}

    def ratio(a: str, b: str) -> float:
        """Median over rounds of the per-round ratio: robust to load that drifts between rounds."""
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    for v in variants:
        if hasattr(v, "hyper") and (v.hyper.restarts or not v.hyper.lr > 0):
            raise SystemExit(f"{v.name}: the controller restarted or stalled; the timing is not representative")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads={args.threads}, "
          f"repeats={args.repeats} x {args.block} iterations")
    print(f"{'variant':14s} {'ms/iter':>9s} {'/plain':>8s} {'/bare':>8s}   (medians of per-round ratios)")
    for n in names:
        print(f"{n:14s} {1e3 * med[n]:9.2f} {ratio(n, 'plain'):8.3f} {ratio(n, 'bare'):8.3f}")
    print(f"marthe_val10 / bare_val10: {ratio('marthe_val10', 'bare_val10'):.3f}")
    print(
        f"RESULT marthe_over_bare={ratio('marthe', 'bare'):.3f} "
        f"marthe_val10_over_plain={ratio('marthe_val10', 'plain'):.3f} "
        f"hd_over_plain={ratio('hd', 'plain'):.3f} bare_over_plain={ratio('bare', 'plain'):.3f}"
    )


if __name__ == "__main__":
    main()
