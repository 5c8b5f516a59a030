"""Optimizers: every torch.optim optimizer by name, plus optimlab's own.

A new optimizer is one file in this folder plus one `register` line below.
"""

from optimlab.optim.hypergradient_descent import AdamHD, SGDHD
from optimlab.optim.registry import available, build_optimizer, get_optimizer_class, register

register("sgd_hd", SGDHD)
register("adam_hd", AdamHD)

__all__ = ["SGDHD", "AdamHD", "available", "build_optimizer", "get_optimizer_class", "register"]
