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

import torch
from torch import Tensor

#: Entries of `sgd_c_step`'s `scalars`; its `per_tensor` rows are (w_d, w_S).
SGD_SCALARS = ("lr", "l2_before", "l2_after", "shrink", "momentum", "one_minus_dampening")
#: Entries of `adam_c_step`'s `scalars`; its `per_tensor` rows are (w_d, w_S, lr / bias_correction1,
#: sqrt(bias_correction2)).
ADAM_SCALARS = ("l2_before", "l2_after", "shrink", "one_minus_beta1", "beta2", "one_minus_beta2", "eps")


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
        scalars: the values named in `SGD_SCALARS`, in the parameters' compute dtype.
        per_tensor: ``(2, len(params))``: each tensor's weight of the current gradient and of the sum.
        l2_before, l2_after, decoupled, momentum, nesterov: which terms exist (the graph is specialised
            on them, so an absent term costs nothing).
    """
    lr = scalars[0]
    for i, (p, g, total) in enumerate(zip(params, grads, totals)):
        offered, direction = _direction(
            p, g, total, per_tensor[0, i], per_tensor[1, i],
            scalars[1] if l2_before else None, scalars[2] if l2_after else None,
        )  # fmt: skip
        if momentum:
            buffer = momentum_buffers[i]
            buffer.mul_(scalars[4]).add_(scalars[5] * direction)
            direction = direction + scalars[4] * buffer if nesterov else buffer
        if decoupled:
            p.mul_(scalars[3])
        p.sub_(lr * direction)
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
    `scalars` holds `ADAM_SCALARS` and `per_tensor` is ``(4, len(params))``.
    """
    for i, (p, g, total, m, v) in enumerate(zip(params, grads, totals, exp_avgs, exp_avg_sqs)):
        offered, direction = _direction(
            p, g, total, per_tensor[0, i], per_tensor[1, i],
            scalars[0] if l2_before else None, scalars[1] if l2_after else None,
        )  # fmt: skip
        if decoupled:
            p.mul_(scalars[2])
        m.lerp_(direction, scalars[3])
        v.mul_(scalars[4]).add_(scalars[5] * direction * direction)  # addcmul's order of operations
        second = v
        if amsgrad:
            second = max_exp_avg_sqs[i].copy_(torch.maximum(max_exp_avg_sqs[i], v))
        denominator = second.sqrt() / per_tensor[3, i] + scalars[6]
        p.sub_(per_tensor[2, i] * (m / denominator))  # addcdiv's order of operations
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
