"""Small float64 models and batches for the instrument tests, and the naive per-example reference."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def classification_loss(model: nn.Module, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y, reduction="sum"), len(y)


def token_loss(model: nn.Module, batch):
    """Sequence loss: one summand per row (the row's tokens summed), count = tokens."""
    (tokens,) = batch
    logits = model(tokens[:, :-1])
    targets = tokens[:, 1:]
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    return loss, targets.numel()


class LSTMModel(nn.Module):
    def __init__(self, vocab: int = 7, dim: int = 4, hidden: int = 5) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.readout = nn.Linear(hidden, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.readout(self.lstm(self.embedding(tokens))[0])


class Twice(nn.Module):
    """A Linear layer applied twice per forward: its per-example gradient sums both applications."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


def mlp() -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(inplace=True), nn.Linear(8, 3))
    return model.double(), (torch.randn(10, 6, dtype=torch.float64), torch.randint(0, 3, (10,)))


def convnet1d() -> tuple[nn.Module, tuple]:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv1d(2, 4, 5, stride=2, padding=1), nn.ReLU(), nn.Conv1d(4, 4, 3, dilation=2, groups=2),
        nn.ReLU(), nn.Flatten(), nn.LazyLinear(3),
    ).double()
    x = torch.randn(9, 2, 20, dtype=torch.float64)
    model(x)  # materialise the lazy layer
    return model, (x, torch.randint(0, 3, (9,)))


def convnet2d() -> tuple[nn.Module, tuple]:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, stride=2, padding="valid"),
        nn.ReLU(), nn.Flatten(), nn.Linear(6, 3),
    ).double()
    return model, (torch.randn(8, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (8,)))


def lstm_lm() -> tuple[nn.Module, tuple]:
    torch.manual_seed(3)
    tokens = torch.randint(0, 7, (6, 9))
    tokens[:2, -3:] = 0  # padding positions
    return LSTMModel().double(), (tokens,)


def twice() -> tuple[nn.Module, tuple]:
    torch.manual_seed(4)
    return Twice().double(), (torch.randn(7, 6, dtype=torch.float64), torch.randint(0, 3, (7,)))


def naive_moments(model: nn.Module, loss_fn, batch) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """(mean, second moment, variance) from an explicit Python loop over the examples."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    grads = {name: [] for name in names}
    for i in range(len(batch[0])):
        loss = loss_fn(model, tuple(t[i : i + 1] for t in batch))[0]
        for name, p, g in zip(names, params, torch.autograd.grad(loss, params, allow_unused=True)):
            grads[name].append(torch.zeros_like(p) if g is None else g)
    out = {}
    for name, rows in grads.items():
        g = torch.stack(rows)
        out[name] = (g.mean(0), g.square().mean(0), g.var(0, unbiased=True))
    return out
