"""A word-level LSTM language model whose hidden state is carried across training windows.

Embedding -> dropout -> multi-layer LSTM (dropout between layers) -> dropout -> linear readout to the
vocabulary, as in Zaremba et al. 2014 ("Recurrent neural network regularization", arXiv:1409.2329) and
PyTorch's word_language_model example; `tie_weights` shares the embedding and readout matrices (Press and
Wolf 2017, Inan et al. 2017), which needs `embedding_size == hidden`.

`forward(tokens, targets, keys)` returns the per-token negative log-likelihood and whether the most likely
word was right, both (N, T). In training mode, each row with key >= 0 starts from the state carried at the
end of the window that precedes it (`optimlab.tasks.carried_state`) and leaves its final state for the next
one. In evaluation mode every row starts from zeros, so a whole evaluation stream passed as one long row is
scored exactly; the readout is applied a few positions at a time so a long row with a large vocabulary
never materialises all its logits at once.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optimlab.tasks.carried_state import CarriedState

_LOGITS_PER_CHUNK = 1 << 23  # readout elements computed at once (32 MiB in float32)


class WordLanguageModel(nn.Module):
    def __init__(
        self,
        vocab: int,
        embedding_size: int = 650,
        hidden: int = 650,
        layers: int = 2,
        dropout: float = 0.5,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        if tie_weights and embedding_size != hidden:
            raise ValueError(f"tie_weights needs embedding_size == hidden, got {embedding_size} and {hidden}")
        self.layers, self.hidden = layers, hidden
        self.embedding = nn.Embedding(vocab, embedding_size)
        self.lstm = nn.LSTM(embedding_size, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(hidden, vocab)
        if tie_weights:
            self.readout.weight = self.embedding.weight
        # PyTorch's word_language_model example: uniform(-0.1, 0.1) embedding and readout, zero readout bias.
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if not tie_weights:
            nn.init.uniform_(self.readout.weight, -0.1, 0.1)
        nn.init.zeros_(self.readout.bias)
        self.carried = CarriedState()  # not a parameter or buffer: checkpointed by the carried-state step hook

    def forward(self, tokens: Tensor, targets: Tensor, keys: Tensor | None = None) -> tuple[Tensor, Tensor]:
        n = len(tokens)
        weight = self.embedding.weight
        zeros = tuple(weight.new_zeros(self.layers, n, self.hidden) for _ in range(2))
        carry = self.training and keys is not None
        state = self.carried.read(keys, zeros) if carry else zeros
        features, (h, c) = self.lstm(self.dropout(self.embedding(tokens)), state)
        if carry:
            # The next window of row r has key keys[r] + 1: it starts where this one ended.
            self.carried.write(torch.where(keys >= 0, keys + 1, -1), (h, c))
        features = self.dropout(features)
        steps = max(1, _LOGITS_PER_CHUNK // max(1, n * self.readout.out_features))
        nll, correct = [], []
        for start in range(0, tokens.shape[1], steps):
            logits = self.readout(features[:, start : start + steps])
            target = targets[:, start : start + steps]
            nll.append(nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none"))
            correct.append(logits.argmax(dim=-1) == target)
        return torch.cat(nll, dim=1), torch.cat(correct, dim=1)
