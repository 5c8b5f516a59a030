"""Cost of meta-training with perturbations of the policy's weights: the time of one TBPTT meta-gradient
estimate (second order, RNNProp, MNIST-1D MLP width 32, batch 64, 20-step truncation) under each perturbation,
as a ratio to the unperturbed estimate. The adversarial kinds run the estimator once more per ascent step;
the per-use Gaussian kinds draw fresh noise for every optimizee tensor at every inner step.

    python benchmarks/perturb.py --threads 1

Last line: RESULT gaussian=... relative_gaussian=... persistent_gaussian=... fgsm=... pgd=... pgd_k3=... adaptive_pgd=...
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import optimlab.learned as lo
from optimlab.learned.estimators import TBPTT
from optimlab.learned.perturb import PerturbConfig, Perturbation, perturbed_estimate
from optimlab.learned.problems import build_problem
from optimlab.learned.unroll import LearnedOptimizerSystem

KINDS = {
    "none": PerturbConfig(),
    "gaussian": PerturbConfig("gaussian", 1e-3),
    "relative_gaussian": PerturbConfig("relative_gaussian", 5e-4),
    "persistent_gaussian": PerturbConfig("persistent_gaussian", 1e-3),
    "fgsm": PerturbConfig("fgsm", 1e-3),
    "pgd": PerturbConfig("pgd", 1e-4, steps=1),
    "pgd_k3": PerturbConfig("pgd", 1e-4, steps=3),
    "adaptive_pgd": PerturbConfig("adaptive_pgd", 1e-3, steps=1),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    policy = lo.RNNProp()
    problem = build_problem("mnist1d_mlp", 64, options={"width": 32})
    system = LearnedOptimizerSystem(policy, problem, unroll_len=20, scale_spread=3.0, warmup_steps=0)
    estimator = TBPTT(system)
    state = estimator.reset(1)
    weights = system.weights()
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    for _ in range(args.repeats):  # interleaved, so drifting machine load affects every kind alike
        for name, cfg in KINDS.items():
            generator = torch.Generator().manual_seed(0)
            start = time.perf_counter()
            perturbed_estimate(Perturbation(cfg), estimator, [system], weights, state, generator)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["none"])
    ratios = {k: statistics.median(v) / base for k, v in times.items() if k != "none"}
    print(f"unperturbed estimate: {base * 1e3:.1f} ms")
    for name, ratio in ratios.items():
        print(f"{name:20s} {ratio:.2f}x")
    print("RESULT " + " ".join(f"{k}={v:.2f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
