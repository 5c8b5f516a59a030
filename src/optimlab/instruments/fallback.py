"""Per-example gradients of any parameters by `torch.func` (vmap of grad), or a loop where vmap cannot go.

The general fallback for layers without an input/output-gradient rule (LSTM, LayerNorm, custom modules):
`vmap(grad(loss of one example))` as in PyTorch's per-sample-gradients tutorial. It materialises the
per-example gradients of the parameters it is asked about (N x their size), so it is used only for those.
Some kernels have no batching rule (nn.LSTM on CPU, for one); those models fall back to one autograd call
per example, which is slow but exact.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

Batch = tuple[Tensor, ...]
LossFn = Callable[[nn.Module, Batch], tuple[Tensor, "Tensor | int"]]

# Models for which vmap failed once: they go straight to the loop afterwards.
_NO_VMAP: weakref.WeakSet = weakref.WeakSet()


class _LossOf(nn.Module):
    """The loss as a module, so functional_call can substitute the model's parameters inside `loss_fn`."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, *batch: Tensor) -> Tensor:
        return self.loss_fn(self.model, batch)[0]


def per_example_grads(model: nn.Module, loss_fn: LossFn, batch: Batch, names: Sequence[str]) -> dict[str, Tensor]:
    """{name: (N, *shape)}: the gradient of each example's loss summand with respect to the named parameters."""
    if model not in _NO_VMAP:
        try:
            return _vmapped(model, loss_fn, batch, names)
        except (RuntimeError, ValueError, NotImplementedError):
            _NO_VMAP.add(model)
    return _looped(model, loss_fn, batch, names)


def _vmapped(model: nn.Module, loss_fn: LossFn, batch: Batch, names: Sequence[str]) -> dict[str, Tensor]:
    wrapper = _LossOf(model, loss_fn)
    params = dict(model.named_parameters())
    wrt = {f"model.{name}": params[name].detach() for name in names}

    def one(wrt: dict[str, Tensor], *row: Tensor) -> Tensor:
        return functional_call(wrapper, wrt, tuple(t.unsqueeze(0) for t in row), strict=False)

    # Dropout draws an independent mask for every example, as it does in a batched forward.
    grads = vmap(grad(one), in_dims=(None, *([0] * len(batch))), randomness="different")(wrt, *batch)
    return {name: grads[f"model.{name}"].detach() for name in names}


def _looped(model: nn.Module, loss_fn: LossFn, batch: Batch, names: Sequence[str]) -> dict[str, Tensor]:
    params = dict(model.named_parameters())
    wrt = [params[name] for name in names]
    rows = []
    for i in range(len(batch[0])):
        loss = loss_fn(model, tuple(t[i : i + 1] for t in batch))[0]
        grads = torch.autograd.grad(loss, wrt, allow_unused=True)
        rows.append([torch.zeros_like(p) if g is None else g for p, g in zip(wrt, grads)])
    return {name: torch.stack([row[k] for row in rows]) for k, name in enumerate(names)}
