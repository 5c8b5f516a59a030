"""`privacy=dp_sgd`: differentially private gradients (Abadi et al., "Deep Learning with Differential Privacy",
CCS 2016), the gradient of Optimizer Amalgamation's `conv_train_dp` evaluation problem (clip 1.0, noise 1.1).

After the backward the hook replaces `.grad` by

    g̃ = (Σ_i g_i / max(1, ‖g_i‖ / C) + N(0, σ² C² I)) / B

where g_i is the gradient of example i's loss (over all parameters at once), C = `privacy.clip`,
σ = `privacy.noise_multiplier` and B the batch size: each example's contribution is bounded by C and the
noise on the mean has standard deviation σ C / B. Per-example gradients come from `torch.func` (`vmap` of
`grad` of the task's `functional_loss` on one example), in chunks of `train.microbatch_size` examples when
set. The noise is drawn from the hook's own generator (seeded from the run seed, checkpointed), so a resumed
run continues bit for bit. No privacy accounting (ε, δ) is done.

Per-example gradients need a model whose output for one example does not depend on the others: models with
BatchNorm are refused. The ordinary batch gradient is still computed by the loop (and then replaced), so a
step costs that backward plus the per-example pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from optimlab.errors import ConfigError
from optimlab.tasks import Task
from optimlab.train.hooks import RunContext, StepHook, StepInfo

Batch = tuple[Tensor, ...]
_NOISE_SEED = 15485863  # offset of the noise generator from the run seed


def per_example_gradients(model: nn.Module, task: Task, batch: Batch) -> dict[str, Tensor]:
    """{parameter name: [B, *shape]}: the gradient of each example's mean loss (sum / count on that example)."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p: dict[str, Tensor], *example: Tensor) -> Tensor:
        total, count = task.functional_loss({**p, **buffers}, tuple(t.unsqueeze(0) for t in example), model)
        return total / count

    return vmap(grad(loss), in_dims=(None, *([0] * len(batch))), randomness="different")(params, *batch)


def clip_factors(grads: dict[str, Tensor], clip: float) -> tuple[Tensor, Tensor]:
    """(1 / max(1, ‖g_i‖ / C) per example, ‖g_i‖ per example), norms over all parameters together."""
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
    return 1.0 / torch.clamp(norms / clip, min=1.0), norms


def clipped_sum(grads: dict[str, Tensor], clip: float) -> tuple[dict[str, Tensor], Tensor]:
    """(Σ_i g_i / max(1, ‖g_i‖ / C) per parameter, the per-example norms)."""
    factors, norms = clip_factors(grads, clip)
    return {k: torch.einsum("b,b...->...", factors.to(g.dtype), g) for k, g in grads.items()}, norms


class DPSGDHook(StepHook):
    name = "privacy"
    prefix = "privacy"

    def __init__(self, ctx: RunContext, clip: float, noise_multiplier: float, chunk: int | None):
        self.ctx, self.clip, self.noise_multiplier, self.chunk = ctx, clip, noise_multiplier, chunk
        self.generator = torch.Generator().manual_seed(ctx.seed * 7919 + _NOISE_SEED)
        self.last: dict[str, float] = {}

    def after_backward(self, step: StepInfo) -> None:
        model, batch = self.ctx.model, step.batch
        size = len(batch[0])
        chunk = self.chunk or size
        total: dict[str, Tensor] = {}
        norms = []
        for start in range(0, size, chunk):
            piece = tuple(t[start : start + chunk] for t in batch)
            summed, n = clipped_sum(per_example_gradients(model, self.ctx.task, piece), self.clip)
            total = summed if not total else {k: total[k] + summed[k] for k in total}
            norms.append(n)
        std = self.noise_multiplier * self.clip
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name not in total:
                    continue
                noise = torch.randn(p.shape, generator=self.generator, dtype=p.dtype).to(p.device)
                p.grad = (total[name] + std * noise) / size
        norms = torch.cat(norms)
        self.last = {"clipped_fraction": float((norms > self.clip).double().mean()), "mean_norm": float(norms.mean())}

    def stats(self) -> dict[str, float]:
        return dict(self.last)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def build_dp_sgd_hooks(cfg: Any, ctx: RunContext) -> list[StepHook]:
    """The hook for a trainer config's `privacy` group (none for `privacy=none`)."""
    from optimlab.directions.hook import check_single_process_plain_gradient

    p = cfg.privacy
    if p.name == "none":
        return []
    what = f"privacy={p.name}"
    check_single_process_plain_gradient(cfg, ctx, what)
    conflicts = {
        "train.clip_grad_norm (it clips per example instead)": cfg.train.clip_grad_norm is not None,
        f"direction={cfg.direction.name}": cfg.direction.name != "sgd",
        f"precond={cfg.precond.name}": cfg.precond.name != "none",
        f"train.sampler={cfg.train.sampler}": cfg.train.sampler in ("loss", "gradnorm"),
    }
    for key, conflict in conflicts.items():
        if conflict:
            raise ConfigError(f"{what} does not combine with {key}")
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ctx.model.modules()):
        raise ConfigError(
            f"{what} needs per-example gradients, and task {ctx.task.name!r} has BatchNorm, which mixes the "
            "examples of a batch (choose a model without it)"
        )
    return [DPSGDHook(ctx, p.clip, p.noise_multiplier, cfg.train.microbatch_size)]
