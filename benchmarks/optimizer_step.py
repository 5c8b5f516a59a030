"""Time of `optimizer.step()` alone: each critical-gradient optimizer against its torch.optim base.

Same 1.6M-parameter MLP (784-1024-768-10), same fixed gradients, one process. Each configuration is timed
against a fresh instance of its base, the two stepping alternately in short blocks, and the ratio
(ours / base) of their median step times is taken before the median over repeats, so that the drifts of
a shared machine cancel as far as they can.

Admission is controlled through the gradient stream: with a constant gradient and ``decay < 1`` every
offered gradient beats the decayed minimum, so *every* step writes a slot ("always": the worst case,
and also the usual case in training, where with decay=0.7 almost every gradient is admitted); with
``decay = 1`` a constant gradient never beats the (equal) minimum once the memory is full ("never").

On CPU, SGD_C, Adam_C and AdamW_C are also timed with ``fused=True`` (the memory write and the base
update as one compiled pass, `optimlab/optim/critical/fused.py`) against the same foreach base, and torch's
own fused CPU kernel against its foreach one for comparison.

Also prints the optimizer-state memory as a multiple of the parameters' size. Ends with a line
``RESULT name=value ...``.

    python benchmarks/optimizer_step.py --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from optimlab.optim import build_optimizer

BASES = {"sgd_c": "sgd", "adam_c": "adam", "adamw_c": "adamw", "rmsprop_c": "rmsprop"}
FUSED = ("sgd_c", "adam_c", "adamw_c")  # the optimizers with a fused=True CPU step
LR = {"sgd": 1e-3, "adam": 1e-4, "adamw": 1e-4, "rmsprop": 1e-5}


def make_model(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(784, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 768),
        torch.nn.ReLU(),
        torch.nn.Linear(768, 10),
    ).to(device)


def fixed_gradients(model: torch.nn.Module, device: str) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(128, 784, generator=generator).to(device)
    y = torch.randint(0, 10, (128,), generator=generator).to(device)
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


class Config:
    def __init__(self, label: str, name: str, kwargs: dict, base: str | None = None) -> None:
        self.label, self.name, self.kwargs, self.base = label, name, kwargs, base


def build(config: Config, grads: list[torch.Tensor], device: str) -> tuple[Callable[[], None], torch.optim.Optimizer]:
    model = make_model(device)
    params = list(model.parameters())
    for p, g in zip(params, grads):
        p.grad = g.clone()
    optimizer = build_optimizer(config.name, params, **config.kwargs)
    return optimizer.step, optimizer


def time_pair(
    steps: list[Callable[[], None]],
    warmup: int,
    count: int,
    sync: Callable[[], None],
    flush: Callable[[], None],
    block: int = 5,
) -> list[list[float]]:
    """Step times of several optimizers, interleaved in short blocks so that they share the machine's moods.

    Each block runs one untimed step (which brings that optimizer's arrays back into the caches the other
    one evicted) and then `block` timed steps, so warm-cache timings stay warm and unbiased.
    """
    for step in steps:
        for _ in range(warmup):
            step()
    sync()
    times: list[list[float]] = [[] for _ in steps]
    while len(times[0]) < count:
        for step, record in zip(steps, times):
            step()
            for _ in range(block):
                flush()
                sync()
                start = time.perf_counter()
                step()
                sync()
                record.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per measurement (default 40)")
    parser.add_argument("--warmup", type=int, default=25, help="untimed steps first; > topC fills the memory")
    parser.add_argument("--topc", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--optimizers", nargs="+", default=list(BASES), choices=list(BASES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--stat", default="median", choices=["median", "min"],
                        help="per-measurement statistic; 'min' resists interference on a busy machine")
    parser.add_argument("--cold", action="store_true",
                        help="evict the caches before every timed step (untimed), as a forward/backward pass would")
    parser.add_argument("--admission", nargs="+", default=["always", "never"], choices=["always", "never"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    # torch's own fastest multi-tensor implementation is the base: foreach on CPU, fused on GPU.
    impl = {"fused": True} if device.startswith("cuda") else {"foreach": True}

    model = make_model(device)
    grads = fixed_gradients(model, device)
    scratch = torch.zeros(64 * 2**20, device=device) if args.cold else None  # 256 MB, larger than any cache

    def flush() -> None:
        if scratch is not None:
            scratch.add_(1.0)

    n_params = sum(p.numel() for p in model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    configs: list[Config] = []
    for name in args.optimizers:
        base = BASES[name]
        base_impl = impl if base != "rmsprop" else {"foreach": True}  # RMSprop has no fused kernel
        configs.append(Config(f"torch {base}", base, {"lr": LR[base], **base_impl}))
        for top_c in args.topc:
            for admission in args.admission:
                decay = 0.7 if admission == "always" else 1.0
                kwargs = {"lr": LR[base], "topC": top_c, "decay": decay}
                label = f"{name} topC={top_c} admit={admission}"
                configs.append(Config(label, name, {**kwargs, **base_impl}, base=f"torch {base}"))
                if name in FUSED and device == "cpu":  # the compiled one-pass step (fused.py)
                    configs.append(Config(f"{label} fused", name, {**kwargs, "fused": True}, base=f"torch {base}"))
        if name in FUSED and device == "cpu":  # torch's own fused CPU kernel, for comparison
            configs.append(Config(f"torch {base} fused", base, {"lr": LR[base], "fused": True}, base=f"torch {base}"))

    statistic = statistics.median if args.stat == "median" else min
    times: dict[str, list[float]] = {c.label: [] for c in configs}
    ratios: dict[str, list[float]] = {c.label: [] for c in configs if c.base}
    memory: dict[str, int] = {}
    by_label = {c.label: c for c in configs}
    for _ in range(args.repeats):
        for config in configs:
            if not config.base:
                continue
            base_step, base_optimizer = build(by_label[config.base], grads, device)
            step, optimizer = build(config, grads, device)
            base_times, own_times = time_pair([base_step, step], args.warmup, args.steps, sync, flush)
            times[config.base].append(statistic(base_times))
            times[config.label].append(statistic(own_times))
            ratios[config.label].append(statistic(own_times) / statistic(base_times))
            memory[config.label] = state_bytes(optimizer)
            memory[config.base] = state_bytes(base_optimizer)
            del step, optimizer, base_step, base_optimizer

    print(f"device={device} threads={args.threads} params={n_params} repeats={args.repeats} steps={args.steps} "
          f"stat={args.stat} caches={'cold' if args.cold else 'warm'}")
    print(f"{'optimizer':55s} {'ms/step':>8s} {'ratio':>6s} {'state/params':>12s}")
    for config in configs:
        ms = 1e3 * statistics.median(times[config.label])
        ratio = f"{statistics.median(ratios[config.label]):6.2f}" if config.base else "     -"
        print(f"{config.label:55s} {ms:8.3f} {ratio} {memory[config.label] / param_bytes:11.2f}x")

    results = {}
    for name in args.optimizers:
        base = BASES[name]
        for top_c in args.topc:
            label = f"{name} topC={top_c} admit={args.admission[0]}"
            key = f"{name}_over_{base}" if top_c == 10 else f"{name}_top{top_c}_over_{base}"
            results[key] = statistics.median(ratios[label])
            if f"{label} fused" in ratios:
                results[key.replace(name, f"{name}_fused", 1)] = statistics.median(ratios[f"{label} fused"])
    print("RESULT " + " ".join(f"{k}={v:.2f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
