"""The optimizer registry: lower-case name -> optimizer class.

Every `torch.optim` optimizer is registered by its lower-case class name; optimlab's own optimizers add one
line `register("name", Class)` in `optimlab/optim/__init__.py`. `build_optimizer` validates keyword
arguments against the class signature, so a misspelled hyperparameter is an error naming it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

from optimlab.errors import ConfigError, suggest
from optimlab.registry import Registry

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")


def register(name: str, factory: Callable[..., torch.optim.Optimizer], description: str = "") -> None:
    """Register an optimizer class (or factory) `(params, **hyperparameters)`; the same one twice is a no-op."""
    OPTIMIZERS.register(name, factory, description)


def _register_torch_optimizers() -> None:
    for cls_name in dir(torch.optim):
        cls = getattr(torch.optim, cls_name)
        if (
            inspect.isclass(cls)
            and issubclass(cls, torch.optim.Optimizer)
            and cls is not torch.optim.Optimizer
            and cls_name not in ("SparseAdam", "Muon")  # sparse gradients only; 2-D only ("muon" is optimlab's)
        ):
            register(cls_name.lower(), cls)


def _register_schedulefree() -> None:
    """Schedule-Free AdamW/SGD when the optional `schedulefree` package is installed."""
    try:
        schedulefree = importlib.import_module("schedulefree")
    except ImportError:
        return
    register("adamw_schedulefree", schedulefree.AdamWScheduleFree)
    register("sgd_schedulefree", schedulefree.SGDScheduleFree)


_register_torch_optimizers()
_register_schedulefree()


def available(zoo: bool = False) -> list[str]:
    """The registered optimizers; with `zoo`, also pytorch_optimizer's `po.<name>` ones when it is installed
    (`optimlab list optimizers` shows them; test suites that loop over optimizers keep to optimlab's own)."""
    from optimlab.optim import zoo as po

    own = {name for name in OPTIMIZERS.names() if not name.startswith(po.PREFIX)}
    return sorted(own | set(po.zoo_names())) if zoo else sorted(own)


def get_optimizer_class(name: str) -> Callable[..., torch.optim.Optimizer]:
    from optimlab.optim import zoo

    if name.startswith(zoo.PREFIX) and name not in OPTIMIZERS:
        register(name, zoo.zoo_class(name))  # lazily: pytorch_optimizer is imported on first use
    return OPTIMIZERS.get(name)


def describe_optimizer(name: str) -> str:
    """The one-line description of a registered or `po.` optimizer."""
    get_optimizer_class(name)
    return OPTIMIZERS.describe(name)


def optimizer_arguments(name: str) -> dict[str, inspect.Parameter]:
    """The keyword arguments an optimizer accepts (excluding `params`)."""
    signature = inspect.signature(get_optimizer_class(name))
    return {
        key: p
        for key, p in signature.parameters.items()
        if key != "params" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


# torch.optim's optimizers whose multi-tensor (`foreach`) implementation computes, on the CPU, exactly what
# their single-tensor one does: every parameter, state tensor and gradient bit-identical after each step, in
# every option combination tested (tests/optim/test_foreach_default.py). NAdam, RAdam and ASGD are left out
# (their multi-tensor arithmetic rounds differently), and so is SGD with Nesterov momentum, whose
# multi-tensor step writes the Nesterov direction into `.grad`.
FOREACH_IDENTICAL = ("adam", "adamw", "sgd", "rmsprop", "adagrad", "adamax", "adadelta", "rprop")


def takes_foreach_default(name: str, kwargs: dict[str, Any]) -> bool:
    """Whether `build_optimizer` gives the optimizer `name` torch's multi-tensor step: it is one of
    `FOREACH_IDENTICAL` and `kwargs` leave `foreach` unset or None.

    On the CPU torch defaults to the single-tensor step, a Python loop over the parameters; the multi-tensor
    one runs that loop in C++ with the same kernels, tens of microseconds less per step for a small model
    (a quarter of torch's Adam step on the MNIST-1D MLP). On CUDA torch already defaults to it. `fused` and
    `differentiable` exclude `foreach`, so either one set keeps torch's default.
    """
    return (
        name in FOREACH_IDENTICAL
        and OPTIMIZERS.get(name) is getattr(torch.optim, _TORCH_NAMES[name], None)
        and kwargs.get("foreach") is None  # None: torch's default, what a config holds unless set
        and not kwargs.get("fused")
        and not kwargs.get("differentiable")
        and not (name == "sgd" and kwargs.get("nesterov"))
    )


_TORCH_NAMES = {name: cls_name for cls_name in dir(torch.optim) if (name := cls_name.lower()) in FOREACH_IDENTICAL}


def build_optimizer(name: str, params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    """Construct a registered optimizer; unknown keyword arguments are a `ConfigError` naming them.

    torch.optim's optimizers of `FOREACH_IDENTICAL` take their multi-tensor step unless `foreach` is given
    (`takes_foreach_default`): the same results, faster on the CPU. It is set on each param group, not in
    the optimizer's `defaults`, which keep the configured value (None), so code reading `defaults` sees the
    optimizer as configured (population training merges the groups of members whose `foreach` is unset).
    """
    accepted = optimizer_arguments(name)
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(f"unknown argument {key!r} for optimizer {name!r}{suggest(key, accepted)}")
    try:
        optimizer = get_optimizer_class(name)(params, **kwargs)
    except (ValueError, TypeError, IndexError) as error:  # IndexError: a too-short tuple such as betas
        raise ConfigError(f"optimizer {name!r}: {error}") from None
    if takes_foreach_default(name, kwargs):
        for group in optimizer.param_groups:
            group["foreach"] = True
    return optimizer
