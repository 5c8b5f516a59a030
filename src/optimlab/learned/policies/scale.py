"""A hierarchical RNN learned optimizer after Wichrowska et al., "Learned Optimizers that Scale and
Generalize" (ICML 2017), in the form of `l2o`'s `ScaleHierarchicalOptimizer`.

Three recurrent levels: a per-coordinate GRU(20), a per-tensor GRU(10) fed with the mean of its
coordinates' hidden states, and a global GRU(10) fed with the mean of the tensor states. Per coordinate:

- momentum and second moment at 4 timescales, with decays beta^(0.5^s); the base decays come from sigmoid
  heads on the coordinate's hidden state (zero kernels, biases logit(0.9) and logit(0.999));
- inputs: the RMS-normalised momenta, the log second moments relative to their mean over timescales, the log
  learning rate relative to its tensor mean, and the tensor's and the global hidden states (tiled);
- direction d = zero-initialised head + a linear shortcut on the normalised momenta (so the untrained
  policy is a multi-timescale Adam);
- log learning rate eta <- sigmoid(gamma) eta + (1 - sigmoid(gamma)) (head + eta_bar), gamma = 3.2,
  eta_bar = log(1e-3) initially;
- delta = (exp(eta) + lr_offset) * d, with lr_offset = 1e-2 as in `l2o`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from optimlab.learned.cells import GRUCell
from optimlab.learned.policies.base import Policy, State


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class ScaleHierarchical(Policy):
    name = "scale"
    coordinatewise = False  # the tensor level averages over the tensor's coordinates
    recurrent_keys = ("h", "tensor_h")

    def __init__(self, param_units: int = 20, tensor_units: int = 10, global_units: int = 10, timescales: int = 4,
                 init_lr: float = 1e-3, lr_offset: float = 1e-2, epsilon: float = 1e-12):  # fmt: skip
        super().__init__(
            param_units=param_units, tensor_units=tensor_units, global_units=global_units, timescales=timescales,
            init_lr=init_lr, lr_offset=lr_offset, epsilon=epsilon,
        )  # fmt: skip
        k = timescales
        self.param_rnn = GRUCell(2 * k + 1 + tensor_units + global_units, param_units)
        self.tensor_rnn = GRUCell(param_units, tensor_units)
        self.global_rnn = GRUCell(tensor_units, global_units)
        self.beta_1 = nn.Linear(param_units, 1)
        self.beta_2 = nn.Linear(param_units, 1)
        self.direction = nn.Linear(param_units, 1, bias=False)
        self.shortcut = nn.Linear(k, 1, bias=False)
        self.lr = nn.Linear(param_units, 1, bias=False)
        self.eta_bar = nn.Parameter(torch.tensor(math.log(init_lr)))
        self.gamma = nn.Parameter(torch.tensor(3.2))
        with torch.no_grad():
            for head, beta in ((self.beta_1, 0.9), (self.beta_2, 0.999)):
                head.weight.zero_()
                head.bias.fill_(_logit(beta))
            self.direction.weight.zero_()
            self.lr.weight.zero_()
            self.shortcut.weight.fill_(1.0 / k)
        self.register_buffer("halvings", 0.5 ** torch.arange(k, dtype=torch.float32), persistent=False)

    def init_state(self, param: Tensor) -> State:
        n, k = param.numel(), self.hparams["timescales"]
        return {
            "m": param.new_zeros(n, k),
            "v": param.new_zeros(n, k),
            "eta": param.new_full((n,), math.log(self.hparams["init_lr"])),
            "h": param.new_zeros(n, self.hparams["param_units"]),
            "tensor_h": param.new_zeros(1, self.hparams["tensor_units"]),
        }

    def init_global_state(self, like: Tensor) -> State:
        return {"global_h": like.new_zeros(1, self.hparams["global_units"])}

    def forward(
        self, param: Tensor, grad: Tensor, state: State, step: Tensor, global_state: State
    ) -> tuple[Tensor, State]:
        eps = self.hparams["epsilon"]
        h = state["h"]
        halvings = self.halvings.to(grad.dtype)
        beta_1 = torch.sigmoid(self.beta_1(h)) ** halvings  # [N, k]: beta^(0.5^s)
        beta_2 = torch.sigmoid(self.beta_2(h)) ** halvings
        g = grad.unsqueeze(1)
        m = beta_1 * state["m"] + (1 - beta_1) * g
        v = beta_2 * state["v"] + (1 - beta_2) * g * g
        m_norm = m * torch.rsqrt(v + eps)
        log_v = torch.log(v + eps)
        rel_log_v = log_v - log_v.mean(dim=1, keepdim=True)
        eta = state["eta"]
        rel_eta = (eta - eta.mean()).unsqueeze(1)
        n = len(grad)
        context = torch.cat([state["tensor_h"], global_state["global_h"]], dim=1).expand(n, -1)
        h = self.param_rnn(torch.cat([m_norm, rel_log_v, rel_eta, context], dim=1), h)
        d = (self.direction(h) + self.shortcut(m_norm)).squeeze(1)
        keep = torch.sigmoid(self.gamma)
        eta = keep * eta + (1 - keep) * (self.lr(h).squeeze(1) + self.eta_bar)
        delta = (torch.exp(eta) + self.hparams["lr_offset"]) * d
        tensor_h = self.tensor_rnn(h.mean(dim=0, keepdim=True), state["tensor_h"])
        return delta, {"m": m, "v": v, "eta": eta, "h": h, "tensor_h": tensor_h}

    def update_global(self, states: list[State], global_state: State) -> State:
        mean_tensor = torch.cat([s["tensor_h"] for s in states]).mean(dim=0, keepdim=True)
        return {"global_h": self.global_rnn(mean_tensor, global_state["global_h"])}
