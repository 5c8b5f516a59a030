r"""SGD_C's fused step (``fused=True`` on CPU): the memory write and the SGD update in one compiled pass.

When every tensor of a group is admitted, the eager step makes about eleven passes over parameter-sized
arrays, and on a CPU the evicted slot and the new one live in a memory too large for the cache. Here
`torch.compile` (inductor's C++ backend) turns `sgd_c_step` into one loop per tensor that reads
:math:`\theta, g, S` and the evicted slot :math:`B_k` once and writes :math:`\theta, S, B_k` once:

.. math::
    d = g + \lambda_{\text{before}} \theta, \qquad
    a = w_g d + w_S S + \lambda_{\text{after}} \theta, \qquad
    S \leftarrow S + d - B_k, \qquad B_k \leftarrow d,

then torch SGD's momentum, dampening and Nesterov rules on :math:`a`, and
:math:`\theta \leftarrow \rho\,\theta - \eta\,a` (:math:`\rho = 1 - \eta\lambda_{\text{decoupled}}`).
When no tensor is admitted the memory writes are left out and the pass only reads :math:`S`.
:math:`(w_g, w_S)` are the aggregator's weights (`aggregate.linear_weights`). It is the same arithmetic as
the eager path, so the two agree to rounding (tested in float64).

Where the C++ toolchain is missing or compilation fails, the same function runs eagerly (correct, slower)
after one warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

#: Order of the entries of `sgd_c_step`'s `scalars` vector.
SCALARS = ("lr", "l2_before", "l2_after", "shrink", "momentum", "one_minus_dampening")


def sgd_c_step(
    params: list[Tensor],
    grads: list[Tensor],
    totals: list[Tensor],
    slots: list[Tensor],
    momentum_buffers: list[Tensor],
    scalars: Tensor,
    weights: Tensor,
    *,
    l2_before: bool,
    l2_after: bool,
    decoupled: bool,
    momentum: bool,
    nesterov: bool,
) -> None:
    """One admitted SGD_C step for a group, in place.

    Args:
        params, grads: the group's parameters and raw gradients.
        totals: each tensor's running sum.
        slots: the slot each gradient replaces (a free slot holds zeros, so the same formula fills the
            memory), or empty when nothing is admitted this step (the memory is then only read).
        momentum_buffers: torch SGD's buffers (already created), or empty when momentum is off.
        scalars: the values named in `SCALARS`, in the parameters' compute dtype.
        weights: ``(2, len(params))``: each tensor's weight of the current gradient and of the sum.
        l2_before, l2_after, decoupled, momentum, nesterov: which terms exist (the graph is specialised
            on them, so an absent term costs nothing).
    """
    lr = scalars[0]
    for i, (p, g, total) in enumerate(zip(params, grads, totals)):
        offered = g + scalars[1] * p if l2_before else g
        direction = weights[0, i] * offered + weights[1, i] * total
        if l2_after:
            direction = direction + scalars[2] * p
        if momentum:
            buffer = momentum_buffers[i]
            buffer.mul_(scalars[4]).add_(scalars[5] * direction)
            direction = direction + scalars[4] * buffer if nesterov else buffer
        if decoupled:
            p.mul_(scalars[3])
        p.sub_(lr * direction)
        if slots:
            total.add_(offered - slots[i])
            slots[i].copy_(offered)


_compiled: Callable[..., None] | None = None
_failed = False


def run_sgd_c_step(*args, **kwargs) -> None:
    """`sgd_c_step`, compiled on first use; eager where it cannot be compiled.

    Dynamo checks its guards and compiles before the kernel touches a tensor, so a failure leaves
    everything unmodified and the eager call computes the step instead.
    """
    global _compiled, _failed
    if not _failed:
        if _compiled is None:
            # Static shapes first; a second group layout in the process turns shapes dynamic (dynamo's default).
            _compiled = torch.compile(sgd_c_step, fullgraph=True)
        try:
            return _compiled(*args, **kwargs)
        except torch._dynamo.exc.FailOnRecompileLimitHit:
            pass  # more group layouts in this process than dynamo's recompile limit: this one runs eagerly
        except torch._dynamo.exc.TorchDynamoException as error:  # e.g. no working C++ compiler
            _failed = True
            message = str(error).strip().splitlines()
            warnings.warn(
                f"SGD_C(fused=True): torch.compile failed ({message[0] if message else type(error).__name__}); "
                "running the fused step eagerly",
                stacklevel=3,
            )
    return sgd_c_step(*args, **kwargs)
