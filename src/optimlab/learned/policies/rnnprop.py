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

`forward` is the functional step that meta-training differentiates through; `deployed_step` computes the
same update (up to float rounding) without autograd, in place and in cache-sized chunks, for
`LearnedOptimizer`, or in one pass in the native kernel of `optimlab.learned.kernels` where that applies.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optimlab.errors import ConfigError
from optimlab.learned.cells import LSTMCell, LSTMScratch, deployed_weight, lstm_step_
from optimlab.learned.kernels.rnnprop import fused_step
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

    @torch.no_grad()
    def deployed_step(
        self,
        param: Tensor,
        grad: Tensor,
        state: State,
        step: Tensor,
        lr: float,
        warmup_lr: float | None = None,
        chunk_size: int = 4096,
        fused: bool = True,
    ) -> None:
        """`param -= lr * delta` with `state` updated in place, on flat contiguous tensors: what `forward`
        computes, up to float rounding, without autograd.

        Coordinates go through in chunks of `chunk_size`, each chunk through every layer before the next,
        so that the per-chunk activations ([chunk, 4H] gates and their [4, chunk, H] regrouping) stay in the
        core's L2 cache, and every result is written straight into the state. With `warmup_lr` the step is
        SGD at that rate and only the moments advance (as `LearnedOptimizer` warms up).

        With `fused` (the default) the step runs in the native kernel of `optimlab.learned.kernels` where it
        applies (float32 contiguous CPU tensors, 20-wide LSTM layers, no input layer; `OPTIMLAB_FUSED=0`
        turns it off): one pass over the coordinates, the same update up to float32 rounding and the
        kernel's activation error (docs/performance.md); `chunk_size` then does not matter."""
        hp = self.hparams
        b1, b2 = hp["beta_1"], hp["beta_2"]
        if warmup_lr is not None:
            state["m"].lerp_(grad, 1 - b1)
            state["v"].lerp_(grad * grad, 1 - b2)
            param.add_(warmup_lr * grad, alpha=-lr)
            return
        if hp["bias_correction"] == "standard":
            t = step + 1
            c1, c2 = 1 - b1**t, 1 - b2**t
        else:
            c1, c2 = 1 - b1, 1 - b2
        if fused and fused_step(self, param, grad, state, float(c1), float(c2), lr):
            return
        weights = self._deployed_weights()
        w_out, b_out, alpha = self.delta.weight[0], self.delta.bias, hp["alpha"]
        chunk = min(chunk_size, param.numel())
        states = [state[f"{k}{i}"].split(chunk) for i in range(len(self.recurrent)) for k in ("h", "c")]
        for p, g, m, v, *hc in zip(
            param.split(chunk), grad.split(chunk), state["m"].split(chunk), state["v"].split(chunk), *states
        ):
            n = len(g)
            s = self._scratch(n, param)
            m.lerp_(g, 1 - b1)
            torch.mul(g, g, out=s.r)
            v.lerp_(s.r, 1 - b2)
            torch.div(v, c2, out=s.r)
            s.r.add_(hp["epsilon"]).rsqrt_()
            torch.div(m, c1, out=s.features[0]).mul_(s.r)
            torch.mul(g, s.r, out=s.features[1])
            if self.input is not None:
                nn.functional.elu_(torch.addmm(self.input.bias, s.features.t(), self.input.weight.t(), out=s.embedded))
                s.cells[0].x.copy_(s.embedded)
            for i, (cell, weight) in enumerate(zip(s.cells, weights)):
                h, c = hc[2 * i], hc[2 * i + 1]
                lstm_step_(cell, weight, h, c)
                if i + 1 < len(s.cells):
                    s.cells[i + 1].x.copy_(h)
            torch.addmv(b_out, h, w_out, out=s.out).tanh_().mul_(alpha)
            p.add_(s.out, alpha=-lr)

    # Per-call set-up (weights regrouped, buffers allocated) costs about 80 us, as much as the step of a
    # 200-coordinate tensor: models with many small tensors (biases, norms) would pay it per tensor and step.
    def _deployed_weights(self) -> list[Tensor]:
        """`deployed_weight` of each cell, remade only when a weight changed (in place or replaced)."""
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters())
        cached = self.__dict__.get("_deployed_cache")
        if cached is None or cached[0] != key:
            cached = (key, [deployed_weight(cell) for cell in self.recurrent])
            self.__dict__["_deployed_cache"] = cached
        return cached[1]

    def _scratch(self, n: int, like: Tensor) -> _Scratch:
        """Buffers for chunks of n coordinates, kept for the sizes seen recently (the chunk size, and the sizes
        of tensors smaller than a chunk and of last chunks)."""
        cache = self.__dict__.setdefault("_scratch_cache", {})
        key = (n, like.dtype, like.device)
        if key not in cache:
            if sum(k[0] for k in cache) + n > 32768:  # about 1 KB per coordinate: keep under ~32 MB
                cache.clear()
            cache[key] = _Scratch(self, n, like)
        return cache[key]


class _Scratch:
    """`RNNProp.deployed_step`'s buffers for chunks of n coordinates."""

    def __init__(self, policy: RNNProp, n: int, like: Tensor):
        sizes = [policy.input.out_features if policy.input is not None else 2, *policy.hparams["layers"]]
        work = like.new_empty(8 * n * max(sizes[1:]))  # the gates of one layer at a time: shared
        self.cells = [LSTMScratch.allocate(n, f, h, work) for f, h in zip(sizes[:-1], sizes[1:])]
        self.r, self.out = like.new_empty(n), like.new_empty(n)  # 1/sqrt(v_hat + eps); the policy's output
        if policy.input is None:  # the two features go straight into the first LSTM's input columns
            self.features = self.cells[0].x.t()
        else:
            self.features, self.embedded = like.new_empty(2, n), like.new_empty(n, sizes[0])
