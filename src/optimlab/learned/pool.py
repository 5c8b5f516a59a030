"""The analytical optimizers that Optimizer Amalgamation (Huang et al., "Optimizer Amalgamation", ICLR 2022;
VITA-Group/OptimizerAmalgamation) amalgamates: SGD, Momentum, RMSProp, Adam, AddSign and PowerSign as small
pure update rules over flat coordinate tensors.

    rule = Adam(lr=0.02)                              # compat="l2o" by default
    state = rule.init(param)                          # dict of tensors shaped like `param`
    delta, state = rule.update(grad, state, step)     # param <- param - delta;  step = updates so far

Every rule exists in two forms:

- `compat="l2o"`: the formulas of the `l2o` framework (thetianshuhuang/l2o, `policies/analytical.py`), which
  the original's teachers and choice pools use. They are not the textbook ones: Momentum is an exponential
  moving average (m <- β m + (1 - β) g, so its steady-state step is lr g); RMSProp puts ε inside the square
  root and has no bias correction; Adam divides by the *constant* (1 - β), m̂ = m / (1 - β1),
  v̂ = v / (1 - β2), which scales the step by [(1 - β1^t)/(1 - β1)] sqrt[(1 - β2)/(1 - β2^t)] relative to
  textbook Adam (2.06 at t = 10, 1.03 at t = 100, 0.40 at t = 1000); PowerSign and AddSign replace the signs
  by tanh(g / r) tanh(m / r) with r = sqrt(v + ε), which makes them differentiable.
- `compat="standard"`: the textbook forms. Momentum is heavy ball (m <- β m + g, as `torch.optim.SGD`);
  RMSProp is Tieleman and Hinton's (ε outside the root, as `torch.optim.RMSprop`); Adam is Kingma and Ba's
  with the 1 - β^t bias correction; PowerSign and AddSign are Bello et al.'s (ICML 2017) with
  sign(g) sign(m), m an exponential moving average of g, base e and α = 1.

The defaults are the original's teacher settings (`config/presets.py`); `POOLS` holds its choice pools
(`config/defaults.py`): the small pool {RMSProp, Adam} and the large pool of all six, with the learning
rates found by its grid search, and `large_2021` with those of its first release.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from optimlab.errors import ConfigError, suggest, unknown_name

State = dict[str, Tensor]
COMPATS = ("l2o", "standard")


def _check_compat(compat: str) -> None:
    if compat not in COMPATS:
        raise ConfigError(f"pool key 'compat': {compat!r} is not one of {', '.join(COMPATS)}")


@dataclass(frozen=True)
class Rule(abc.ABC):
    """Base of the pool's update rules: hyperparameters only; `update` is a pure function of its inputs."""

    name: ClassVar[str] = ""
    lr: float = 0.01
    compat: str = "l2o"

    def __post_init__(self) -> None:
        _check_compat(self.compat)

    def init(self, param: Tensor) -> State:
        return {}

    @abc.abstractmethod
    def update(self, grad: Tensor, state: State, step: Any = 0) -> tuple[Tensor, State]:
        """(delta, new state) for gradient `grad` after `step` earlier updates (param <- param - delta)."""

    def spec(self) -> dict[str, Any]:
        """The rule as a JSON-able dict (`build_rule(rule.spec())` rebuilds it)."""
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class SGD(Rule):
    name: ClassVar[str] = "sgd"
    lr: float = 0.2

    def update(self, grad: Tensor, state: State, step: Any = 0) -> tuple[Tensor, State]:
        return self.lr * grad, {}


@dataclass(frozen=True)
class Momentum(Rule):
    name: ClassVar[str] = "momentum"
    lr: float = 0.5
    beta_1: float = 0.9

    def init(self, param: Tensor) -> State:
        return {"m": torch.zeros_like(param)}

    def update(self, grad: Tensor, state: State, step: Any = 0) -> tuple[Tensor, State]:
        if self.compat == "l2o":  # exponential moving average: the steady-state step is lr * g
            m = self.beta_1 * state["m"] + (1 - self.beta_1) * grad
        else:  # heavy ball: the steady-state step is lr * g / (1 - beta)
            m = self.beta_1 * state["m"] + grad
        return self.lr * m, {"m": m}


@dataclass(frozen=True)
class RMSProp(Rule):
    name: ClassVar[str] = "rmsprop"
    lr: float = 0.005
    rho: float = 0.9
    epsilon: float = 1e-10

    def init(self, param: Tensor) -> State:
        return {"ms": torch.zeros_like(param)}

    def update(self, grad: Tensor, state: State, step: Any = 0) -> tuple[Tensor, State]:
        ms = self.rho * state["ms"] + (1 - self.rho) * grad * grad
        if self.compat == "l2o":
            delta = self.lr * grad / torch.sqrt(ms + self.epsilon)
        else:
            delta = self.lr * grad / (torch.sqrt(ms) + self.epsilon)
        return delta, {"ms": ms}


def _moments(rule: Any, grad: Tensor, state: State) -> tuple[Tensor, Tensor]:
    m = rule.beta_1 * state["m"] + (1 - rule.beta_1) * grad
    v = rule.beta_2 * state["v"] + (1 - rule.beta_2) * grad * grad
    return m, v


@dataclass(frozen=True)
class Adam(Rule):
    name: ClassVar[str] = "adam"
    lr: float = 0.005
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-10

    def init(self, param: Tensor) -> State:
        return {"m": torch.zeros_like(param), "v": torch.zeros_like(param)}

    def update(self, grad: Tensor, state: State, step: Any = 0) -> tuple[Tensor, State]:
        m, v = _moments(self, grad, state)
        if self.compat == "l2o":  # constant correction, epsilon inside the root
            delta = self.lr * (m / (1 - self.beta_1)) / torch.sqrt(v / (1 - self.beta_2) + self.epsilon)
        else:
            t = step + 1
            m_hat, v_hat = m / (1 - self.beta_1**t), v / (1 - self.beta_2**t)
            delta = self.lr * m_hat / (torch.sqrt(v_hat) + self.epsilon)
        return delta, {"m": m, "v": v}


@dataclass(frozen=True)
class _Sign(Rule):
    """PowerSign and AddSign: the gradient scaled by a function of the agreement of sign(g) and sign(m)."""

    lr: float = 0.1
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-10

    def init(self, param: Tensor) -> State:
        if self.compat == "l2o":
            return {"m": torch.zeros_like(param), "v": torch.zeros_like(param)}
        return {"m": torch.zeros_like(param)}

    def agreement(self, grad: Tensor, state: State) -> tuple[Tensor, State]:
        if self.compat == "l2o":  # tanh(g / r) tanh(m / r), r = sqrt(v + eps): a differentiable sign product
            m, v = _moments(self, grad, state)
            r = torch.sqrt(v + self.epsilon)
            return torch.tanh(grad / r) * torch.tanh(m / r), {"m": m, "v": v}
        m = self.beta_1 * state["m"] + (1 - self.beta_1) * grad
        return torch.sign(grad) * torch.sign(m), {"m": m}


@dataclass(frozen=True)
class PowerSign(_Sign):
    name: ClassVar[str] = "powersign"

    def update(self, grad: Tensor, state: State, step: Any = 0) -> tuple[Tensor, State]:
        agree, new = self.agreement(grad, state)
        return self.lr * torch.exp(agree) * grad, new


@dataclass(frozen=True)
class AddSign(_Sign):
    name: ClassVar[str] = "addsign"

    def update(self, grad: Tensor, state: State, step: Any = 0) -> tuple[Tensor, State]:
        agree, new = self.agreement(grad, state)
        return self.lr * (1 + agree) * grad, new


RULES: dict[str, type[Rule]] = {cls.name: cls for cls in (SGD, Momentum, RMSProp, Adam, PowerSign, AddSign)}

# The original's choice pools (OptimizerAmalgamation `config/defaults.py`, `less_choice` / `more_choice`).
POOLS: dict[str, list[dict[str, Any]]] = {
    "small": [
        {"name": "rmsprop", "lr": 0.005, "rho": 0.9, "epsilon": 1e-7},
        {"name": "adam", "lr": 0.02, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-10},
    ],
    "large": [
        {"name": "sgd", "lr": 2.0},
        {"name": "momentum", "lr": 2.0, "beta_1": 0.9},
        {"name": "rmsprop", "lr": 0.005, "rho": 0.9, "epsilon": 1e-7},
        {"name": "adam", "lr": 0.02, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-10},
        {"name": "powersign", "lr": 1.0, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-10},
        {"name": "addsign", "lr": 1.0, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-10},
    ],
    # The large pool's learning rates at the original's first release (the era of its pre-trained weights).
    "large_2021": [
        {"name": "sgd", "lr": 0.2},
        {"name": "momentum", "lr": 0.5, "beta_1": 0.9},
        {"name": "rmsprop", "lr": 0.005, "rho": 0.9, "epsilon": 1e-7},
        {"name": "adam", "lr": 0.005, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-10},
        {"name": "powersign", "lr": 0.1, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-10},
        {"name": "addsign", "lr": 0.1, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-10},
    ],
}


def parse_rule_spec(spec: str | dict[str, Any], key: str = "pool") -> dict[str, Any]:
    """A rule spec as a dict: `"adam"`, `"adam:0.01"` (name and learning rate) or `{"name": "adam", ...}`."""
    if isinstance(spec, str):
        name, sep, lr = spec.partition(":")
        out: dict[str, Any] = {"name": name.strip()}
        if sep:
            try:
                out["lr"] = float(lr)
            except ValueError:
                raise ConfigError(f"{key}: {spec!r}: expected NAME or NAME:LR with a number LR") from None
        return out
    if isinstance(spec, dict) and "name" in spec:
        return dict(spec)
    raise ConfigError(f"{key}: {spec!r}: expected a rule name, NAME:LR or a dict with a 'name'")


def build_rule(spec: str | dict[str, Any], compat: str | None = None, key: str = "pool") -> Rule:
    """One rule from a spec; `compat` (when given) overrides the spec's."""
    spec = parse_rule_spec(spec, key)
    name = spec.pop("name")
    if name not in RULES:
        raise unknown_name(f"{key} rule", name, RULES)
    cls = RULES[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    for arg in spec:
        if arg not in fields:
            raise ConfigError(f"{key}: unknown key {arg!r} for rule {name!r}{suggest(arg, fields)}")
    if compat is not None:
        spec["compat"] = compat
    return cls(**spec)


def build_pool(pool: str | list, compat: str = "l2o", key: str = "pool") -> list[Rule]:
    """The rules of a named pool (`small`, `large`, `large_2021`) or of a list of specs."""
    if isinstance(pool, str):
        if pool not in POOLS:
            raise unknown_name(key, pool, POOLS)
        pool = POOLS[pool]
    rules = [build_rule(spec, compat, key) for spec in pool]
    if not rules:
        raise ConfigError(f"{key}: expected at least one rule")
    return rules
