"""Perturbations of the learned optimizer's own weights during meta-training (stability-aware training).

Optimizer Amalgamation (Huang et al., ICLR 2022; github.com/VITA-Group/OptimizerAmalgamation)
meta-trains the student optimizer at perturbed weights W + δ so that it becomes less sensitive to its own
weights: random Gaussian δ, or an adversarial δ that increases the meta-loss first (in the style of SAM /
adversarial weight perturbation). The meta-gradient is then taken at W + δ and applied to W.

    perturb=gaussian              W + N(0, σ²), a fresh draw at every use of the weights (every inner step
                                  and every optimizee tensor)
    perturb=relative_gaussian     the same with σ_W = σ · RMS(W) per weight tensor, RMS(W) = sqrt(mean(W² + 1e-8))
    perturb=persistent_gaussian   one N(0, σ²) draw per meta-iteration, held fixed through the truncation
    perturb=fgsm                  δ = ε · sign(∇_W L(W))
    perturb=pgd                   δ₀ = 0, δ ← Π(δ + lr · ∇_δ L(W + δ)) k times; Π projects each tensor on the
                                  ε-ball of the chosen norm (inf: elementwise clip; l2: rescale to norm ≤ ε)
    perturb=adaptive_pgd          δ ← δ + clip_norm(∇_δ L(W + δ), ε · ‖W‖) per tensor, k times, not projected
                                  (the original's "CGD": the step is relative to each tensor's norm)

`perturb.magnitude` is σ (Gaussian kinds), ε (FGSM step, PGD radius) or the relative radius (adaptive PGD);
`perturb.steps` is k and `perturb.lr` PGD's ascent rate. The adversarial gradient ∇_δ L is the estimator's
own estimate on the same truncation (same batches, same carried state), so each ascent step costs one more
unroll. The scale σ_W of the relative kind and the adversarial δ are constants of the meta-gradient.

Perturbations act only inside the meta-training estimate: validation, `optimlab evaluate` and the packaged
optimizer always use the clean weights. (The original applies its Gaussian noise during validation too, and
its PGD class fails at construction; neither happens here.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from optimlab.errors import ConfigError

Params = dict[str, Tensor]
# (weights) -> (the meta-gradient estimate at those weights, or None when the unroll blew up)
GradientFn = Callable[[Params], "Params | None"]

KINDS = ("none", "gaussian", "relative_gaussian", "persistent_gaussian", "fgsm", "pgd", "adaptive_pgd")
NORMS = ("inf", "l2")
ADVERSARIAL = ("fgsm", "pgd", "adaptive_pgd")
RMS_EPS = 1e-8


@dataclass
class PerturbConfig:
    name: str = "none"  # none | gaussian | relative_gaussian | persistent_gaussian | fgsm | pgd | adaptive_pgd
    magnitude: float = 1e-3  # gaussian*: noise std σ; fgsm: step ε; pgd: ball radius ε; adaptive_pgd: relative radius
    steps: int = 1  # pgd / adaptive_pgd: ascent steps k (each one extra unroll)
    norm: str = "inf"  # pgd: inf | l2 (per weight tensor)
    lr: float = 0.1  # pgd: ascent rate of δ ← Π(δ + lr · ∇_δ L)


def check_config(cfg: PerturbConfig) -> None:
    if cfg.name not in KINDS:
        raise ConfigError(f"config key 'perturb.name': {cfg.name!r} is not one of {', '.join(KINDS)}")
    if cfg.norm not in NORMS:
        raise ConfigError(f"config key 'perturb.norm': {cfg.norm!r} is not one of {', '.join(NORMS)}")
    for key in ("magnitude", "lr"):
        if not getattr(cfg, key) > 0:
            raise ConfigError(f"config key 'perturb.{key}': must be positive, got {getattr(cfg, key)}")
    if cfg.steps < 1:
        raise ConfigError(f"config key 'perturb.steps': must be at least 1, got {cfg.steps}")


# ------------------------------------------------------------------------------------------------------
# The rules, as small pure functions


def rms(w: Tensor) -> Tensor:
    """sqrt(mean(W² + 1e-8)): the scale of the relative Gaussian noise of one tensor (a constant)."""
    return torch.sqrt((w.detach() ** 2 + RMS_EPS).mean())


def gaussian_noise(weights: Params, std: float, generator: torch.Generator, relative: bool = False) -> Params:
    """N(0, σ²) per element, or N(0, (σ · RMS(W))²) per tensor W with `relative`."""
    out = {}
    for k, w in weights.items():
        scale = std * rms(w) if relative else std
        out[k] = scale * torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
    return out


def fgsm_delta(grad: Params, eps: float) -> Params:
    """ε · sign(g): the steepest ascent step of size ε in the inf-norm."""
    return {k: eps * torch.sign(g) for k, g in grad.items()}


def project(delta: Params, eps: float, norm: str) -> Params:
    """Each tensor onto its ε-ball: elementwise clip (inf) or rescaling to norm ≤ ε (l2)."""
    if norm == "inf":
        return {k: d.clamp(-eps, eps) for k, d in delta.items()}
    out = {}
    for k, d in delta.items():
        n = torch.linalg.vector_norm(d)
        out[k] = d * (eps / n) if n > eps else d
    return out


def clip_norm(g: Tensor, bound: Tensor | float) -> Tensor:
    """g rescaled to norm `bound` when it is longer (tf.clip_by_norm)."""
    n = torch.linalg.vector_norm(g)
    return g * (bound / n) if n > bound else g


def pgd_step(delta: Params, grad: Params, eps: float, lr: float, norm: str) -> Params:
    return project({k: delta[k] + lr * grad[k] for k in delta}, eps, norm)


def adaptive_pgd_step(delta: Params, grad: Params, weights: Params, magnitude: float) -> Params:
    return {k: delta[k] + clip_norm(grad[k], magnitude * torch.linalg.vector_norm(weights[k].detach())) for k in delta}


def _add(a: Params, b: Params) -> Params:
    return {k: a[k] + b[k] for k in a}


# ------------------------------------------------------------------------------------------------------
# The perturbation the meta-trainer applies


class Perturbation:
    """What one meta-iteration's estimate is taken at: `weights_for_estimate` (once per meta-iteration) and
    `per_use` (at every use of the weights inside the unroll, for the re-sampled Gaussian kinds)."""

    def __init__(self, cfg: PerturbConfig):
        check_config(cfg)
        self.cfg = cfg

    @property
    def active(self) -> bool:
        return self.cfg.name != "none"

    def weights_for_estimate(self, weights: Params, gradient: GradientFn, generator: torch.Generator) -> Params:
        """W + δ for the persistent and adversarial kinds, W otherwise. `gradient(w)` is the estimator's
        meta-gradient estimate at `w` on the iteration's truncation (the adversarial kinds call it)."""
        c = self.cfg
        clean = {k: v.detach() for k, v in weights.items()}
        if c.name == "persistent_gaussian":
            return _add(clean, gaussian_noise(clean, c.magnitude, generator))
        if c.name not in ADVERSARIAL:
            return clean
        delta = {k: torch.zeros_like(v) for k, v in clean.items()}
        for _ in range(1 if c.name == "fgsm" else c.steps):
            grad = gradient(_add(clean, delta))
            if grad is None:  # the perturbed unroll blew up: keep the last finite δ
                break
            if c.name == "fgsm":
                delta = fgsm_delta(grad, c.magnitude)
            elif c.name == "pgd":
                delta = pgd_step(delta, grad, c.magnitude, c.lr, c.norm)
            else:
                delta = adaptive_pgd_step(delta, grad, clean, c.magnitude)
        return _add(clean, delta)

    def per_use(self, generator: torch.Generator) -> Callable[[Params], Params] | None:
        """The noise added at every use of the weights (gaussian, relative_gaussian), else None."""
        if self.cfg.name not in ("gaussian", "relative_gaussian"):
            return None
        relative, std = self.cfg.name == "relative_gaussian", self.cfg.magnitude
        return lambda weights: _add(weights, gaussian_noise(weights, std, generator, relative))


@contextlib.contextmanager
def weight_noise(systems: list, noise: Callable[[Params], Params] | None) -> Iterator[None]:
    """Within the block the systems' unrolls add `noise` to the weights at every use; outside it (validation,
    evaluation) they see the clean weights."""
    previous = [system.weight_noise for system in systems]
    for system in systems:
        system.weight_noise = noise
    try:
        yield
    finally:
        for system, value in zip(systems, previous):
            system.weight_noise = value


def perturbed_estimate(perturbation: Perturbation, estimator, systems: list, weights: Params, state, generator):
    """The estimator's (gradient, loss, next state) at the perturbed weights of one meta-iteration: the
    adversarial ascent runs the estimator on the same truncation from the same carried `state` (its next
    states are discarded), then the real estimate is taken at W + δ, all with the per-use noise on."""
    with weight_noise(systems, perturbation.per_use(generator)):
        at = perturbation.weights_for_estimate(weights, lambda w: estimator.estimate(w, state, generator)[0], generator)
        return estimator.estimate(at, state, generator)
