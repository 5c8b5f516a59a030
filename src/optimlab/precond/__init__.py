"""Preconditioners of `.grad`, applied after the backward and before any optimizer's step.

    precond=kfac   K-FAC (`KFAC`), usable alone around any torch.optim optimizer
"""

from optimlab.precond.kfac import KFAC, kronecker_solve, layer_factors, sample_labels

__all__ = ["KFAC", "kronecker_solve", "layer_factors", "sample_labels"]
