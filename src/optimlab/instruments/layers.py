"""Per-example gradient moments of one layer from its input and output gradient (no extra backward).

For a layer whose output depends on each example's own input only, the gradient of example i's loss
summand with respect to the layer's weight is a contraction of the layer input `x_i` and the output
gradient `g_i` (both seen by the normal backward). Each rule returns, per parameter, the sum over the
examples of the per-example gradient and of its elementwise square:

- Linear, one position per example: `sum_i (g_i x_i^T)**2 = (g**2)^T (x**2)`, never forming the N
  per-example gradients (the identity behind BackPACK's `SumGradSquared`, Dangel et al., ICLR 2020).
- Linear over sequences, Conv1d, Conv2d: the per-example gradient sums over positions, so it is formed
  with one einsum (N x out x in), from the unfolded input for convolutions.
- Embedding: the per-example gradient of row v sums the output gradients at the positions holding v;
  only the (example, row) pairs present in the batch are formed, never N x vocab x dim.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (module, layer input, output gradient) -> {parameter attribute: (sum_i g_i, sum_i g_i**2)}
Rule = Callable[[nn.Module, Tensor, Tensor], dict[str, tuple[Tensor, Tensor]]]


def linear_rule(module: nn.Linear, x: Tensor, g: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    if x.dim() == 1:
        raise ValueError("per-example moments need a batch dimension: the Linear input is 1-D")
    out: dict[str, tuple[Tensor, Tensor]] = {}
    if x.dim() == 2:
        out["weight"] = (g.t() @ x, g.square().t() @ x.square())
        if module.bias is not None:
            out["bias"] = (g.sum(0), g.square().sum(0))
        return out
    x3, g3 = x.flatten(1, -2), g.flatten(1, -2)  # (N, positions, features)
    per_example = torch.einsum("npo,npi->noi", g3, x3)
    out["weight"] = (per_example.sum(0), per_example.square().sum(0))
    if module.bias is not None:
        bias = g3.sum(1)
        out["bias"] = (bias.sum(0), bias.square().sum(0))
    return out


def conv_supported(module: nn.Module) -> bool:
    """Zero padding given as numbers ('valid' counts): other modes and 'same' go to the general fallback."""
    if not isinstance(module, (nn.Conv1d, nn.Conv2d)) or module.padding_mode != "zeros":
        return False
    return not isinstance(module.padding, str) or module.padding == "valid"


def unfold(x: Tensor, kernel: tuple, dilation: tuple, padding: tuple, stride: tuple) -> Tensor:
    """F.unfold (N, C*kh*kw, positions) as one copy of a strided view of the padded input (F.unfold is
    several times slower on CPU)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    out_h = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    out_w = (w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    sn, sc, sh, sw = padded.stride()
    view = padded.as_strided(
        (n, c, kernel[0], kernel[1], out_h, out_w),
        (sn, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1]),
    )
    return view.reshape(n, c * kernel[0] * kernel[1], out_h * out_w)


def conv_rule(module: nn.Conv1d | nn.Conv2d, x: Tensor, g: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    spatial = 1 if isinstance(module, nn.Conv1d) else 2
    if x.dim() != spatial + 2:
        raise ValueError(f"per-example moments need a batch dimension: the {type(module).__name__} input is unbatched")
    padding = (0,) * spatial if isinstance(module.padding, str) else module.padding
    if spatial == 1:  # a 1-D convolution is a 2-D one over a height-1 image
        x = x.unsqueeze(2)
        kernel, dilation = (1, *module.kernel_size), (1, *module.dilation)
        padding, stride = (0, *padding), (1, *module.stride)
    else:
        kernel, dilation, stride = module.kernel_size, module.dilation, module.stride
    columns = unfold(x, kernel, dilation, padding, stride)  # (N, Cin*k, L)
    n, groups = x.shape[0], module.groups
    columns = columns.view(n, groups, -1, columns.shape[-1])
    g = g.reshape(n, groups, -1, columns.shape[-1])  # (N, G, Cout/G, L)
    per_example = torch.einsum("ngol,ngil->ngoi", g, columns).reshape(n, *module.weight.shape)
    out = {"weight": (per_example.sum(0), per_example.square().sum(0))}
    if module.bias is not None:
        bias = g.sum(-1).reshape(n, -1)
        out["bias"] = (bias.sum(0), bias.square().sum(0))
    return out


def embedding_supported(module: nn.Module) -> bool:
    """Frequency-scaled gradients couple the examples and max_norm rewrites the weight in the forward."""
    return isinstance(module, nn.Embedding) and not module.scale_grad_by_freq and module.max_norm is None


def embedding_rule(module: nn.Embedding, index: Tensor, g: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    if index.dim() == 0:
        raise ValueError("per-example moments need a batch dimension: the Embedding input is a scalar")
    vocab, dim = module.weight.shape
    n = index.shape[0]
    index = index.reshape(n, -1)
    g = g.reshape(n, -1, dim)
    keep = torch.ones_like(index, dtype=torch.bool)
    if module.padding_idx is not None:  # the padding row receives no gradient
        keep = index != module.padding_idx
    example = torch.arange(n, device=index.device).unsqueeze(1).expand_as(index)
    key = (example * vocab + index)[keep]
    pairs, inverse = torch.unique(key, return_inverse=True)
    per_pair = torch.zeros(len(pairs), dim, dtype=g.dtype, device=g.device).index_add_(0, inverse, g[keep])
    rows = pairs % vocab
    zeros = torch.zeros(vocab, dim, dtype=g.dtype, device=g.device)
    return {"weight": (zeros.index_add(0, rows, per_pair), zeros.index_add(0, rows, per_pair.square()))}


def rule_for(module: nn.Module) -> Rule | None:
    """The rule for this module, or None when its per-example gradients need the general fallback."""
    if type(module) is nn.Linear:
        return linear_rule
    if type(module) in (nn.Conv1d, nn.Conv2d) and conv_supported(module):
        return conv_rule
    if type(module) is nn.Embedding and embedding_supported(module):
        return embedding_rule
    return None
