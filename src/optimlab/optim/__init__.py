"""Optimizers: every torch.optim optimizer by name, plus optimlab's own.

A new optimizer is one file in this folder plus one `register` line below.
"""

from optimlab.optim.registry import available, build_optimizer, get_optimizer_class, register

__all__ = ["available", "build_optimizer", "get_optimizer_class", "register"]
