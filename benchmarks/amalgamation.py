"""Cost of Optimizer Amalgamation's pieces in meta-training: inner steps per second of a TBPTT meta-iteration
(second order, 20-step truncation, MNIST-1D MLP width 32, batch 64) for

- RNNProp alone (the baseline);
- RNNProp with min-max distillation from Adam and RMSProp (two teachers: each adds a forward and backward
  pass of the optimizee per inner step, without a graph to the student);
- the choice policy over the small pool {RMSProp, Adam} and over the large pool (six members);

and the ratio of each to the baseline. Unrolls that blow up (the untrained large pool, with SGD and Momentum at
learning rate 2, can diverge on the randomly rescaled problem) stop early without a backward pass and are
not counted; their number is printed. All runs alternate in blocks in one process, so load on the machine
affects them alike; the medians are reported.

    python benchmarks/amalgamation.py --threads 1

Last line: RESULT rnnprop_steps_per_s=... distill_over_rnnprop=... choice_small_over_rnnprop=...
choice_large_over_rnnprop=...
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import optimlab.learned as lo
from optimlab.learned.distill import Distillation, RuleTeacher
from optimlab.learned.estimators import TBPTT
from optimlab.learned.pool import Adam, RMSProp
from optimlab.learned.problems import build_problem
from optimlab.learned.unroll import LearnedOptimizerSystem

UNROLL = 20


def make_system(name: str) -> LearnedOptimizerSystem:
    torch.manual_seed(0)
    problem = build_problem("mnist1d_mlp", 64, None, {"width": 32})
    spread = 1.0  # a milder random scaling than training's 3, so that the untrained policies rarely diverge
    if name == "distill":
        distill = Distillation([RuleTeacher(Adam()), RuleTeacher(RMSProp())], "max")
        system = LearnedOptimizerSystem(lo.RNNProp(), problem, UNROLL, spread, warmup_steps=0, distill=distill)
        system.imitation_weight = 0.2
        return system
    policy = lo.RNNProp() if name == "rnnprop" else lo.build_policy("choice", pool=name.split("_")[1])
    return LearnedOptimizerSystem(policy, problem, UNROLL, spread, warmup_steps=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    names = ("rnnprop", "distill", "choice_small", "choice_large")
    runs = {}
    for name in names:
        system = make_system(name)
        estimator = TBPTT(system)
        state = estimator.reset(0)
        generator = torch.Generator().manual_seed(0)
        _, _, state = estimator.estimate(system.weights(), state, generator)  # warm-up
        runs[name] = [system, estimator, state, generator]
    rates: dict[str, list[float]] = {name: [] for name in names}
    skipped = dict.fromkeys(names, 0)
    for _ in range(args.repeats):
        for name in names:
            system, estimator, state, generator = runs[name]
            start, steps = time.perf_counter(), 0
            for _ in range(args.block):
                grads, _, new = estimator.estimate(system.weights(), state, generator)
                if grads is not None:  # a blown-up unroll stops early and has no backward pass: not counted
                    steps += new["trajectory"].step - state["trajectory"].step
                else:
                    skipped[name] += 1
                state = new if grads is not None else estimator.reset(1)
            rates[name].append(steps / (time.perf_counter() - start))
            runs[name][2] = state
    med = {name: statistics.median(r) for name, r in rates.items()}
    for name in names:
        print(
            f"  {name:14s} {med[name]:7.1f} inner steps/s   x{med['rnnprop'] / med[name]:.2f} the time of RNNProp"
            f"   ({skipped[name]} blown-up unrolls not counted)"
        )
    print(
        f"RESULT rnnprop_steps_per_s={med['rnnprop']:.1f} distill_over_rnnprop={med['rnnprop'] / med['distill']:.2f} "
        f"choice_small_over_rnnprop={med['rnnprop'] / med['choice_small']:.2f} "
        f"choice_large_over_rnnprop={med['rnnprop'] / med['choice_large']:.2f}"
    )


if __name__ == "__main__":
    main()
