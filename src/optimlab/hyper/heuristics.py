"""The MARTHE heuristics that adapt the discount `mu` and the hyper learning rate `beta`.

Two published forms exist and are offered as named variants:

`adatune` (awslabs/adatune, `MuSGD.hyper_step`):
    beta <- max(beta + alpha * h * lr_new, 0)
    q = lr_new / (e . g),  c <- c * sign(mu) + mu,  mu <- clip(q, 0, 1) ** (1 / (c + 1))
  where `g` is the training gradient of the step and `e` the validation gradient after it. `c` sums the
  consecutive non-zero `mu`s since the last reset (a zero `mu` resets it), so a run of agreeing steps
  pushes `mu` towards 1.

`marthe_tf` (lucfra/Marthe-TF, `marthe_alg.py`):
    beta <- max(beta + alpha * h_t * h_{t-1}, 0)    (hypergradient descent applied to beta)
    mu <- clip(h / (e . B_t), 0, 1)
  where `B_t = d w_{t+1} / d lr` of the last step alone, so `q` is the full hypergradient over its
  one-step part.

Departures from the originals, all at degenerate points: a non-positive or non-finite denominator gives
`q = 0` (AdaTune divides by zero on `e . g = 0`, and on its first adaptive update, where it starts from
`c = -1`); an adaptive `mu` starts at 0 with `c = 0`, which is the state AdaTune reaches after that first
update, so our sequence is AdaTune's from its second update on.
"""

from __future__ import annotations

import math

VARIANTS = ("adatune", "marthe_tf")


def _ratio(numerator: float, denominator: float) -> float:
    if denominator == 0.0 or not math.isfinite(denominator):
        return 0.0
    q = numerator / denominator
    return q if math.isfinite(q) else 0.0


def _clip01(q: float) -> float:
    return min(max(q, 0.0), 1.0)


def adatune_update(
    *, hyper_lr: float, mu: float, c: float, h: float, lr_new: float, e_dot_g: float, alpha: float,
    adapt_mu: bool,
) -> tuple[float, float, float]:
    """AdaTune's rules; returns the new `(hyper_lr, mu, c)`."""
    if alpha > 0.0:
        hyper_lr = max(hyper_lr + alpha * h * lr_new, 0.0)
    if adapt_mu:
        q = _ratio(lr_new, e_dot_g) if e_dot_g > 0.0 else 0.0
        c = c * _sign(mu) + mu
        mu = _clip01(q) ** (1.0 / (c + 1.0))
    return hyper_lr, mu, c


def marthe_tf_update(
    *, hyper_lr: float, mu: float, h: float, h_prev: float, e_dot_direction: float, alpha: float,
    adapt_mu: bool,
) -> tuple[float, float]:
    """Marthe-TF's rules; returns the new `(hyper_lr, mu)`. `e_dot_direction` is `e . B_t`."""
    if alpha > 0.0:
        hyper_lr = max(hyper_lr + alpha * h * h_prev, 0.0)
    if adapt_mu:
        mu = _clip01(_ratio(h, e_dot_direction))
    return hyper_lr, mu


def _sign(x: float) -> float:
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)
