"""A minimal training loop calling instrument hooks where the optimlab loop does, for side-effect tests."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from optimlab.config import InstrumentsConfig
from optimlab.instruments import build_instruments
from optimlab.tasks import Split, Task
from optimlab.train.hooks import RunContext, StepInfo
from optimlab.train.sampler import BatchSampler


def mlp_dropout() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def cnn_batch_norm() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(24, 3),
    )


def make_task(model: nn.Module, n: int = 96) -> Task:
    generator = torch.Generator().manual_seed(123)
    x = torch.randn(n, 6, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    split = Split((x, y))
    return Task(name="instr_toy", train=split, val=split, test=split, model=model)


ALL = ["grad_stats", "direction_variance", "hessian_top", "step_stats"]


def instruments_config(names=ALL, **overrides) -> InstrumentsConfig:
    base = {"names": list(names), "every": 3, "draws": 3, "hessian_iterations": 3, "draw_batch_size": 8}
    return dataclasses.replace(InstrumentsConfig(), **{**base, **overrides})


@dataclasses.dataclass
class Outcome:
    params: list[torch.Tensor]
    buffers: list[torch.Tensor]
    rng: torch.Tensor
    stats: list[dict[str, float]]
    grads: list[torch.Tensor | None]


def train(build_model, build_optimizer, cfg: InstrumentsConfig | None, steps: int = 8, hyper=None,
          batch_size: int = 12, clip: float | None = None, grad_scale: bool = False) -> Outcome:
    """`hyper(optimizer)` builds a hypergradient controller that replaces backward + step (MARTHE);
    `grad_scale`: tell the hooks the backward's seed (StepInfo.grad_scale), enabling by-product statistics."""
    torch.manual_seed(0)
    model = build_model()
    optimizer = build_optimizer(model.parameters())
    controller = hyper(optimizer) if hyper is not None else None
    task = make_task(model)
    ctx = RunContext(task=task, model=model, optimizer=optimizer, device=torch.device("cpu"), seed=0,
                     batch_size=batch_size, steps=steps)
    hooks = build_instruments(cfg, ctx) if cfg is not None else []
    sampler = BatchSampler(len(task.train), batch_size, seed=5)
    stats = []
    model.train()
    for step in range(steps):
        index = sampler.next()
        batch = task.train.batch(index)
        info = StepInfo(step=step, batch=batch, indices=index)
        for hook in hooks:
            hook.before_backward(info)
        if controller is not None:
            for hook in hooks:
                hook.after_backward(info)
            loss_sum, count = task.loss(task.forward(model, batch), batch)
            val = task.val.batch(torch.arange(16))
            controller.step(loss_sum / count, lambda val=val: task.loss(task.forward(model, val), val)[0] / 16)
        else:
            optimizer.zero_grad(set_to_none=True)
            loss_sum, count = task.loss(task.forward(model, batch), batch)
            (loss_sum / count).backward()
            if grad_scale:
                info.grad_scale = 1.0 / count
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            for hook in hooks:
                hook.after_backward(info)
            optimizer.step()
        for hook in hooks:
            hook.after_step(info)
        stats.append({f"{hook.prefix}/{k}": v for hook in hooks for k, v in hook.stats().items()})
    return Outcome(
        params=[p.detach().clone() for p in model.parameters()],
        buffers=[b.clone() for b in model.buffers()],
        rng=torch.get_rng_state(),
        stats=stats,
        grads=[None if p.grad is None else p.grad.clone() for p in model.parameters()],
    )
