"""Gradient instruments: exact, cheap, side-effect-free statistics of the training gradient and of any
optimizer's step direction (docs/instruments.md).

Usable alone from plain PyTorch (`per_example_moments`, `record_moments`, `top_eigenvalue`,
`peek_direction`, `isolated`) and as training-loop step hooks (`build_instruments`).
"""

from optimlab.instruments.direction import peek_direction
from optimlab.instruments.hessian import hessian_vector_product, top_eigenvalue
from optimlab.isolation import isolated
from optimlab.instruments.per_example import (
    Moments,
    per_example_moments,
    record_moments,
)
from optimlab.instruments.registry import (
    INSTRUMENTS,
    available_instruments,
    build_instruments,
)
from optimlab.instruments.schedule import Schedule

__all__ = [
    "INSTRUMENTS",
    "Moments",
    "Schedule",
    "available_instruments",
    "build_instruments",
    "hessian_vector_product",
    "isolated",
    "peek_direction",
    "per_example_moments",
    "record_moments",
    "top_eigenvalue",
]
