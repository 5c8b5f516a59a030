"""One step's gradient: the mean loss over the global batch, microbatched, under AMP, across DDP ranks."""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import Tensor, nn

from optimlab.tasks import Task
from optimlab.train.distributed import World, all_reduce_sum

Batch = tuple[Tensor, ...]


def backward(
    model: nn.Module,
    task: Task,
    batch: Batch,
    microbatch_size: int | None,
    amp_dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler,
    world: World,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor | int]:
    """Accumulate the gradient of the mean loss over the global batch into `.grad`; return (loss sum, count).

    Losses are (sum, count) pairs, so the result is exact for uneven microbatches, uneven rank shares and
    token-count losses: the gradients of the sums are accumulated and divided once by the global count.
    `create_graph` keeps the gradient's graph (for hooks that differentiate it: hypergradients).
    """
    size = len(batch[0])
    autocast = (
        torch.autocast(batch[0].device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    if _whole_batch(size, microbatch_size, world):
        with autocast:
            loss_sum, count = task.loss(task.forward(model, batch), batch)
        loss_sum = _at_least_float32(loss_sum)
        # Seeding backward with 1/count gives the gradient of sum/count without a division node in the graph.
        seed = _reciprocal(count, loss_sum)
        if create_graph:  # autograd.grad, not backward: no parameter <-> .grad reference cycle
            params = [p for p in model.parameters() if p.requires_grad]
            grads = torch.autograd.grad(scaler.scale(loss_sum), params, seed, create_graph=True, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = g
        else:
            scaler.scale(loss_sum).backward(seed)
        return loss_sum.detach(), count

    step = microbatch_size or size
    starts = range(0, size, step)
    total = torch.zeros(2, dtype=torch.float64, device=batch[0].device)
    for i, start in enumerate(starts):
        piece = tuple(t[start : start + step] for t in batch)
        last = i == len(starts) - 1
        sync = model.no_sync() if world.distributed and not last else contextlib.nullcontext()
        with sync:
            with autocast:
                loss_sum, count = task.loss(task.forward(model, piece), piece)
            scaler.scale(_at_least_float32(loss_sum)).backward(create_graph=create_graph)
        total[0] += loss_sum.detach().double()
        total[1] += count
    all_reduce_sum(total, world)
    # DDP averages gradients over ranks; undo that and divide by the global count instead.
    factor = world.world_size / float(total[1])
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    torch._foreach_mul_(grads, factor)
    return total[0], total[1]


def backward_seed(
    size: int, count: Tensor | int, microbatch_size: int | None, scaler: torch.amp.GradScaler, world: World
) -> float:
    """The factor `backward` seeded every backward call with: 1/count for a whole batch (1 when microbatched or
    distributed, where the division comes after), times the fp16 loss scale."""
    loss_scale = scaler.get_scale() if scaler.is_enabled() else 1.0
    return loss_scale / float(count) if _whole_batch(size, microbatch_size, world) else loss_scale


def _whole_batch(size: int, microbatch_size: int | None, world: World) -> bool:
    """Whether `backward` takes the batch in one call (seeded with 1/count) rather than in accumulated pieces."""
    return (microbatch_size is None or microbatch_size >= size) and not world.distributed


def clip_and_measure(
    parameters: list[Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    max_norm: float | None,
    measure: bool,
) -> float | None:
    """Clip the gradient to `max_norm` (if set); return its norm before clipping when clipping or `measure`."""
    if max_norm is None and not measure:
        return None
    scaler.unscale_(optimizer)  # a no-op without AMP; with it, norms and clipping see the true gradient
    if max_norm is not None:
        return float(nn.utils.clip_grad_norm_(parameters, max_norm))
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    with torch.no_grad():
        return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))


def _reciprocal(count: Tensor | int, like: Tensor) -> Tensor:
    if isinstance(count, Tensor):
        return (1.0 / count).to(like.dtype)
    return _constant(1.0 / count, like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _constant(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A cached scalar tensor (creating one costs microseconds, a noticeable share of a small step)."""
    return torch.tensor(value, dtype=dtype, device=device)


def _at_least_float32(loss: Tensor) -> Tensor:
    """Half-precision losses (under autocast) are summed and backpropagated in float32."""
    return loss.float() if loss.dtype in (torch.float16, torch.bfloat16) else loss
