"""Per-example gradient moments of a batch: mean, second moment and variance per parameter coordinate.

    moments = per_example_moments(model, loss_fn, batch)
    moments["fc.weight"].variance      # shaped like fc.weight

`loss_fn(model, batch)` returns the task contract's `(sum, count)` pair, with one summand per example (row of
the batch); g_i is the gradient of example i's summand. Linear, Conv1d, Conv2d and Embedding layers get their
moments from the layer inputs and output gradients of one ordinary backward (`layers.py`); every other
parameter goes through `torch.func` (`fallback.py`).

Examples must not interact in the forward pass, or per-example gradients are undefined. Batch norm in
training mode normalises with the batch's own statistics, so it is refused unless `batch_norm="eval"`,
which computes the moments with those layers in eval mode (running statistics; they are not updated).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from optimlab.instruments.fallback import LossFn, per_example_grads
from optimlab.instruments.layers import Rule, rule_for

Batch = tuple[Tensor, ...]
BATCH_NORM_POLICIES = ("error", "eval")
_HALF = (torch.float16, torch.bfloat16)


@dataclasses.dataclass(frozen=True)
class Moments:
    """Per-coordinate moments of the n per-example gradients g_i of one parameter."""

    mean: Tensor  # (1/n) sum_i g_i
    second_moment: Tensor  # (1/n) sum_i g_i**2
    variance: Tensor  # (1/(n-1)) sum_i (g_i - mean)**2
    count: int  # n


def moments_from_sums(total: Tensor, squares: Tensor, n: int) -> Moments:
    """Moments from sum_i g_i and sum_i g_i**2 (the variance clamped at 0 against rounding)."""
    if n < 2:
        raise ValueError(f"per-example variance needs at least 2 examples, got {n}")
    mean = total / n
    variance = ((squares - total * mean) / (n - 1)).clamp_min(0.0)
    return Moments(mean=mean, second_moment=squares / n, variance=variance, count=n)


@dataclasses.dataclass
class LayerPlan:
    """Which parameters come from layer rules (by module) and which need the general fallback."""

    modules: dict[str, tuple[nn.Module, Rule]]  # module name -> (module, rule)
    fallback: list[str]  # parameter names

    @property
    def ruled(self) -> list[str]:
        return [f"{m}.{attr}" if m else attr for m, (module, _) in self.modules.items() for attr in _trained(module)]


def _trained(module: nn.Module) -> list[str]:
    return [name for name, p in module.named_parameters(recurse=False) if p.requires_grad]


def plan_layers(model: nn.Module, exclude: frozenset[str] = frozenset()) -> LayerPlan:
    """Rules for supported layers whose parameters belong to them alone (tied weights go to the fallback).

    `exclude`: module names to leave to the fallback (those applied more than once per forward, whose
    per-example gradient sums over the applications before it is squared).
    """
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    modules: dict[str, tuple[nn.Module, Rule]] = {}
    for name, module in model.named_modules():
        rule = None if name in exclude else rule_for(module)
        own = list(module.parameters(recurse=False))
        if rule is not None and _trained(module) and all(uses[id(p)] == 1 for p in own):
            modules[name] = (module, rule)
    covered = {id(p) for module, _ in modules.values() for p in module.parameters(recurse=False)}
    fallback = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
    return LayerPlan(modules, fallback)


class MomentRecorder:
    """Accumulates sum_i g_i and sum_i g_i**2 per parameter from the backward passes run while attached.

    `grad_scale` is the factor the backward was seeded with (1 for `loss_sum.backward()`, 1/count for the
    gradient of the mean): the recorded sums are divided by it (and the squares by its square).
    """

    def __init__(self, plan: LayerPlan, grad_scale: float = 1.0) -> None:
        self.plan = plan
        self.grad_scale = grad_scale
        self.sums: dict[str, Tensor] = {}
        self.squares: dict[str, Tensor] = {}
        self.calls: Counter = Counter()  # forward applications per module name while attached
        self._handles: list = []

    def add(self, name: str, total: Tensor, squares: Tensor) -> None:
        if name in self.sums:
            self.sums[name] = self.sums[name] + total
            self.squares[name] = self.squares[name] + squares
        else:
            self.sums[name], self.squares[name] = total, squares

    def attach(self) -> None:
        for name, (module, rule) in self.plan.modules.items():
            self._handles.append(module.register_forward_hook(self._forward_hook(name, rule)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _forward_hook(self, name: str, rule: Rule) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            if not (torch.is_grad_enabled() and isinstance(output, Tensor) and output.requires_grad):
                return
            self.calls[name] += 1
            x = inputs[0].detach()

            def on_grad(g: Tensor) -> None:
                scale = self.grad_scale
                g = g.detach()
                inputs = x
                if g.dtype in _HALF:  # under autocast: squares of half-precision gradients under/overflow
                    g = g.float()
                    inputs = x.float() if x.is_floating_point() else x
                with torch.no_grad():
                    for attr, (total, squares) in rule(module, inputs, g).items():
                        if getattr(module, attr).requires_grad:
                            prefix = f"{name}." if name else ""
                            self.add(prefix + attr, total / scale, squares / (scale * scale))

            output.register_hook(on_grad)

        return hook

    def moments(self, n: int) -> dict[str, Moments]:
        return {name: moments_from_sums(self.sums[name], self.squares[name], n) for name in self.sums}


@contextlib.contextmanager
def record_moments(model: nn.Module, grad_scale: float = 1.0) -> Iterator[MomentRecorder]:
    """By-product moments of your own backward, for the layers with rules (`recorder.plan.ruled`):

        with record_moments(model, grad_scale=1 / n) as recorder:
            (loss_sum / n).backward()
        moments = recorder.moments(n)

    Parameters in `recorder.plan.fallback` are not recorded (use `per_example_moments` for those).
    """
    recorder = MomentRecorder(plan_layers(model), grad_scale)
    recorder.attach()
    try:
        yield recorder
    finally:
        recorder.detach()


def train_mode_batch_norms(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, _BatchNorm) and m.training]


@contextlib.contextmanager
def batch_norm_policy(model: nn.Module, policy: str) -> Iterator[None]:
    """'error': refuse batch norm in training mode; 'eval': run those layers in eval mode, then restore."""
    if policy not in BATCH_NORM_POLICIES:
        raise ValueError(f"batch_norm must be one of {', '.join(BATCH_NORM_POLICIES)}, got {policy!r}")
    layers = train_mode_batch_norms(model)
    if layers and policy == "error":
        raise ValueError(
            f"per-example gradients are undefined with batch norm in training mode (layer {layers[0]!r}: "
            "examples interact through the batch statistics); call model.eval() or pass batch_norm='eval'"
        )
    modules = dict(model.named_modules())
    for name in layers:
        modules[name].eval()
    try:
        yield
    finally:
        for name in layers:
            modules[name].train()


def _pieces(batch: Batch, size: int | None) -> Iterator[Batch]:
    n = len(batch[0])
    step = n if size is None or size >= n else size
    for start in range(0, n, step):
        yield tuple(t[start : start + step] for t in batch)


def per_example_moments(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    *,
    microbatch_size: int | None = None,
    batch_norm: str = "error",
) -> dict[str, Moments]:
    """Per parameter name: the `Moments` (mean, second moment, variance) of the per-example gradients.

    Microbatches of `microbatch_size` examples bound the memory; the result does not depend on it. `.grad`
    is not touched (gradients are taken with `torch.autograd.grad`).
    """
    if microbatch_size is not None and microbatch_size < 1:
        raise ValueError(f"microbatch_size must be positive, got {microbatch_size}")
    n = len(batch[0])
    params = dict(model.named_parameters())
    with batch_norm_policy(model, batch_norm):
        plan = plan_layers(model)
        recorder, repeated = _accumulate(model, loss_fn, batch, plan, microbatch_size)
        if repeated:  # per-example gradients of a module applied several times sum before squaring
            plan = plan_layers(model, exclude=repeated)
            recorder, _ = _accumulate(model, loss_fn, batch, plan, microbatch_size)
    for name in plan.ruled:  # a layer the loss does not reach has zero gradient for every example
        if name not in recorder.sums:
            recorder.add(name, torch.zeros_like(params[name]), torch.zeros_like(params[name]))
    moments = recorder.moments(n)
    return {name: moments[name] for name in params if name in moments}


def _accumulate(
    model: nn.Module, loss_fn: LossFn, batch: Batch, plan: LayerPlan, microbatch_size: int | None
) -> tuple[MomentRecorder, frozenset[str]]:
    """Sums over all pieces, or (stopping early) the ruled modules applied more than once in one forward."""
    recorder = MomentRecorder(plan)
    params = dict(model.named_parameters())
    ruled = [params[name] for name in plan.ruled]
    for piece in _pieces(batch, microbatch_size):
        if ruled:
            recorder.calls.clear()
            recorder.attach()
            try:
                loss_sum = loss_fn(model, piece)[0]
                repeated = frozenset(name for name, count in recorder.calls.items() if count > 1)
                if repeated:
                    return recorder, repeated
                # Gradients with respect to the ruled parameters make every hooked output's gradient flow.
                torch.autograd.grad(loss_sum, ruled, allow_unused=True)
            finally:
                recorder.detach()
        if plan.fallback:
            for name, grads in per_example_grads(model, loss_fn, piece, plan.fallback).items():
                recorder.add(name, grads.sum(0), grads.square().sum(0))
    return recorder, frozenset()
