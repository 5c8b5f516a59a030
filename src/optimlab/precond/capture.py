"""The inputs and output gradients of K-FAC's layers as feature-major matrices, recorded in one forward/backward.

K-FAC's factors are `A = a a^T / count` and `G = d d^T / examples` with `a` (d_in [+1], examples x positions)
the layer's input vectors (a convolution's receptive fields, a 1 appended for the bias) and `d` (d_out,
examples x positions) the gradients with respect to its outputs (Grosse & Martens 2016, "A Kronecker-factored
approximate Fisher matrix for convolution layers"). The columns are the same vectors, in the same order, as
`optimlab.directions.layers.input_patches` / `output_grads` give them row by row (examples, positions,
features); only the layout differs.

Why a layout of its own: the product wants each feature's values contiguous. `F.unfold` writes
(B, features, positions) and the row-wise form then needs its transpose copied next to a column of ones; for the
second convolution of a small ConvNet (16 channels, 14x14, 3x3) that is 20 ms against 3.5 ms for gathering the
receptive fields directly into (features, B, positions) from a zero-padded strided view (one copy, whole rows
of positions at a time).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn
from torch.nn import functional as F
from typing_extensions import Self

from optimlab.directions.layers import LayerCapture


def _pair(value: int | tuple[int, ...], two_d: bool, height: int) -> tuple[int, int]:
    """(height, width) of a Conv1d/Conv2d hyperparameter; a Conv1d is a Conv2d of height 1 (`height` is the
    value along that dimension: 0 for the padding, 1 for the stride and dilation)."""
    values = value if isinstance(value, tuple) else (value,) * (2 if two_d else 1)
    return (values[0], values[1]) if two_d else (height, values[0])


def _reused(out: Tensor | None, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """`out` when it has this shape, dtype and device, else a new uninitialised tensor."""
    if out is not None and out.shape == shape and out.dtype == like.dtype and out.device == like.device:
        return out
    return like.new_empty(shape)


def input_rows(module: nn.Module, x: Tensor, out: Tensor | None = None) -> Tensor:
    """(d_in [+1], examples x positions): the layer's input vectors as columns, a row of ones for the bias.

    Column `b * positions + t` is example b's vector at output position t (row-major over the output's
    height and width), and row `c * kh * kw + i * kw + j` is input channel c at kernel offset (i, j): the order
    of `weight.flatten(1)`. Written into `out` when it has the right shape, dtype and device.
    """
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        flat = x.reshape(-1, x.shape[-1])
        out = _reused(out, (flat.shape[1] + bias, flat.shape[0]), x)
        out[: flat.shape[1]].copy_(flat.T)
    else:
        two_d = isinstance(module, nn.Conv2d)
        x = x if two_d else x.unsqueeze(2)
        kernel = _pair(module.kernel_size, two_d, 1)
        stride, dilation = _pair(module.stride, two_d, 1), _pair(module.dilation, two_d, 1)
        padding = (0, 0) if module.padding == "valid" else _pair(module.padding, two_d, 0)
        padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
        spans = [dilation[k] * (kernel[k] - 1) + 1 for k in (0, 1)]
        # (B, C, out_h, out_w, span_h, span_w) windows, every dilation-th element: (B, C, out_h, out_w, kh, kw)
        windows = padded.unfold(2, spans[0], stride[0]).unfold(3, spans[1], stride[1])
        windows = windows[..., :: dilation[0], :: dilation[1]]
        batch, channels, out_h, out_w = windows.shape[:4]
        features = channels * kernel[0] * kernel[1]
        out = _reused(out, (features + bias, batch * out_h * out_w), x)
        target = out[:features].view(channels, kernel[0], kernel[1], batch, out_h, out_w)
        target.copy_(windows.permute(1, 4, 5, 0, 2, 3))
    if bias:
        out[-1] = 1
    return out


def output_rows(module: nn.Module, grad: Tensor, out: Tensor | None = None) -> Tensor:
    """(d_out, examples x positions): the gradients with respect to the layer's outputs, columns ordered as
    `input_rows`. A convolution's (B, channels, positions) gradient is copied channel-major, whole rows of
    positions at a time (into `out` when it has the right shape, dtype and device); a Linear's is a view."""
    if isinstance(module, nn.Linear):
        return grad.reshape(-1, grad.shape[-1]).T
    channels_first = grad.flatten(2).transpose(0, 1)
    out = _reused(out, (grad.shape[1], channels_first.shape[1] * channels_first.shape[2]), grad)
    out.view(channels_first.shape).copy_(channels_first)
    return out


class FactorCapture(LayerCapture):
    """Records each layer's `(input_rows, output_rows)` for a forward run inside `with` and `backward(loss)`.

    The hooks and `backward` are those of `optimlab.directions.layers.LayerCapture`; this recorder writes
    the factor products' row layouts instead of its patches and gradients.

    The matrices are written into the same buffers at every capture of the same shapes (they are only valid
    until the next one): allocating them afresh (18 MB for a small ConvNet's two convolutions at batch 128)
    cost more than gathering them, about 10 ms per capture on a loaded CPU against 4 ms for the copies.
    """

    def __init__(self, layers: dict[str, nn.Module]):
        super().__init__(layers)
        self.examples: dict[str, int] = {}  # the leading (example) dimension of each layer's input
        self._buffers: dict[tuple[str, str], Tensor] = {}  # (layer, "a" or "d") -> the last matrix written

    def __enter__(self) -> Self:
        self.examples.clear()
        return super().__enter__()

    def _layer_input(self, name: str, module: nn.Module, x: Tensor) -> Tensor:
        rows = self._buffers[name, "a"] = input_rows(module, x, self._buffers.get((name, "a")))
        self.examples[name] = x.shape[0]
        return rows

    def _output_grad(self, name: str, module: nn.Module, grad: Tensor) -> Tensor:
        rows = self._buffers[name, "d"] = output_rows(module, grad, self._buffers.get((name, "d")))
        return rows

    def pairs(self) -> Iterator[tuple[str, Tensor, Tensor, int]]:
        """(name, input rows, output-gradient rows, examples) of every layer that saw both a forward and a
        backward."""
        for name in self.layers:
            if name in self.inputs and name in self.grads:
                yield name, self.inputs[name], self.grads[name], self.examples[name]
