"""Optimizers: every torch.optim optimizer by name, plus optimlab's own.

A new optimizer is one file in this folder plus one `register` line below.
"""

from optimlab.optim.critical import SGD_C, Adam_C, AdamW_C, RMSprop_C
from optimlab.optim.hypergradient_descent import AdamHD, SGDHD
from optimlab.learned.optimizer import learned
from optimlab.optim.muon import MuonWithAdamW
from optimlab.optim.param_groups import build_param_groups
from optimlab.optim.registry import available, build_optimizer, get_optimizer_class, register

register("sgd_c", SGD_C)
register("adam_c", Adam_C)
register("adamw_c", AdamW_C)
register("rmsprop_c", RMSprop_C)
register("sgd_hd", SGDHD)
register("adam_hd", AdamHD)
register("muon", MuonWithAdamW)  # torch.optim.Muon takes 2-D parameters only; this adds its AdamW fallback
register("learned", learned, "a meta-trained learned optimizer (optimlab.learned): optim.path=DIR or a shipped name")

__all__ = ["SGD_C", "Adam_C", "AdamW_C", "RMSprop_C", "SGDHD", "AdamHD", "MuonWithAdamW", "available", "build_param_groups", "build_optimizer", "get_optimizer_class", "register"]
