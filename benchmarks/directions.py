"""Per-step cost of the step directions and K-FAC over a plain step, side by side in one process.

Model: a small ConvNet (3x3 convs of 16 and 32 channels, each followed by ReLU and 2x2 max pooling, then a
linear head), batches of 128 random 28x28 inputs, 10 classes, a training split of 2048 examples for the full
passes. Timed, each as a ratio to a plain step (zero_grad, forward, backward, SGD momentum 0.9):

- svrg_step:        a step with the SVRG direction (the snapshot's gradient on the batch, the control variate)
- svrg_snapshot:    one snapshot (a pass over the 2048 examples), in plain steps
- kfac_step:        a step preconditioned with K-FAC when neither factors nor inverses are due (KL clipping on)
- kfac_factors:     one factor update (forward/backward with labels sampled from the model), alone
- kfac_inverse:     one eigendecomposition of all factors, alone
- kfac_amortised:   kfac_step + kfac_factors / T_cov + kfac_inverse / T_inv with T_cov=10, T_inv=100
- gc_assign:        GC's assignment of one batch (forward/backward with per-layer capture and rank-1
                    distances to 10 centres, eval mode), alone
- gc_step:          a GC-SGD step (the plain step plus the stratified batch's weighted gradient)
- gc_sampled_step:  a GC-SGD step with `train.sampler=stratified`: the stratified batch is the training batch,
                    its weighted per-example losses backpropagated once
- gc_full_pass:     one full-batch GC iteration (assignment and centre update over 2048 examples), in plain steps

Blocks of `--block` iterations of each variant are interleaved over `--repeats` rounds and ratios are medians
over rounds of per-round ratios. The final line is
`RESULT gc_assign_over_step=... kfac_amortised_over_step=... svrg_step_over_step=... ...` (the K-FAC
amortisation is also given at T_cov=20).

`--clock cpu` times with the process's CPU time instead of the wall clock: with `--threads 1` on a shared
machine it leaves out the time the process waits for a core, which otherwise adds noise of a few tenths to
every ratio (with more threads the CPU time sums them and is not a duration).

    python benchmarks/directions.py [--threads 2] [--repeats 7] [--block 10] [--clock wall]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn

from optimlab.directions import SVRG, Objective
from optimlab.directions.base import read_grads, write_grads
from optimlab.directions.clustering import GradientClustering, _eval
from optimlab.precond import KFAC
from optimlab.tasks import Split

BATCH, EXAMPLES, T_COV, T_INV = 128, 2048, 10, 100


def convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    g = torch.Generator().manual_seed(0)
    split = Split((torch.randn(EXAMPLES, 1, 28, 28, generator=g), torch.randint(0, 10, (EXAMPLES,), generator=g)))
    objective = Objective()
    torch.manual_seed(0)
    model = convnet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = [split.batch(torch.arange(i * BATCH, (i + 1) * BATCH)) for i in range(EXAMPLES // BATCH)]
    counter = {"i": 0}

    def next_batch():
        counter["i"] = (counter["i"] + 1) % len(batches)
        return batches[counter["i"]]

    def backward(batch):
        optimizer.zero_grad(set_to_none=True)
        loss_sum, count = objective(model, batch)
        (loss_sum / count).backward()

    svrg = SVRG(model, snapshot_every=10**9).bind(split, device="cpu", batch_size=BATCH)
    svrg.infrequent(0, model, objective)
    kfac = KFAC(model, optimizer, objective=objective, t_cov=10**9, t_inv=10**9)
    kfac.update_factors(batches[0])
    kfac.update_inverse()
    kfac.steps = 1  # past step 0: kfac.step() preconditions only
    gc = GradientClustering(model, clusters=10, citers=1).bind(split, device="cpu", batch_size=BATCH)
    gc.infrequent(0, model, objective)

    def plain():
        backward(next_batch())
        optimizer.step()

    def svrg_step():
        batch = next_batch()
        backward(batch)
        write_grads(model, svrg.training_direction(model, objective, batch, None, read_grads(model)))
        optimizer.step()

    def kfac_step():
        backward(next_batch())
        kfac.step()
        optimizer.step()

    def gc_assign():
        with _eval(model):
            gc.assign(gc.distances(model, objective, next_batch(), matrices=False)[0])

    stream = torch.Generator().manual_seed(1)

    def gc_sampled_step():
        indices = gc.sample(stream, BATCH)
        x, y = split.batch(indices)
        optimizer.zero_grad(set_to_none=True)
        losses = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
        ((gc.weights(indices).to(losses.dtype) * losses).sum() / len(y)).backward()
        optimizer.step()

    def gc_step():
        batch = next_batch()
        backward(batch)
        write_grads(model, gc.training_direction(model, objective, batch, None, read_grads(model)))
        optimizer.step()

    steps = {
        "plain": plain, "svrg_step": svrg_step, "kfac_step": kfac_step,
        "kfac_factors": lambda: kfac.update_factors(next_batch()), "kfac_inverse": kfac.update_inverse,
        "gc_assign": gc_assign, "gc_step": gc_step, "gc_sampled_step": gc_sampled_step,
    }  # fmt: skip
    passes = {
        "svrg_snapshot": lambda: svrg.infrequent(0, model, objective),
        "gc_full_pass": lambda: gc._batch_pass(model, objective, update=True),
    }
    for fn in steps.values():  # warm-up
        fn()
    ratios: dict[str, list[float]] = {name: [] for name in [*steps, *passes] if name != "plain"}
    plain_times = []
    names = list(steps)
    for round_ in range(args.repeats):
        times = {}
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = clock()
            for _ in range(args.block):
                steps[name]()
            times[name] = (clock() - start) / args.block
        for name, fn in passes.items():
            start = clock()
            fn()
            times[name] = clock() - start
        plain_times.append(times["plain"])
        for name, values in ratios.items():
            values.append(times[name] / times["plain"])
    median = {name: statistics.median(values) for name, values in ratios.items()}
    amortised = median["kfac_step"] + median["kfac_factors"] / T_COV + median["kfac_inverse"] / T_INV
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"{args.clock} clock")  # fmt: skip
    print(f"plain step: {statistics.median(plain_times) * 1e3:.2f} ms (batch {BATCH})")
    for name, value in median.items():
        print(f"{name:>14}: {value:6.2f} x a plain step")
    amortised_20 = median["kfac_step"] + median["kfac_factors"] / 20 + median["kfac_inverse"] / T_INV
    print(f"{'kfac_amortised':>14}: {amortised:6.2f} x a plain step (T_cov={T_COV}, T_inv={T_INV})")
    print(f"{'':>14}  {amortised_20:6.2f} x a plain step (T_cov=20, T_inv={T_INV})")
    print(
        f"RESULT gc_assign_over_step={median['gc_assign']:.3f} kfac_amortised_over_step={amortised:.3f} "
        f"svrg_step_over_step={median['svrg_step']:.3f} gc_step_over_step={median['gc_step']:.3f} "
        f"kfac_factors_over_step={median['kfac_factors']:.3f} kfac_inverse_over_step={median['kfac_inverse']:.3f} "
        f"svrg_snapshot_over_step={median['svrg_snapshot']:.3f} gc_full_pass_over_step={median['gc_full_pass']:.3f} "
        f"kfac_amortised_tcov20_over_step={amortised_20:.3f} gc_sampled_step_over_step={median['gc_sampled_step']:.3f}"
    )


if __name__ == "__main__":
    main()
