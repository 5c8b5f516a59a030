"""Hessian-vector products by double backward and the top Hessian eigenvalue by power iteration.

The sharpness measure of Cockpit's `HessMaxEV` (Schneider, Dangel & Hennig, NeurIPS 2021) and of the
edge-of-stability literature (Cohen et al., ICLR 2021): the loss's Hessian at the current parameters is
never formed; each iteration costs one Hessian-vector product (Pearlmutter 1994), a backward pass through
the gradient's graph, which is built once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class TopEigen:
    eigenvalue: float  # the Rayleigh quotient v^T H v of the final unit vector
    vector: list[Tensor]  # the final unit vector, shaped like the parameters
    hvps: int  # Hessian-vector products used
    converged: bool


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def hessian_vector_product(gradient: Sequence[Tensor], params: Sequence[Tensor], v: Sequence[Tensor]) -> list[Tensor]:
    """H v from a gradient built with `create_graph=True` (the graph is kept for further products)."""
    hv = torch.autograd.grad(gradient, params, grad_outputs=list(v), retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(params, hv)]


def top_eigenvalue(
    loss: Callable[[], Tensor],
    params: Sequence[Tensor],
    *,
    iterations: int = 20,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
) -> TopEigen:
    """The Hessian eigenvalue of largest magnitude of `loss()` with respect to `params`, by power iteration.

    Stops when the Rayleigh quotient changes by less than `tol` (relative) between iterations, or after
    `iterations` products. Power iteration converges at rate |lambda_2 / lambda_1|. The start vector is
    drawn from `generator` (not the global RNG).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be positive, got {iterations}")
    params = list(params)
    gradient = torch.autograd.grad(loss(), params, create_graph=True)
    v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    norm = torch.sqrt(_dot(v, v))
    v = [x / norm for x in v]
    eigenvalue, converged, used = 0.0, False, 0
    for used in range(1, iterations + 1):
        hv = hessian_vector_product(gradient, params, v)
        estimate = float(_dot(v, hv))
        norm = float(torch.sqrt(_dot(hv, hv)))
        if norm == 0.0:  # v is in the null space: the Hessian along it is 0
            return TopEigen(0.0, v, used, True)
        previous, eigenvalue = eigenvalue, estimate
        v = [h / norm for h in hv]
        if used > 1 and abs(eigenvalue - previous) <= tol * abs(eigenvalue):
            converged = True
            break
    return TopEigen(eigenvalue, v, used, converged)
