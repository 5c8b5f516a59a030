"""Distances from per-example layer gradients to rank-1 cluster centres, without per-example gradients.

Gradient clustering (Faghri et al. 2020) constrains each centre to be rank-1 per layer, `C_k = c_out c_in^T`.
For an example with input patches `a_t` and output gradients `d_t` (positions t), the weight gradient is
`G = sum_t d_t a_t^T` and

    ||G - C_k||^2 = ||G||^2 + ||c_in||^2 ||c_out||^2 - 2 sum_t (c_in . a_t)(c_out . d_t)

`||G||^2` is either `sum_{s,t} (a_s . a_t)(d_s . d_t)` (the Gram form, B T^2 (d_in + d_out) work) or the
squared norm of the materialised `G` (B T d_in d_out work); the cheaper one is used. Per layer and batch
this adds O(B K T (d_in + d_out)) to the backward.
"""

from __future__ import annotations

import torch
from torch import Tensor


def materialize_is_cheaper(a: Tensor, d: Tensor) -> bool:
    positions, d_in, d_out = a.shape[1], a.shape[2], d.shape[2]
    return positions > 1 and positions * d_in * d_out <= positions * positions * (d_in + d_out)


def per_example_matrices(a: Tensor, d: Tensor) -> Tensor:
    """(B, d_out, d_in): each example's gradient of `[weight.flatten(1) | bias]`."""
    return torch.einsum("bto,bti->boi", d, a)


def layer_terms(
    a: Tensor, d: Tensor, c_in: Tensor, c_out: Tensor, materialize: bool | None = None, g: Tensor | None = None
) -> Tensor:
    """(B, K) squared distances of one layer's per-example gradients to the K rank-1 centres; `g`, the
    per-example matrices when the caller has them, selects the materialised form."""
    materialize = materialize_is_cheaper(a, d) if materialize is None else materialize
    centre_norms = (c_in * c_in).sum(1) * (c_out * c_out).sum(1)
    if materialize or g is not None:
        g = per_example_matrices(a, d) if g is None else g
        norms = (g * g).sum((1, 2))
        cross = torch.einsum("boi,ki,ko->bk", g, c_in, c_out)
    else:
        if a.shape[1] == 1:
            norms = (a * a).sum((1, 2)) * (d * d).sum((1, 2))
        else:
            norms = (torch.einsum("bsi,bti->bst", a, a) * torch.einsum("bso,bto->bst", d, d)).sum((1, 2))
        cross = (torch.einsum("bti,ki->btk", a, c_in) * torch.einsum("bto,ko->btk", d, c_out)).sum(1)
    return norms[:, None] + centre_norms[None, :] - 2 * cross


def rank1_fit(matrices: Tensor) -> tuple[Tensor, Tensor]:
    """(c_in (K, d_in), c_out (K, d_out)) with `c_out c_in^T` the best rank-1 approximation of each matrix
    (its top singular pair, the scale split evenly): the centre minimising the cluster's distortion."""
    u, s, vh = torch.linalg.svd(matrices, full_matrices=False)
    root = s[:, 0].sqrt()
    return vh[:, 0, :] * root[:, None], u[:, :, 0] * root[:, None]
