"""Gradient instruments: exact, cheap, side-effect-free statistics of the training gradient and of any
optimizer's step direction (docs/instruments.md)."""

from optimlab.instruments.per_example import Moments, per_example_moments, record_moments

__all__ = ["Moments", "per_example_moments", "record_moments"]
