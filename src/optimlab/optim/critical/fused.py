r"""The fused steps (``fused=True`` on CPU): memory write and base update in one compiled pass.

When every tensor of a group is admitted, the eager step makes a dozen passes over parameter-sized
arrays, and on a CPU the evicted slot and the new one live in a memory too large for the cache. Here
`torch.compile` (inductor's C++ backend) turns `sgd_c_step` and `adam_c_step` into one loop per tensor
that reads the parameter, the gradient, the base optimizer's state, the running sum :math:`S` and the
evicted slot :math:`B_k` once, and writes each of them once:

.. math::
    d = g + \lambda_{\text{before}} \theta, \qquad
    a = w_d\, d + w_S\, S + \lambda_{\text{after}} \theta, \qquad
    S \leftarrow S + d - B_k, \qquad B_k \leftarrow d,

then torch's SGD (momentum, dampening, Nesterov) or Adam (bias corrections, AMSGrad) rule on :math:`a`,
after the decoupled shrink :math:`\theta \leftarrow (1 - \eta\lambda_{\text{decoupled}})\,\theta`.
:math:`(w_d, w_S)` are the aggregator's weights (`aggregate.linear_weights`). When no tensor is admitted
the memory writes are left out and the pass only reads :math:`S`. It is the eager path's arithmetic, so
the two agree to rounding (tested in float64).

Where the C++ toolchain is missing or compilation fails, the same functions run eagerly (correct,
slower) after one warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

class SGDScalars(NamedTuple):
    """`sgd_c_step`'s scalars, packed in this order into one tensor (tensors, so that a new lr or momentum
    reuses the compiled kernel instead of recompiling for a new Python float)."""

    lr: Tensor
    l2_before: Tensor  # L2 coefficient added to the gradient before it is stored
    l2_after: Tensor  # L2 coefficient added to the aggregated direction
    shrink: Tensor  # 1 - lr * decoupled weight decay
    momentum: Tensor
    one_minus_dampening: Tensor


class AdamScalars(NamedTuple):
    """`adam_c_step`'s scalars, packed in this order into one tensor."""

    l2_before: Tensor
    l2_after: Tensor
    shrink: Tensor
    one_minus_beta1: Tensor  # the first moment's lerp weight
    beta2: Tensor
    one_minus_beta2: Tensor
    eps: Tensor


class Weights(NamedTuple):
    """The rows of `per_tensor`: each tensor's aggregator weights (`aggregate.linear_weights`)."""

    current: Tensor  # w_d: weight of the current (offered) gradient
    total: Tensor  # w_S: weight of the memory's running sum


class AdamWeights(NamedTuple):
    """The rows of `adam_c_step`'s `per_tensor`: the aggregator weights, then Adam's bias corrections."""

    current: Tensor
    total: Tensor
    step_size: Tensor  # lr / bias_correction1
    bias_correction2_sqrt: Tensor  # sqrt(1 - beta2^t)


SGD_SCALARS = SGDScalars._fields
ADAM_SCALARS = AdamScalars._fields


def _direction(p: Tensor, g: Tensor, total: Tensor, w_d: Tensor, w_s: Tensor, l2_before, l2_after):
    """The offered tensor and the aggregated direction (`l2_*` are None when absent)."""
    offered = g if l2_before is None else g + l2_before * p
    direction = w_d * offered + w_s * total
    return offered, (direction if l2_after is None else direction + l2_after * p)


def _offer(total: Tensor, slot: Tensor, offered: Tensor) -> None:
    """Write `offered` into `slot`, keeping the running sum in step."""
    total.add_(offered - slot)
    slot.copy_(offered)


def sgd_c_step(
    params: list[Tensor],
    grads: list[Tensor],
    totals: list[Tensor],
    slots: list[Tensor],
    momentum_buffers: list[Tensor],
    scalars: Tensor,
    per_tensor: Tensor,
    *,
    l2_before: bool,
    l2_after: bool,
    decoupled: bool,
    momentum: bool,
    nesterov: bool,
) -> None:
    """One SGD_C step for a group, in place.

    Args:
        params, grads: the group's parameters and raw gradients.
        totals: each tensor's running sum.
        slots: the slot each gradient replaces (a free slot holds zeros, so the same formula fills the
            memory), or empty when nothing is admitted this step (the memory is then only read).
        momentum_buffers: torch SGD's buffers (already created), or empty when momentum is off.
        scalars: `SGDScalars` packed into one tensor, in the parameters' compute dtype.
        per_tensor: ``(2, len(params))``: the rows of `Weights` (each tensor's weight of the current
            gradient and of the running sum).
        l2_before, l2_after, decoupled, momentum, nesterov: which terms exist (the graph is specialised
            on them, so an absent term costs nothing).
    """
    s = SGDScalars(*scalars.unbind(0))
    w = Weights(*per_tensor.unbind(0))
    for i, (p, g, total) in enumerate(zip(params, grads, totals)):
        offered, direction = _direction(
            p, g, total, w.current[i], w.total[i], s.l2_before if l2_before else None, s.l2_after if l2_after else None
        )
        if momentum:
            buffer = momentum_buffers[i]
            buffer.mul_(s.momentum).add_(s.one_minus_dampening * direction)
            direction = direction + s.momentum * buffer if nesterov else buffer
        if decoupled:
            p.mul_(s.shrink)
        p.sub_(s.lr * direction)
        if slots:
            _offer(total, slots[i], offered)


def adam_c_step(
    params: list[Tensor],
    grads: list[Tensor],
    totals: list[Tensor],
    slots: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    scalars: Tensor,
    per_tensor: Tensor,
    *,
    l2_before: bool,
    l2_after: bool,
    decoupled: bool,
    amsgrad: bool,
) -> None:
    """One Adam_C / AdamW_C step for a group, in place (the step counters are advanced by the caller).

    Args as `sgd_c_step`, plus torch Adam's moments (``max_exp_avg_sqs`` empty unless `amsgrad`);
    `scalars` packs `AdamScalars` and `per_tensor` is ``(4, len(params))``, the rows of `AdamWeights`.
    """
    s = AdamScalars(*scalars.unbind(0))
    w = AdamWeights(*per_tensor.unbind(0))
    for i, (p, g, total, m, v) in enumerate(zip(params, grads, totals, exp_avgs, exp_avg_sqs)):
        offered, direction = _direction(
            p, g, total, w.current[i], w.total[i], s.l2_before if l2_before else None, s.l2_after if l2_after else None
        )
        if decoupled:
            p.mul_(s.shrink)
        m.lerp_(direction, s.one_minus_beta1)
        v.mul_(s.beta2).add_(s.one_minus_beta2 * direction * direction)  # addcmul's order of operations
        second = v
        if amsgrad:
            second = max_exp_avg_sqs[i].copy_(torch.maximum(max_exp_avg_sqs[i], v))
        denominator = second.sqrt() / w.bias_correction2_sqrt[i] + s.eps
        p.sub_(w.step_size[i] * (m / denominator))  # addcdiv's order of operations
        if slots:
            _offer(total, slots[i], offered)


_compiled: dict[Callable[..., None], Callable[..., None]] = {}
_failed = False


def run_fused(step: Callable[..., None], *args, **kwargs) -> None:
    """`step` (`sgd_c_step` or `adam_c_step`), compiled on first use; eager where it cannot be compiled.

    Dynamo checks its guards and compiles before the kernel touches a tensor, so a failure leaves
    everything unmodified and the eager call computes the step instead.
    """
    global _failed
    if not _failed:
        # Static shapes first; a second group layout in the process turns shapes dynamic (dynamo's default).
        if step not in _compiled:
            _compiled[step] = torch.compile(step, fullgraph=True)
        compiled = _compiled[step]
        try:
            return compiled(*args, **kwargs)
        except torch._dynamo.exc.FailOnRecompileLimitHit:
            pass  # more group layouts in this process than dynamo's recompile limit: this one runs eagerly
        except torch._dynamo.exc.TorchDynamoException as error:  # e.g. no working C++ compiler
            _failed = True
            message = str(error).strip().splitlines()
            warnings.warn(
                f"fused=True: torch.compile failed ({message[0] if message else type(error).__name__}); "
                "running the fused step eagerly",
                stacklevel=3,
            )
    return step(*args, **kwargs)
