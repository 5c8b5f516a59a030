"""Recurrent cells applied to a batch of coordinates: [N, F] features, [N, H] states.

They follow Keras's conventions so that checkpoints of TensorFlow learned optimizers (thetianshuhuang/l2o)
map onto them directly: one bias per layer (PyTorch's `nn.LSTMCell` has two, which would change the weight
count of RNNProp from 5,141 to 5,301), gate order i, f, c, o (the same as PyTorch's i, f, g, o),
Glorot-uniform input kernels, orthogonal recurrent kernels, zero biases and a forget-gate bias of 1.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class LSTMCell(nn.Module):
    """h, c <- LSTM(x, (h, c)) for every row (coordinate) at once: two matmuls over the coordinate batch."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        h = self.hidden_size
        nn.init.xavier_uniform_(self.weight_ih)
        # Keras initialises the [H, 4H] recurrent kernel orthogonally as one matrix.
        nn.init.orthogonal_(self.weight_hh.data.T)
        with torch.no_grad():
            self.bias.zero_()
            self.bias[h : 2 * h] = 1.0  # unit forget bias

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        # Two matmuls on [x, h]: one for the three sigmoid gates (i, f, o), one for the cell input, so that
        # each activation runs on a contiguous block (sigmoid on a strided slice is several times slower).
        H = self.hidden_size
        weight = torch.cat([self.weight_ih, self.weight_hh], dim=1)
        xh = torch.cat([x, h], dim=1)
        w_sig = torch.cat([weight[: 2 * H], weight[3 * H :]])
        b_sig = torch.cat([self.bias[: 2 * H], self.bias[3 * H :]])
        sig = torch.sigmoid(torch.addmm(b_sig, xh, w_sig.t()))
        g = torch.tanh(torch.addmm(self.bias[2 * H : 3 * H], xh, weight[2 * H : 3 * H].t()))
        c = torch.addcmul(sig[:, H : 2 * H] * c, sig[:, :H], g)
        h = sig[:, 2 * H :] * torch.tanh(c)
        return h, c


def deployed_weight(cell: LSTMCell) -> Tensor:
    """The cell's kernels and bias as one [F + 1 + H, 4H] matrix for `[x, 1, h] @ weight`, with the gates
    reordered i, f, o, g (the three sigmoid gates first): the operand of `lstm_step_`."""
    H = cell.hidden_size
    order = torch.cat([torch.arange(2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
    order = order.to(cell.bias.device)
    return torch.cat([cell.weight_ih[order].t(), cell.bias[order][None], cell.weight_hh[order].t()])


class LSTMScratch(NamedTuple):
    """Buffers of `lstm_step_` for n coordinates, with their views made once (per-call view ops cost
    microseconds each, which adds up over thousands of chunks)."""

    xh: Tensor  # [n, F + 1 + H]: the input x, ones, the previous h
    x: Tensor  # xh[:, :F], filled by the caller
    h: Tensor  # xh[:, F + 1:]
    gates: Tensor  # [n, 4H]
    grouped: Tensor  # gates viewed [4, n, H]
    blocks: Tensor  # [4, n, H], contiguous
    sigmoid: Tensor  # blocks[:3]: i, f, o
    i: Tensor
    f: Tensor
    o: Tensor
    g: Tensor

    @classmethod
    def allocate(cls, n: int, input_size: int, hidden_size: int, work: Tensor) -> LSTMScratch:
        """`work`: a flat buffer of at least 8nH elements for the gates and blocks (layers may share one)."""
        F, H = input_size, hidden_size
        xh = work.new_empty(n, F + 1 + H)
        xh[:, F] = 1.0
        gates, blocks = work[: 4 * n * H].view(n, 4 * H), work[4 * n * H : 8 * n * H].view(4, n, H)
        grouped = gates.view(n, 4, H).transpose(0, 1)
        return cls(xh, xh[:, :F], xh[:, F + 1 :], gates, grouped, blocks, blocks[:3], *blocks)


def lstm_step_(scratch: LSTMScratch, weight: Tensor, h: Tensor, c: Tensor) -> None:
    """`LSTMCell.forward` without autograd, writing the new h and c over the old ones (contiguous [n, H]),
    with `weight = deployed_weight(cell)` and the input already in `scratch.x`.

    The ones column of `scratch.xh` meets the bias row of `weight`, so the matmul needs no separate pass to
    broadcast the bias. Every elementwise pass runs on a whole contiguous block: PyTorch's vectorised CPU
    loops only vectorise an inner dimension of at least two vector widths (32 floats with AVX-512), so an op
    on a 20-wide column slice of the [n, 4H] gates runs scalar, several times slower than one copy
    regrouping them gate-major.
    """
    s = scratch
    s.h.copy_(h)
    torch.mm(s.xh, weight, out=s.gates)
    s.blocks.copy_(s.grouped)
    s.sigmoid.sigmoid_()
    s.g.tanh_()
    c.mul_(s.f).addcmul_(s.i, s.g)
    torch.tanh(c, out=h)
    h.mul_(s.o)


class GRUCell(nn.Module):
    """h <- GRU(x, h) over a batch of rows (Keras's `reset_after=False` form: reset applied before the matmul)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.zeros(3 * hidden_size))
        nn.init.xavier_uniform_(self.weight_ih)
        nn.init.orthogonal_(self.weight_hh.data.T)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        H = self.hidden_size
        xi = torch.addmm(self.bias, x, self.weight_ih.t())
        w_zr, w_n = self.weight_hh[: 2 * H], self.weight_hh[2 * H :]
        zr = torch.sigmoid(xi[:, : 2 * H] + h @ w_zr.t())
        z, r = zr[:, :H], zr[:, H:]
        n = torch.tanh(xi[:, 2 * H :] + (r * h) @ w_n.t())
        return z * h + (1 - z) * n
