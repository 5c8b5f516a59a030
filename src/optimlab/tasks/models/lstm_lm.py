"""A character/word-level LSTM language model: embedding -> LSTM -> linear readout to the vocabulary."""

from __future__ import annotations

from torch import Tensor, nn


class LSTMLanguageModel(nn.Module):
    """Logits (N, T, vocab) for token ids (N, T); each position predicts the next token.

    Every sequence starts from a zero state (no state is carried between batches, so batches can be
    sampled in any order).
    """

    def __init__(
        self, vocab: int, embedding_size: int = 64, hidden: int = 256, layers: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding_size)
        self.lstm = nn.LSTM(embedding_size, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(hidden, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        out, _ = self.lstm(self.dropout(self.embedding(tokens)))
        return self.readout(self.dropout(out))
