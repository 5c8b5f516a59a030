"""The optimizers of `pytorch_optimizer` (Kim, github.com/kozistr/pytorch_optimizer), as `po.<name>`.

    pip install 'optimlab[zoo]'
    optimlab train optim=po.lion optim.lr=1e-4
    optimlab compare optims=[adam,po.lion,po.adabelief]

The package is imported only when a `po.` name is asked for or the optimizers are listed, so it costs
nothing otherwise. A name is registered on first use with its class, so its keyword arguments are validated
against the constructor signature like every other optimizer's.
"""

from __future__ import annotations

import importlib
import importlib.util

from optimlab.errors import ConfigError, unknown_name

PREFIX = "po."


def installed() -> bool:
    return importlib.util.find_spec("pytorch_optimizer") is not None


def _package():
    if not installed():
        raise ConfigError("the po.* optimizers need pytorch_optimizer: pip install 'optimlab[zoo]'")
    return importlib.import_module("pytorch_optimizer")


def zoo_names() -> list[str]:
    """Every `po.<name>` the installed pytorch_optimizer provides (empty when it is not installed)."""
    if not installed():
        return []
    return sorted(PREFIX + name for name in _package().get_supported_optimizers())


def zoo_class(name: str) -> type:
    """The class behind `po.<name>`; an unknown name is a ConfigError suggesting close ones."""
    package = _package()
    short = name[len(PREFIX):]
    supported = package.get_supported_optimizers()
    if short not in supported:
        raise unknown_name("optimizer", name, [PREFIX + n for n in supported])
    return package.load_optimizer(short)
