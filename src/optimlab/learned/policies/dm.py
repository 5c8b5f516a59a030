"""The coordinate-wise LSTM optimizer of Andrychowicz et al., "Learning to learn by gradient descent by
gradient descent" (NeurIPS 2016), as `l2o` implements it (`policies/deepmind_2016.py`): the raw gradient
(no log/sign preprocessing) -> LSTM(20) -> LSTM(20) -> linear Dense(1), delta = learning_rate * output.
"""

from __future__ import annotations

from torch import Tensor, nn

from optimlab.errors import ConfigError
from optimlab.learned.cells import LSTMCell
from optimlab.learned.policies.base import Policy, State


class DMOptimizer(Policy):
    name = "dm"

    def __init__(self, layers: tuple[int, ...] | list[int] = (20, 20), learning_rate: float = 0.1):
        layers = [int(n) for n in layers]
        if not layers or min(layers) <= 0:
            raise ConfigError(f"policy key 'layers': expected positive sizes, got {layers}")
        super().__init__(layers=layers, learning_rate=learning_rate)
        sizes = [1, *layers]
        self.recurrent = nn.ModuleList(LSTMCell(i, h) for i, h in zip(sizes[:-1], sizes[1:]))
        self.delta = nn.Linear(layers[-1], 1)
        nn.init.xavier_uniform_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)
        self.recurrent_keys = tuple(f"{k}{i}" for i in range(len(layers)) for k in ("h", "c"))

    def init_state(self, param: Tensor) -> State:
        n = param.numel()
        state = {}
        for i, size in enumerate(self.hparams["layers"]):
            state[f"h{i}"] = param.new_zeros(n, size)
            state[f"c{i}"] = param.new_zeros(n, size)
        return state

    def forward(
        self, param: Tensor, grad: Tensor, state: State, step: Tensor, global_state: State
    ) -> tuple[Tensor, State]:
        x = grad.unsqueeze(1)
        new = {}
        for i, cell in enumerate(self.recurrent):
            h, c = cell(x, state[f"h{i}"], state[f"c{i}"])
            new[f"h{i}"], new[f"c{i}"] = h, c
            x = h
        return self.hparams["learning_rate"] * self.delta(x).squeeze(1), new
