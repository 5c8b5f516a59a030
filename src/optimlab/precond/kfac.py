"""K-FAC: Kronecker-factored approximate curvature as a preconditioner of `.grad` before any optimizer.

Martens & Grosse 2015, "Optimizing Neural Networks with Kronecker-factored Approximate Curvature"; convolution
layers as in Grosse & Martens 2016 (KFC). The layout follows the preconditioner style of gpauloski/kfac-pytorch
and the schedule of alecwangcq/KFAC-Pytorch (used by fartashf/gvar_code):

- For each Linear/Conv1d/Conv2d layer, with `a` its input patches (a 1 appended for the bias) and `d` the
  gradient of one example's loss with respect to the layer's output, the Fisher block of
  `[weight.flatten(1) | bias]` is approximated by `A (x) G` with `A = mean over examples and positions of a a^T`
  and `G = mean over examples of sum over positions of d d^T` (exact for one Linear layer and one example).
- Every `t_cov` steps the factors are re-estimated on the step's batch by one extra forward/backward: with the
  true Fisher the labels are sampled from the model's predictive distribution (softmax; an independent
  generator, so the global RNG is untouched), with the empirical Fisher they are the batch's own labels. The
  factors are running averages `M <- decay M + (1 - decay) M_new`, starting at the identity.
- Every `t_inv` steps both factors are eigendecomposed (in their dtype; eigenvalues below 1e-10 set to 0). A layer's
  gradient `g` becomes `V = Q_G [(Q_G^T g Q_A) / (d_G d_A^T + damping)] Q_A^T`, i.e. `(A (x) G + damping I)^-1 g`.
- KL clipping scales every preconditioned gradient by `min(1, sqrt(kl_clip / sum_layers lr^2 <V, g>))`.
- Weight decay is the base optimizer's: it is added to the preconditioned direction (not preconditioned), from
  the first step on (the original's special case of starting it after 20 t_cov steps is not kept).

Parameters outside the supported layers (batch-norm, embeddings) keep their plain gradient.

Usage around any torch.optim optimizer::

    kfac = KFAC(model, optimizer)
    loss.backward()
    kfac.step(batch)      # factors / inverses on schedule, then .grad <- K-FAC direction
    optimizer.step()
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from optimlab.directions.base import (
    Batch,
    Costs,
    Gradient,
    Objective,
    Schedule,
    batch_gradient,
    side_effect_free,
)
from optimlab.directions.layers import split_matrix, supported_layers, weight_matrix
from optimlab.precond.capture import FactorCapture

_EIGEN_FLOOR = 1e-10
_BLOCK = 128  # eigenvectors of A per block of `kronecker_solve`


def kronecker_solve(gradient: Tensor, eigen: tuple[Tensor, Tensor, Tensor, Tensor], damping: float) -> Tensor:
    """`(A (x) G + damping I)^-1 vec(gradient)` as a matrix, from the eigenpairs (Q_A, d_A, Q_G, d_G):
    `Q_G [(Q_G^T gradient Q_A) / (d_G d_A^T + damping)] Q_A^T`.

    The A side is summed over blocks of `_BLOCK` eigenvectors, `sum_blocks (R Q_b / D_b) Q_b^T` with
    `R = Q_G^T gradient`, so each block of `Q_A` (128 columns of a 1569-wide head: 0.8 MB in float32) is
    used by both products while it is in cache and `Q_A` is read from memory once rather than twice. `Q_A` is
    used column-major, as `torch.linalg.eigh` returns it: a block is then contiguous. (For a ConvNet head's
    1569 x 1569 `Q_A` after a training step, so out of cache: 10 % less time than the two full products; a
    row-major copy of `Q_A` for the first product made them 1.4x slower.)
    """
    q_a, d_a, q_g, d_g = eigen
    rotated = q_g.T @ gradient
    denominator = d_g[:, None] * d_a[None, :] + damping
    solved = None
    for start in range(0, q_a.shape[1], _BLOCK):
        block = q_a[:, start : start + _BLOCK]
        scaled = (rotated @ block).div_(denominator[:, start : start + _BLOCK])
        solved = scaled @ block.T if solved is None else solved.addmm_(scaled, block.T)
    return q_g @ solved


def eigen_pairs(a: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Eigenpairs of both factors, in the factors' dtype (as kfac-pytorch's default float32 inverses)."""
    d_a, q_a = torch.linalg.eigh(a)
    d_g, q_g = torch.linalg.eigh(g)
    return q_a, d_a * (d_a > _EIGEN_FLOOR), q_g, d_g * (d_g > _EIGEN_FLOOR)


def layer_factors(a: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """(A, G) of one batch: a (B, T, d_in), d (B, T, d_out) per-example output gradients."""
    return running_factors(a.reshape(-1, a.shape[-1]).T, d.reshape(-1, d.shape[-1]).T, a.shape[0], None, 0.0)


def running_factors(
    a: Tensor, d: Tensor, examples: int, old: list[Tensor] | None, decay: float
) -> tuple[Tensor, Tensor]:
    """`decay * old + (1 - decay) * (A, G)` of one batch, written into `old`'s tensors (just (A, G), new,
    when `old` is None), each as one matrix product that scales and accumulates in place: no temporaries, and
    no copy of the 1569 x 1569 `A` of a ConvNet's head into a new output.

    `a` (d_in, examples x positions) and `d` (d_out, examples x positions) hold the input vectors and output
    gradients as columns (`capture.input_rows` / `output_rows`): `A = a a^T / (examples x positions)`,
    `G = d d^T / examples`.
    """
    out = []
    for rows, count, previous in ((a, a.shape[1], None if old is None else old[0]),
                                  (d, examples, None if old is None else old[1])):  # fmt: skip
        if previous is None:
            out.append(torch.mm(rows, rows.T).div_(count))
        else:
            out.append(previous.addmm_(rows, rows.T, beta=decay, alpha=(1 - decay) / count))
    return out[0], out[1]


def sample_labels(outputs: Tensor, generator: torch.Generator) -> Tensor:
    """Labels drawn from softmax(outputs) over the last dimension, with `generator` (on the CPU)."""
    probs = torch.softmax(outputs.detach().double(), dim=-1).cpu()
    flat = probs.reshape(-1, probs.shape[-1])
    labels = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
    return labels.to(outputs.device)


class KFAC:
    """K-FAC preconditioner for a model's Linear/Conv1d/Conv2d layers (see the module docstring)."""

    measure_grad_evals = 1.0  # mini-batch gradients one `direction()` call costs

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        objective: Objective | None = None,
        t_cov: int = 10,
        t_inv: int = 100,
        damping: float = 1e-3,
        decay: float = 0.95,
        kl_clip: float | None = 1e-3,
        fisher: str = "true",
        lr: float | None = None,
        seed: int = 0,
    ):
        if fisher not in ("true", "empirical"):
            raise ValueError(f"fisher must be 'true' or 'empirical', got {fisher!r}")
        if kl_clip is not None and optimizer is None and lr is None:
            raise ValueError("KL clipping needs the learning rate: pass the optimizer or lr")
        self.model, self.optimizer, self.lr = model, optimizer, lr
        self.objective = objective or Objective()
        self.cov_schedule, self.inv_schedule = Schedule(t_cov), Schedule(t_inv)
        self.damping, self.decay, self.kl_clip, self.fisher = damping, decay, kl_clip, fisher
        self.layers = supported_layers(model)
        self._capture = FactorCapture(self.layers)  # one recorder, so its buffers are reused across updates
        names = {p: name for name, p in model.named_parameters()}
        # per layer: (weight's name, bias's name or None), looked up once rather than on every step
        self.keys = {layer: (names[m.weight], names[m.bias] if m.bias is not None else None)
                     for layer, m in self.layers.items()}  # fmt: skip
        self.factors: dict[str, list[Tensor]] = {}
        for name, module in self.layers.items():
            d_in = module.weight[0].numel() + (module.bias is not None)
            d_out = module.weight.shape[0]
            like = module.weight
            self.factors[name] = [torch.eye(d_in, dtype=like.dtype, device=like.device),
                                  torch.eye(d_out, dtype=like.dtype, device=like.device)]  # fmt: skip
        self.eigen: dict[str, tuple[Tensor, ...]] = {}
        self.steps = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.costs = Costs()
        self.inversions = 0
        self.last_scale = 1.0

    # -- statistics -----------------------------------------------------------------------------------
    def update_factors(self, batch: Batch) -> None:
        """One forward/backward on `batch` (labels sampled for the true Fisher); side-effect free."""
        with side_effect_free(self.model), self._capture as recorder:
            outputs = self.objective.forward(self.model, batch)
            targets = batch[-1]
            if self.fisher == "true":
                if targets.is_floating_point():
                    raise ValueError("the true Fisher samples class labels: use fisher='empirical' for this loss")
                targets = sample_labels(outputs, self.generator)
            loss_sum, _ = self.objective.loss(outputs, (*batch[:-1], targets))
            recorder.backward(loss_sum)
        for name, a, d, examples in recorder.pairs():
            self.factors[name] = list(running_factors(a, d, examples, self.factors[name], self.decay))
        self.costs.add(grad_evals=1.0, examples=len(batch[0]))

    def update_inverse(self) -> None:
        self.eigen = {name: eigen_pairs(a, g) for name, (a, g) in self.factors.items()}
        self.inversions += 1

    # -- the preconditioned direction (pure) ------------------------------------------------------------
    def precondition(self, gradient: Gradient) -> Gradient:
        """The K-FAC direction of a gradient {parameter name: tensor}, without KL clipping; pure."""
        out = dict(gradient)
        out.update(self._solved(gradient))
        return out

    def _solved(self, gradient: Gradient) -> Gradient:
        """The preconditioned gradients of the layers' parameters; a parameter absent from `gradient` counts
        as zero, and a layer with neither weight nor bias present is left out."""
        eigen = self.eigen or {name: eigen_pairs(a, g) for name, (a, g) in self.factors.items()}
        out = {}
        for layer, (weight, bias) in self.keys.items():
            g_w, g_b = gradient.get(weight), None if bias is None else gradient.get(bias)
            if g_w is None and g_b is None:
                continue
            module = self.layers[layer]
            tensors = {"weight": module.weight.new_zeros(module.weight.shape) if g_w is None else g_w}
            if bias is not None:
                tensors["bias"] = module.bias.new_zeros(module.bias.shape) if g_b is None else g_b
            solved = split_matrix(module, kronecker_solve(weight_matrix(module, tensors), eigen[layer], self.damping))
            out[weight] = solved["weight"]
            if bias is not None:
                out[bias] = solved["bias"]
        return out

    def direction(self, model: nn.Module, objective: Objective, batch: Batch, indices: Tensor | None = None) -> Gradient:
        """The K-FAC direction on `batch` at the current parameters (no clipping); mutates nothing."""
        del indices
        with side_effect_free(model):
            gradient = batch_gradient(model, objective, batch)
        return self.precondition(gradient)

    # -- training -----------------------------------------------------------------------------------------
    def update(self, batch: Batch | None = None) -> None:
        """The scheduled statistics of this step (factors every t_cov, inverses every t_inv), no gradient
        change; advances the step counter."""
        self._scheduled(batch)
        self.steps += 1

    def _scheduled(self, batch: Batch | None) -> None:
        if self.cov_schedule.due(self.steps):
            if batch is None:
                raise ValueError(f"K-FAC step {self.steps} updates the factors and needs the batch")
            self.update_factors(batch)
        if self.inv_schedule.due(self.steps) or not self.eigen:
            self.update_inverse()

    def step(self, batch: Batch | None = None) -> None:
        """Factors and inverses when due, then `.grad` <- the clipped K-FAC direction. Call after backward."""
        self._scheduled(batch)
        gradient = {}  # read from the layers themselves rather than by walking `named_parameters()`
        for layer, (weight, bias) in self.keys.items():
            module = self.layers[layer]
            for name, p in ((weight, module.weight), (bias, module.bias)):
                if name is not None and p.grad is not None:
                    gradient[name] = p.grad
        direction = self._solved(gradient)
        scale = self._kl_scale(direction, gradient)
        with torch.no_grad():
            for name, g in gradient.items():
                if scale == 1.0:
                    g.copy_(direction[name])
                else:
                    torch.mul(direction[name], scale, out=g)
        self.last_scale = scale
        self.steps += 1

    @property
    def layer_names(self) -> list[str]:
        """Names of the parameters K-FAC preconditions (the supported layers' weights and biases)."""
        return [name for keys in self.keys.values() for name in keys if name is not None]

    def _kl_scale(self, direction: Gradient, gradient: Gradient) -> float:
        if self.kl_clip is None or not gradient:
            return 1.0
        lr = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else self.lr
        # one device-to-host transfer for all layers; the terms are summed in Python's float64 in order
        terms = torch.stack([(direction[name] * gradient[name]).sum() for name in gradient]).tolist()
        vg = sum(terms) * lr**2
        return min(1.0, (self.kl_clip / vg) ** 0.5) if vg > 0 else 1.0

    # -- reporting and state ----------------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        return {
            "extra_grad_evals": self.costs.grad_evals,
            "inversions": float(self.inversions),
            "kl_scale": self.last_scale,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            # copies: the factors are updated in place, and a checkpoint may be written after this returns
            "factors": {name: [t.clone() for t in f] for name, f in self.factors.items()},
            "eigen": {name: list(e) for name, e in self.eigen.items()},
            "steps": self.steps,
            "generator": self.generator.get_state(),
            "costs": self.costs.state_dict(),
            "inversions": self.inversions,
            "last_scale": self.last_scale,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(iter(self.layers.values())).weight.device if self.layers else torch.device("cpu")
        self.factors = {name: [t.to(device, copy=True) for t in f] for name, f in state["factors"].items()}
        self.eigen = {name: tuple(t.to(device) for t in e) for name, e in state["eigen"].items()}
        self.steps = int(state["steps"])
        self.generator.set_state(state["generator"])
        self.costs.load_state_dict(state["costs"])
        self.inversions = int(state["inversions"])
        self.last_scale = float(state["last_scale"])
