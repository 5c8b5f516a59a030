"""The learned-optimizer policy contract: a per-coordinate update rule as an `nn.Module`.

A policy sees one optimizee tensor at a time, flattened to N coordinates, and returns the step `delta`
(the optimizee update is `param <- param - delta`) and its new state. Its state is a dict of tensors whose
first dimension is N (so the same policy runs on any model, whatever its shapes), created by `init_state`;
hierarchical policies also keep a global state shared by all tensors (`init_global_state`,
`update_global`). The work per call is a handful of matmuls over the whole [N, F] feature matrix: no Python
loop ever runs over coordinates.

Everything the policy learns is an `nn.Parameter` registered on the module (no cells in plain lists, the
pitfall of ikostrikov/pytorch-meta-optimizer#11), so `named_parameters()` is the complete set of
meta-parameters and `torch.func.functional_call` can run the policy with perturbed or traced weights.
"""

from __future__ import annotations

import abc
from typing import Any

from torch import Tensor, nn

State = dict[str, Tensor]


class Policy(nn.Module, abc.ABC):
    """Base class: subclasses set `name`, store their constructor arguments in `self.hparams`."""

    name: str = ""
    # State entries of the recurrent network, held fixed during the SGD warm-up (the moments keep updating).
    recurrent_keys: tuple[str, ...] = ()
    # True when every coordinate's update depends on that coordinate alone: the optimizer may then split a
    # large tensor into cache-sized chunks.
    coordinatewise: bool = True

    def __init__(self, **hparams: Any):
        super().__init__()
        self.hparams = hparams

    @abc.abstractmethod
    def init_state(self, param: Tensor) -> State:
        """The per-coordinate state of a new optimizee tensor (first dimension: its number of elements)."""

    def init_state_for(self, param: Tensor) -> State:
        """The state of an optimizee tensor given in its own shape (policies with features of the tensor's
        shape, such as the choice policy's rank flags, override this; the others see it flattened)."""
        return self.init_state(param.reshape(-1))

    def init_global_state(self, like: Tensor) -> State:
        return {}

    def update_global(self, states: list[State], global_state: State) -> State:
        """The global state after every tensor was updated (hierarchical policies only)."""
        return global_state

    @abc.abstractmethod
    def forward(
        self, param: Tensor, grad: Tensor, state: State, step: Tensor, global_state: State
    ) -> tuple[Tensor, State]:
        """The step `delta` for one flattened tensor (`param <- param - delta`) and its new state."""

    def matmul_flops_per_coordinate(self) -> int:
        """Multiply-add FLOPs of the dense layers per coordinate and step (for the benchmark)."""
        return 2 * sum(p.numel() for n, p in self.named_parameters() if p.dim() == 2)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
