"""A learned policy as a `torch.optim.Optimizer` for any model.

    spec = optimlab.learned.load("runs/meta/rnnprop")       # or a shipped optimizer's name
    opt = spec.optimizer(model.parameters())                # LearnedOptimizer
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1000)   # 'lr' scales each step

The policy runs under `no_grad` on each parameter tensor, flattened, through its `deployed_step` where it
has one (RNNProp: the same update as its `forward` up to float rounding, computed in place in cache-sized
chunks, `docs/performance.md`), otherwise through `forward`; its per-tensor state lives in
`self.state[p]` (tensors only, with the step count), a hierarchical policy's global state in
`self.state["global"]`, so `state_dict()` round-trips through `torch.load(..., weights_only=True)`. The
group's `lr` multiplies the policy's step (1.0 = the step the policy was meta-trained to take), which is
how learning-rate schedulers act on it. During the first `warmup_steps` steps the update is plain SGD at
`warmup_lr` while the policy's moment statistics advance and its recurrent state stays at zero (the
warm-up `l2o` evaluates its optimizers with: 100 steps at 0.05).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Optional

import torch
from torch import Tensor

from optimlab.learned.policies import Policy, State

GLOBAL = "global"


def apply_policy(
    policy: Policy,
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Tensor,
    global_state: State,
    warmup_lr: float | None,
) -> tuple[Tensor, State]:
    """One policy step on a flat tensor; with `warmup_lr` the step is SGD and the recurrent state is kept."""
    delta, new = policy(param, grad, state, step, global_state)
    if warmup_lr is not None:
        delta = warmup_lr * grad
        new = {k: (state[k] if k in policy.recurrent_keys else v) for k, v in new.items()}
    return delta, new


class LearnedOptimizer(torch.optim.Optimizer):
    """`chunk_size`: coordinates per pass of a coordinate-wise policy (None: the policy's own default, sized
    for the CPU's L2 cache). `deployed=False` always runs the functional `forward` (for comparisons);
    `fused=False` keeps a policy's deployed step off its native kernel (RNNProp's, `optimlab.learned.kernels`;
    the environment variable `OPTIMLAB_FUSED=0` does the same for every optimizer)."""

    def __init__(
        self,
        params,
        policy: Policy,
        lr: float = 1.0,
        warmup_steps: int = 0,
        warmup_lr: float = 0.05,
        chunk_size: int | None = None,
        deployed: bool = True,
        fused: bool = True,
    ):
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate (step multiplier): {lr}")
        if warmup_steps < 0:
            raise ValueError(f"Invalid warmup_steps: {warmup_steps}")
        if chunk_size is not None and chunk_size <= 0:
            raise ValueError(f"Invalid chunk_size: {chunk_size}")
        super().__init__(params, dict(lr=lr, warmup_steps=int(warmup_steps), warmup_lr=float(warmup_lr)))
        self.policy = policy.eval().requires_grad_(False)
        self.chunk_size = chunk_size
        self.deployed = deployed
        self.fused = fused
        self._copies: dict[tuple, Policy] = {}

    def _policy(self, like: Tensor) -> Policy:
        """The policy on the parameter's device and dtype (cached copies; the original stays as loaded)."""
        key = (like.device, like.dtype)
        if key not in self._copies:
            first = next(self.policy.parameters())
            same = first.device == like.device and first.dtype == like.dtype
            self._copies[key] = self.policy if same else _copy_policy(self.policy).to(like.device, like.dtype)
        return self._copies[key]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        global_state = self.state[GLOBAL] if GLOBAL in self.state else None
        tensor_states = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LearnedOptimizer does not support sparse gradients")
                policy = self._policy(p)
                flat = p.detach().view(-1) if p.is_contiguous() else p.detach().reshape(-1)
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state.update(policy.init_state_for(p.detach()))
                if global_state is None:
                    global_state = policy.init_global_state(flat)
                    self.state[GLOBAL] = global_state
                warm = group["warmup_lr"] if float(state["step"]) < group["warmup_steps"] else None
                deployed = getattr(policy, "deployed_step", None) if self.deployed else None
                if deployed is not None:
                    step = state["step"].to(flat.dtype)
                    options = {} if self.chunk_size is None else {"chunk_size": self.chunk_size}
                    if not self.fused and _accepts(type(policy).deployed_step, "fused"):
                        options["fused"] = False
                    deployed(flat, p.grad.reshape(-1), state, step, group["lr"], warm, **options)
                    if flat.data_ptr() != p.data_ptr():  # a non-contiguous parameter was stepped as a copy
                        p.copy_(flat.view_as(p))
                else:
                    delta = self._update(policy, flat, p.grad.reshape(-1), state, global_state, warm)
                    p.add_(delta.view_as(p), alpha=-group["lr"])
                state["step"] += 1
                tensor_states.append(state)
        if tensor_states and global_state:
            policy = self._policy(next(iter(global_state.values())))
            new_global = policy.update_global([_policy_state(s) for s in tensor_states], global_state)
            for key, value in new_global.items():
                global_state[key].copy_(value)
        return loss

    def _update(
        self, policy: Policy, param: Tensor, grad: Tensor, state: dict, global_state: State, warm: float | None
    ) -> Tensor:
        """The step for one tensor; the state is updated in place. Coordinate-wise policies run in chunks
        small enough for the [chunk, 4 * hidden] activations to stay in cache."""
        step = state["step"].to(param.dtype)
        keys = [k for k in state if k != "step"]
        n = param.numel()
        chunk = (self.chunk_size or 4096) if policy.coordinatewise else n
        if n <= chunk:
            delta, new = apply_policy(policy, param, grad, {k: state[k] for k in keys}, step, global_state, warm)
            for k in keys:
                state[k].copy_(new[k])
            return delta
        delta = torch.empty_like(param)
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            d, new = apply_policy(
                policy, param[sl], grad[sl], {k: state[k][sl] for k in keys}, step, global_state, warm
            )
            delta[sl] = d
            for k in keys:
                state[k][sl] = new[k]
        return delta


@functools.cache
def _accepts(function, name: str) -> bool:
    return name in inspect.signature(function).parameters


def _policy_state(state: dict) -> State:
    return {k: v for k, v in state.items() if k != "step"}


def _copy_policy(policy: Policy) -> Policy:
    from optimlab.learned.policies import build_policy

    copy = build_policy(policy.name, **policy.hparams)
    copy.load_state_dict(policy.state_dict())
    return copy.eval().requires_grad_(False)


DEFAULT = "rnnprop-mnist1d"  # the optimizer shipped with optimlab (docs/learned.md: "A first result")


def learned(
    params,
    path: str = DEFAULT,
    sha256: Optional[str] = None,
    lr: float = 1.0,
    warmup_steps: Optional[int] = None,
    warmup_lr: Optional[float] = None,
) -> LearnedOptimizer:
    """The registry's `learned` optimizer: `optim=learned optim.path=DIR` (a directory or a shipped name;
    by default the RNNProp shipped in `optimlab/learned/pretrained/`).

    `sha256` is the weights file's hash; when given (the run's config records it) a different file is an
    error, so a run's identity always names the exact weights it used.
    """
    from optimlab.learned.package import load

    return load(path, sha256=sha256).optimizer(params, lr=lr, warmup_steps=warmup_steps, warmup_lr=warmup_lr)


def resolve_config(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Config-time resolution of the `learned` optimizer's arguments: fill `sha256` from the weights file,
    so the run's config hash changes whenever the weights do."""
    from optimlab.learned.package import weights_sha256

    kwargs = dict(kwargs)
    if kwargs.get("path") and kwargs.get("sha256") is None:
        kwargs["sha256"] = weights_sha256(kwargs["path"])
    return kwargs


learned.resolve_config = resolve_config  # type: ignore[attr-defined]
