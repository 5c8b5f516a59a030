"""The choice policy of Optimizer Amalgamation (Huang et al., ICLR 2022; `l2o`'s `AbstractChoiceOptimizer`,
thetianshuhuang/l2o `policies/abstract_choice.py`): a coordinate-wise LSTM that mixes the updates of a pool
of analytical optimizers with a per-coordinate softmax.

Per optimizee tensor and coordinate, with u_k the full update of pool member k (its own learning rate
included, `optimlab.learned.pool`):

    x = [u_1 .. u_K, t / time_scale, rank == 1, rank == 2, rank >= 3]     (raw updates, no normalisation)
    x -> LSTM(20) -> LSTM(20) -> Dense(K) logits;  w = softmax(logits)
    delta = learning_rate * sum_k w_k u_k

The pools are the original's: `pool="small"` {RMSProp, Adam} and `pool="large"` {SGD, Momentum, RMSProp,
Adam, PowerSign, AddSign}, in the original's (`compat="l2o"`) or the textbook forms. With the defaults the
policy has 5,482 weights on the small pool and 5,886 on the large one. It is meta-trained on the meta-loss
alone (`preset=less_choice` / `more_choice`) and then serves as the single teacher of a distilled RNNProp
(`distill=choice`).

Differences from the original: the softmax subtracts its maximum (the original's could overflow); rank-4
(convolution) kernels get the `rank >= 3` flag where the original's encoding left them all zero; the
time feature is t / time_scale, unbounded, as the original computes it (a later line of its code overwrites
the bounded form it meant); the Gumbel-softmax `hardness` and the learning-rate multiplier head, both off in
the original's configurations, are not implemented.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from optimlab.errors import ConfigError
from optimlab.learned.cells import LSTMCell
from optimlab.learned.policies.base import Policy, State
from optimlab.learned.pool import build_pool

META_FEATURES = 4  # time and three rank flags


def rank_flags(shape: torch.Size | tuple[int, ...], like: Tensor) -> Tensor:
    """[N, 3] one-hot of the tensor's rank: 1 (biases), 2 (dense kernels), 3 or more (convolutions)."""
    n = int(torch.Size(shape).numel())
    rank = max(len(shape), 1)
    flags = like.new_zeros(n, 3)
    flags[:, min(rank, 3) - 1] = 1.0
    return flags


class Choice(Policy):
    name = "choice"

    def __init__(
        self,
        pool: str | list[Any] = "small",
        compat: str = "l2o",
        layers: tuple[int, ...] | list[int] = (20, 20),
        learning_rate: float = 1.0,
        use_meta_features: bool = True,
        time_scale: float = 2000.0,
    ):
        layers = [int(n) for n in layers]
        if not layers or min(layers) <= 0:
            raise ConfigError(f"policy key 'layers': expected positive sizes, got {layers}")
        if not time_scale > 0:
            raise ConfigError(f"policy key 'time_scale': must be positive, got {time_scale}")
        rules = build_pool(pool, compat, key="policy.pool")
        pool = pool if isinstance(pool, str) else [dict(r.spec()) for r in rules]
        super().__init__(
            pool=pool, compat=compat, layers=layers, learning_rate=learning_rate,
            use_meta_features=use_meta_features, time_scale=time_scale,
        )  # fmt: skip
        self.rules = rules
        k = len(rules)
        sizes = [k + (META_FEATURES if use_meta_features else 0), *layers]
        self.recurrent = nn.ModuleList(LSTMCell(i, h) for i, h in zip(sizes[:-1], sizes[1:]))
        self.logits = nn.Linear(layers[-1], k)
        nn.init.xavier_uniform_(self.logits.weight)
        nn.init.zeros_(self.logits.bias)
        self.recurrent_keys = tuple(f"{key}{i}" for i in range(len(layers)) for key in ("h", "c"))

    def init_state(self, param: Tensor) -> State:
        return self.init_state_for(param)

    def init_state_for(self, param: Tensor) -> State:
        flat = param.reshape(-1)
        n = flat.numel()
        state: State = {}
        for i, rule in enumerate(self.rules):
            for key, value in rule.init(flat).items():
                state[f"pool{i}_{key}"] = value
        for i, size in enumerate(self.hparams["layers"]):
            state[f"h{i}"] = flat.new_zeros(n, size)
            state[f"c{i}"] = flat.new_zeros(n, size)
        if self.hparams["use_meta_features"]:
            state["rank"] = rank_flags(param.shape, flat)
        return state

    def proposals(self, grad: Tensor, state: State, step: Tensor) -> tuple[Tensor, State]:
        """[N, K] updates of the pool members and their new states (under the same keys as `state`)."""
        updates, new = [], {}
        for i, rule in enumerate(self.rules):
            prefix = f"pool{i}_"
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            u, sub = rule.update(grad, sub, step)
            updates.append(u)
            new.update({prefix + k: v for k, v in sub.items()})
        return torch.stack(updates, dim=1), new

    def _inputs(self, updates: Tensor, state: State, step: Tensor) -> Tensor:
        if not self.hparams["use_meta_features"]:
            return updates
        time = (step / self.hparams["time_scale"]).to(updates.dtype).expand(len(updates), 1)
        return torch.cat([updates, time, state["rank"]], dim=1)

    def _recurrent(self, x: Tensor, state: State, new: State) -> Tensor:
        for i, cell in enumerate(self.recurrent):
            h, c = cell(x, state[f"h{i}"], state[f"c{i}"])
            new[f"h{i}"], new[f"c{i}"] = h, c
            x = h
        return x

    def forward(
        self, param: Tensor, grad: Tensor, state: State, step: Tensor, global_state: State
    ) -> tuple[Tensor, State]:
        updates, new = self.proposals(grad, state, step)
        if "rank" in state:
            new["rank"] = state["rank"]
        x = self._recurrent(self._inputs(updates, state, step), state, new)
        weights = torch.softmax(self.logits(x), dim=1)
        return self.hparams["learning_rate"] * (weights * updates).sum(dim=1), new

    def mixture_weights(self, param: Tensor, grad: Tensor, state: State, step: Tensor) -> Tensor:
        """The [N, K] softmax weights the policy gives the pool members at this step (for inspection)."""
        updates, _ = self.proposals(grad, state, step)
        x = self._recurrent(self._inputs(updates, state, step), state, {})
        return torch.softmax(self.logits(x), dim=1)
