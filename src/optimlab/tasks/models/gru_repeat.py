"""The GRU of the repeat (copy) task (Csordás et al. 2024, `tasks/gru_repeat.py: Model`).

One `nn.GRU` is shared by the encoder and the decoder, with one embedding table and a linear readout to the
symbol logits:

- encoder: reads the input string; its hidden state after the last real symbol is the "memory";
- decoder: starts from that memory; its input is SOS followed by the previous target symbols (teacher forcing,
  the "autoregressive" variant), or a constant NO_INPUT token at every step (`no_input=True`).

Sequences are batch-first and padded at the end. The GRU is causal, so the state at position length-1 does
not depend on the padding after it: taking it from the padded run equals running on the packed sequence.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GRURepeat(nn.Module):
    """Token ids: 0..symbols-1 are symbols, `symbols` is SOS, `symbols + 1` is NO_INPUT."""

    def __init__(self, symbols: int = 30, state_size: int = 128, embedding_size: int = 64, no_input: bool = False):
        super().__init__()
        self.symbols = symbols
        self.sos, self.no_input_token = symbols, symbols + 1
        self.no_input = no_input
        self.embedding = nn.Embedding(symbols + 2, embedding_size)
        self.gru = nn.GRU(embedding_size, state_size, batch_first=True)
        self.readout = nn.Linear(state_size, symbols)

    def encode(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """The memory: the GRU state (N, state_size) after each string's last symbol."""
        out, _ = self.gru(self.embedding(inputs))
        rows = torch.arange(len(inputs), device=inputs.device)
        return out[rows, lengths.to(inputs.device) - 1]

    def decode(self, memory: Tensor, targets: Tensor) -> Tensor:
        """Logits (N, T, symbols) for the T target positions, teacher-forced unless `no_input`."""
        n, steps = targets.shape
        if self.no_input:
            decoder_in = torch.full_like(targets, self.no_input_token)
        else:
            sos = torch.full((n, 1), self.sos, dtype=targets.dtype, device=targets.device)
            decoder_in = torch.cat([sos, targets[:, : steps - 1]], dim=1)
        out, _ = self.gru(self.embedding(decoder_in), memory.unsqueeze(0).contiguous())
        return self.readout(out)

    def forward(self, inputs: Tensor, lengths: Tensor, targets: Tensor) -> Tensor:
        return self.decode(self.encode(inputs, lengths), targets)
