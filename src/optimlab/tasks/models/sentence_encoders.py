"""Sentence encoders and the sentence-pair classifier of InferSent (Conneau et al. 2017, arXiv:1705.02364).

Three encoder families, as compared in that paper and used by the critical-gradients paper on SNLI:

- `lstm`: a unidirectional LSTM; the sentence is its last hidden state (at the sentence's true length);
- `infersent`: a bidirectional LSTM, max-pooled over time (InferSent's encoder);
- `convnet`: Conneau et al.'s hierarchical ConvNet: 4 convolution layers (kernel 3), each layer's output
  max-pooled over time, the four vectors concatenated.

Padding never leaks into a sentence vector: LSTMs run on packed sequences and max-pooling masks padded
positions. The pair classifier feeds [u, v, |u - v|, u * v] to an MLP (one hidden layer, as InferSent's).
`BiLSTMClassifier` (one sentence, max-pooled BiLSTM) serves the dialogue task.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ENCODERS = ("lstm", "infersent", "convnet")


def masked_max(features: Tensor, lengths: Tensor) -> Tensor:
    """Max over time of (N, T, D) features, ignoring positions at or beyond each length."""
    mask = torch.arange(features.shape[1], device=features.device)[None, :] >= lengths.to(features.device)[:, None]
    return features.masked_fill(mask[:, :, None], float("-inf")).amax(dim=1)


class Embedding(nn.Module):
    """Word embeddings, learned or initialised from pretrained vectors (optionally frozen)."""

    def __init__(
        self, vocab: int, size: int, vectors: Tensor | None = None, freeze: bool = False, dropout: float = 0.0
    ):
        super().__init__()
        self.table = nn.Embedding(vocab, size, padding_idx=0)
        if vectors is not None:
            if vectors.shape != (vocab, size):
                raise ValueError(f"pretrained vectors are {tuple(vectors.shape)}, expected {(vocab, size)}")
            self.table.weight.data.copy_(vectors)
        self.table.weight.requires_grad_(not (freeze and vectors is not None))
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.dropout(self.table(tokens))


class SentenceEncoder(nn.Module):
    def __init__(self, kind: str, input_size: int, hidden: int):
        super().__init__()
        if kind not in ENCODERS:
            raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {kind!r}")
        self.kind = kind
        if kind == "convnet":
            sizes = [input_size] + [hidden] * 4
            self.convs = nn.ModuleList(nn.Conv1d(a, b, 3, padding=1) for a, b in zip(sizes, sizes[1:]))
            self.output_size = 4 * hidden
        else:
            bidirectional = kind == "infersent"
            self.lstm = nn.LSTM(input_size, hidden, batch_first=True, bidirectional=bidirectional)
            self.output_size = hidden * (2 if bidirectional else 1)

    def forward(self, embedded: Tensor, lengths: Tensor) -> Tensor:
        if self.kind == "convnet":
            # Zeroing padded positions after every layer makes each sentence's vector independent of how much
            # padding its batch has: a convolution then sees zeros past the end, as with its own zero padding.
            valid = (
                torch.arange(embedded.shape[1], device=embedded.device)[None, :] < lengths.to(embedded.device)[:, None]
            )
            valid = valid[:, None, :].to(embedded.dtype)
            x, pooled = embedded.transpose(1, 2) * valid, []
            for conv in self.convs:
                x = torch.relu(conv(x)) * valid
                pooled.append(masked_max(x.transpose(1, 2), lengths))
            return torch.cat(pooled, dim=1)
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, _) = self.lstm(packed)
        if self.kind == "lstm":
            return h[-1]
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=embedded.shape[1])
        return masked_max(out, lengths)


class PairClassifier(nn.Module):
    """Logits for (premise, premise lengths, hypothesis, hypothesis lengths)."""

    def __init__(self, embedding: Embedding, encoder: SentenceEncoder, classes: int, mlp_hidden: int, dropout: float):
        super().__init__()
        self.embedding, self.encoder = embedding, encoder
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(4 * encoder.output_size, mlp_hidden), nn.Tanh(),
            nn.Dropout(dropout), nn.Linear(mlp_hidden, classes),
        )  # fmt: skip

    def forward(
        self, premise: Tensor, premise_lengths: Tensor, hypothesis: Tensor, hypothesis_lengths: Tensor
    ) -> Tensor:
        u = self.encoder(self.embedding(premise), premise_lengths)
        v = self.encoder(self.embedding(hypothesis), hypothesis_lengths)
        return self.classifier(torch.cat([u, v, (u - v).abs(), u * v], dim=1))


class BiLSTMClassifier(nn.Module):
    """Logits for (tokens, lengths): embedding, max-pooled bidirectional LSTM, linear readout."""

    def __init__(self, vocab: int, embedding_size: int, hidden: int, classes: int, dropout: float):
        super().__init__()
        self.embedding = Embedding(vocab, embedding_size, dropout=dropout)
        self.encoder = SentenceEncoder("infersent", embedding_size, hidden)
        self.readout = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.encoder.output_size, classes))

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.readout(self.encoder(self.embedding(tokens), lengths))
