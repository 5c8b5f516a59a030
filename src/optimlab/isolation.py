"""Computation without side effects: whatever an instrument or a direction's measurement does inside
`isolated`, training cannot tell.

Restored on exit: the global torch RNG and the CUDA RNGs of the model's devices (`torch.random.fork_rng`:
dropout masks drawn by a measurement forward do not shift later training masks), every buffer of the model
(batch-norm running statistics and counters updated by a train-mode forward), every module's train/eval
flag, and (unless `restore_grads=False`) every parameter's `.grad`. Optimizer state is never reached: directions are peeked on a copy
(`direction.peek_direction`). The original gradient-variance code leaked through the first three
(Faghri et al. 2020, gvar_code: measurement forwards in train mode updated running statistics and consumed
the global RNG), so its trajectories depended on whether they were measured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def _cuda_devices(model: nn.Module) -> list[int]:
    return sorted({t.device.index or 0 for t in list(model.parameters()) + list(model.buffers()) if t.is_cuda})


@contextlib.contextmanager
def isolated(model: nn.Module, *, restore_grads: bool = True) -> Iterator[None]:
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    params = model.parameters() if restore_grads else []
    grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in params]
    with torch.random.fork_rng(devices=_cuda_devices(model)):
        try:
            yield
        finally:
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
                for param, saved in grads:
                    if saved is None:
                        param.grad = None
                    elif param.grad is None or not torch.equal(param.grad, saved):
                        param.grad = saved
            for module, training in modes:
                module.training = training
