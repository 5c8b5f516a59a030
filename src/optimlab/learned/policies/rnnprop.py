"""RNNProp (Lv, Jiang and Li, "Learning Gradient Descent: Better Generalization and Longer Horizons",
ICML 2017), in the variant of the `l2o` framework (thetianshuhuang/l2o, `policies/rnnprop_2016.py`) used as
the student of Optimizer Amalgamation (Huang et al., ICLR 2022).

Per coordinate, with m and v Adam's moments:

    m̂ = m / (1 - β1),  v̂ = v / (1 - β2)       (l2o's constant correction; `bias_correction="standard"`
                                                 divides by 1 - β^t as Adam does)
    x = [m̂ / sqrt(v̂ + ε), g / sqrt(v̂ + ε)]
    x -> LSTM(20) -> LSTM(20) -> Dense(1);  delta = alpha * tanh(.)      so |delta| <= alpha

With the defaults it has 5,141 weights. `input_layer=True` adds the original RNNProp's (vfleaking/rnnprop)
Dense(2 -> 20) + ELU before the LSTMs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optimlab.errors import ConfigError
from optimlab.learned.cells import LSTMCell
from optimlab.learned.policies.base import Policy, State

BIAS_CORRECTIONS = ("l2o_constant", "standard")


class RNNProp(Policy):
    name = "rnnprop"

    def __init__(
        self,
        layers: tuple[int, ...] | list[int] = (20, 20),
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        alpha: float = 0.1,
        epsilon: float = 1e-10,
        bias_correction: str = "l2o_constant",
        input_layer: bool = False,
    ):
        layers = [int(n) for n in layers]
        if not layers or min(layers) <= 0:
            raise ConfigError(f"policy key 'layers': expected positive sizes, got {layers}")
        if bias_correction not in BIAS_CORRECTIONS:
            raise ConfigError(
                f"policy key 'bias_correction': {bias_correction!r} is not one of {', '.join(BIAS_CORRECTIONS)}"
            )
        for key, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= beta < 1.0:
                raise ConfigError(f"policy key {key!r}: must be in [0, 1), got {beta}")
        super().__init__(
            layers=layers, beta_1=beta_1, beta_2=beta_2, alpha=alpha, epsilon=epsilon,
            bias_correction=bias_correction, input_layer=input_layer,
        )  # fmt: skip
        self.input = nn.Linear(2, layers[0]) if input_layer else None
        sizes = [layers[0] if input_layer else 2, *layers]
        self.recurrent = nn.ModuleList(LSTMCell(i, h) for i, h in zip(sizes[:-1], sizes[1:]))
        self.delta = nn.Linear(layers[-1], 1)
        nn.init.xavier_uniform_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)
        self.recurrent_keys = tuple(f"{k}{i}" for i in range(len(layers)) for k in ("h", "c"))

    def init_state(self, param: Tensor) -> State:
        n = param.numel()
        state = {"m": param.new_zeros(n), "v": param.new_zeros(n)}
        for i, size in enumerate(self.hparams["layers"]):
            state[f"h{i}"] = param.new_zeros(n, size)
            state[f"c{i}"] = param.new_zeros(n, size)
        return state

    def forward(
        self, param: Tensor, grad: Tensor, state: State, step: Tensor, global_state: State
    ) -> tuple[Tensor, State]:
        hp = self.hparams
        b1, b2 = hp["beta_1"], hp["beta_2"]
        m = torch.lerp(state["m"], grad, 1 - b1)
        v = torch.lerp(state["v"], grad * grad, 1 - b2)
        if hp["bias_correction"] == "standard":
            t = step + 1
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        else:
            m_hat, v_hat = m / (1 - b1), v / (1 - b2)
        r = torch.rsqrt(v_hat + hp["epsilon"])
        x = torch.stack([m_hat * r, grad * r], dim=1)
        if self.input is not None:
            x = nn.functional.elu(self.input(x))
        new = {"m": m, "v": v}
        for i, cell in enumerate(self.recurrent):
            h, c = cell(x, state[f"h{i}"], state[f"c{i}"])
            new[f"h{i}"], new[f"c{i}"] = h, c
            x = h
        delta = hp["alpha"] * torch.tanh(self.delta(x)).squeeze(1)
        return delta, new
