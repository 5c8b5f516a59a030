"""Recurrent cells applied to a batch of coordinates: [N, F] features, [N, H] states.

They follow Keras's conventions so that checkpoints of TensorFlow learned optimizers (thetianshuhuang/l2o)
map onto them directly: one bias per layer (PyTorch's `nn.LSTMCell` has two, which would change the weight
count of RNNProp from 5,141 to 5,301), gate order i, f, c, o (the same as PyTorch's i, f, g, o),
Glorot-uniform input kernels, orthogonal recurrent kernels, zero biases and a forget-gate bias of 1.
"""

from __future__ import annotations

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
