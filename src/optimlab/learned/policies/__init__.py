"""Learned-optimizer policies by name: `build_policy("rnnprop", layers=[20, 20])`."""

from __future__ import annotations

import inspect
from typing import Any

from optimlab.errors import ConfigError, suggest, unknown_name
from optimlab.learned.policies.base import Policy, State
from optimlab.learned.policies.choice import Choice
from optimlab.learned.policies.dm import DMOptimizer
from optimlab.learned.policies.mlp_lopt import SmallFCLOpt
from optimlab.learned.policies.rnnprop import RNNProp
from optimlab.learned.policies.scale import ScaleHierarchical

POLICIES: dict[str, type[Policy]] = {
    "rnnprop": RNNProp,
    "dm": DMOptimizer,
    "scale": ScaleHierarchical,
    "small_fc_lopt": SmallFCLOpt,
    "choice": Choice,
}


def build_policy(name: str, **kwargs: Any) -> Policy:
    """A policy by registry name; an unknown name or argument is a `ConfigError` naming it."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise unknown_name("policy", name, POLICIES) from None
    accepted = set(inspect.signature(cls).parameters)
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(f"unknown policy key {key!r} for policy {name!r}{suggest(key, accepted)}")
    return cls(**kwargs)


__all__ = [
    "POLICIES",
    "Choice",
    "DMOptimizer",
    "Policy",
    "RNNProp",
    "ScaleHierarchical",
    "SmallFCLOpt",
    "State",
    "build_policy",
]
