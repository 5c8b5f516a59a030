"""Cost of learned optimizers: the deployed step against torch Adam, the policy's achieved GFLOP/s against
this machine's matmul GFLOP/s, and meta-training throughput.

1. Step cost: `LearnedOptimizer.step()` with RNNProp (and small_fc_lopt) against torch Adam (foreach) on the
   same 1.6M-parameter MLP (784-1024-768-10) with the same fixed gradients, one process, stepping
   alternately in short blocks; the ratio of median step times (per parameter the ratio is the same). The
   policies step through their no-grad `deployed_step`; "(forward)" rows step the same policies through
   the functional `forward` (`deployed=False`), and `*_speedup` is forward time / deployed time.
2. Achieved GFLOP/s: the policy's dense-layer FLOPs per coordinate (RNNProp: 9,960) times the parameters,
   divided by the RNNProp step time, against the GFLOP/s of a large square float32 matmul at the same thread
   count (the machine's matmul rate). Target: >= 0.5. `eager_gflops_ratio`: the same for the eager step.
3. Meta-training: inner steps per second of a TBPTT meta-iteration (second order, RNNProp, MNIST-1D MLP
   width 32, 20-step truncation) and of a PES one (forward only, one antithetic pair).

    python benchmarks/learned.py --threads 1 [--clock cpu]

Last line: RESULT rnnprop_over_adam=... fc_lopt_over_adam=... rnnprop_speedup=... fc_lopt_speedup=...
rnnprop_fused_speedup=... gflops_ratio=... eager_gflops_ratio=... policy_gflops=... matmul_gflops=...
tbptt_steps_per_s=... pes_steps_per_s=...
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import optimlab.learned as lo
from optimlab.learned import kernels
from optimlab.learned.estimators import PES, TBPTT
from optimlab.learned.problems import build_problem
from optimlab.learned.unroll import LearnedOptimizerSystem


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 768), torch.nn.ReLU(), torch.nn.Linear(768, 10)
    )  # fmt: skip


def set_gradients(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(128, 784, generator=g), torch.randint(0, 10, (128,), generator=g)
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()


# The clock of every timing: wall time, or with --clock cpu this thread's CPU time, which
# leaves out the time spent waiting for a core on a shared machine (the steps run on one thread).
CLOCK = time.perf_counter


def time_steps(optimizer: torch.optim.Optimizer, steps: int) -> float:
    start = CLOCK()
    for _ in range(steps):
        optimizer.step()
    return (CLOCK() - start) / steps


NAMES = ("adam", "rnnprop", "rnnprop (eager)", "rnnprop (forward)", "small_fc_lopt", "small_fc_lopt (forward)")


def step_ratios(repeats: int, block: int) -> dict[str, float]:
    models = {name: make_model() for name in NAMES}
    for model in models.values():
        set_gradients(model)

    def learned(name: str, policy: lo.Policy) -> lo.LearnedOptimizer:
        deployed, fused = not name.endswith("(forward)"), not name.endswith("(eager)")
        return lo.LearnedOptimizer(models[name].parameters(), policy, warmup_steps=0, deployed=deployed, fused=fused)

    optimizers = {
        "adam": torch.optim.Adam(models["adam"].parameters(), lr=1e-4, foreach=True),
        "rnnprop": learned("rnnprop", lo.RNNProp()),
        "rnnprop (eager)": learned("rnnprop (eager)", lo.RNNProp()),
        "rnnprop (forward)": learned("rnnprop (forward)", lo.RNNProp()),
        "small_fc_lopt": learned("small_fc_lopt", lo.SmallFCLOpt()),
        "small_fc_lopt (forward)": learned("small_fc_lopt (forward)", lo.SmallFCLOpt()),
    }
    for opt in optimizers.values():
        time_steps(opt, 2)  # state allocation and warm caches
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(repeats):
        for name, opt in optimizers.items():
            times[name].append(time_steps(opt, block))
    med = {name: statistics.median(t) for name, t in times.items()}
    return med


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


def meta_throughput(estimator_name: str, iterations: int) -> float:
    torch.manual_seed(0)
    problem = build_problem("mnist1d_mlp", 64, None, {"width": 32})
    system = LearnedOptimizerSystem(lo.RNNProp(), problem, unroll_len=20, warmup_steps=0)
    estimator = TBPTT(system) if estimator_name == "tbptt" else PES(system, std=0.01, pairs=1)
    state = estimator.reset(0)
    generator = torch.Generator().manual_seed(0)
    estimator.estimate(system.weights(), state, generator)  # warm-up
    start = CLOCK()
    for _ in range(iterations):
        _, _, state = estimator.estimate(system.weights(), state, generator)
    inner = iterations * 20 * (1 if estimator_name == "tbptt" else 2)
    return inner / (CLOCK() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--block", type=int, default=3)
    parser.add_argument("--meta-iterations", type=int, default=5)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: this thread's CPU time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        if args.threads != 1:
            parser.error("--clock cpu times one thread: use --threads 1")
        global CLOCK
        CLOCK = time.thread_time

    n = sum(p.numel() for p in make_model().parameters())
    med = step_ratios(args.repeats, args.block)
    flops = lo.RNNProp().matmul_flops_per_coordinate() * n
    policy_gflops = flops / med["rnnprop"] / 1e9
    machine = matmul_gflops()
    fused = kernels.rnnprop_kernel() is not None
    print(f"parameters: {n:,}  threads: {args.threads}  clock: {args.clock}  fused RNNProp kernel: {fused}")
    for name, t in med.items():
        print(f"  {name:24s} step {t * 1e3:8.2f} ms   {t / n * 1e9:7.2f} ns/parameter   x{t / med['adam']:.1f} Adam")
    print(
        f"RNNProp policy: {flops / 1e9:.2f} GFLOP per step, {policy_gflops:.1f} GFLOP/s; matmul (2048^2): {machine:.1f} GFLOP/s"
    )
    tbptt = meta_throughput("tbptt", args.meta_iterations)
    pes = meta_throughput("pes", args.meta_iterations)
    print(f"meta-training, MNIST-1D MLP (width 32): TBPTT {tbptt:.0f} inner steps/s, PES {pes:.0f} inner steps/s")
    print(
        f"RESULT rnnprop_over_adam={med['rnnprop'] / med['adam']:.2f} fc_lopt_over_adam={med['small_fc_lopt'] / med['adam']:.2f} "
        f"rnnprop_speedup={med['rnnprop (forward)'] / med['rnnprop']:.2f} "
        f"fc_lopt_speedup={med['small_fc_lopt (forward)'] / med['small_fc_lopt']:.2f} "
        f"rnnprop_fused_speedup={med['rnnprop (eager)'] / med['rnnprop']:.2f} "
        f"gflops_ratio={policy_gflops / machine:.3f} eager_gflops_ratio={flops / med['rnnprop (eager)'] / 1e9 / machine:.3f} "
        f"policy_gflops={policy_gflops:.2f} matmul_gflops={machine:.2f} "
        f"tbptt_steps_per_s={tbptt:.1f} pes_steps_per_s={pes:.1f}"
    )


if __name__ == "__main__":
    main()
