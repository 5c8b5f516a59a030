"""The functional inner loop: a learned policy training an optimizee, one truncation at a time.

A trajectory is one random initialisation of the optimizee plus one random per-coordinate parameter scale
s = exp(U(-spread, spread)) (Lv et al. 2017): parameters are stored as θ̃ = θ / s and the loss is evaluated
at θ̃ ⊙ s, so the policy sees the gradient s ⊙ ∇f and must undo an unknown rescaling. A trajectory is
advanced in truncations of `unroll_len` steps; the parameters, the policy's state and the batch stream are
carried from one truncation to the next (`Trajectory`, all tensors and ints, so it is checkpointed with
`torch.save` and restored with `weights_only=True`).

The meta-loss of a truncation is the mean over its steps i of log(f(θ_i) + ε) - log(f(θ_0) + ε), both on
batch i, with θ_0 the truncation's start and f measured before the i-th update (ε = 1e-10). In
differentiable mode the unroll is recorded for backpropagation into the policy's weights: with
`second_order=True` through the inner gradients too (Hessian-vector products), with `second_order=False`
treating each inner gradient as a constant (first-order meta-gradient). The policy runs through
`torch.func.functional_call` on a weight dict, so the same code evaluates perturbed weights for ES/PES.

With a `Distillation` (Optimizer Amalgamation, `optimlab.learned.distill`) and a positive
`imitation_weight`, every trajectory also carries its teachers' own trajectories, which step on the same
batches, and the truncation's loss becomes meta-loss + imitation_weight * imitation loss: one more term of
the same loss, so every estimator and strategy distils unchanged.
"""

from __future__ import annotations

import dataclasses
import torch
from torch import Tensor, nn
from torch.func import functional_call

from optimlab.learned.distill import Distillation
from optimlab.learned.policies import Policy
from optimlab.learned.problems import Params, Problem, log_uniform_scales

EPS = 1e-10


@dataclasses.dataclass
class Trajectory:
    params: Params  # stored coordinates θ̃ (the model sees θ̃ ⊙ scales)
    scales: Params
    buffers: Params
    opt_state: dict[str, dict[str, Tensor]]
    global_state: dict[str, Tensor]
    step: int
    sampler: dict  # the batch stream's (epoch, position)
    seed: int
    teachers: list = dataclasses.field(default_factory=list)  # distillation: each teacher's params and state

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Trajectory:
        return cls(**data)

    def finite(self) -> bool:
        return all(bool(torch.isfinite(v).all()) for v in self.params.values())


class LearnedOptimizerSystem:
    """The truncated dynamical system the gradient estimators differentiate: (policy weights, trajectory,
    batches) -> (meta-loss, next trajectory)."""

    def __init__(self, policy: Policy, problem: Problem, unroll_len: int = 100, scale_spread: float = 3.0,
                 second_order: bool = True, warmup_steps: int = 0, warmup_lr: float = 0.05,
                 distill: Distillation | None = None):  # fmt: skip
        self.policy, self.problem = policy, problem
        # Distillation: the imitation term's weight (set per curriculum stage by the trainer, 0 for
        # validation) and the last unroll's two terms, for logging.
        self.distill, self.imitation_weight = distill, 0.0
        self.last_parts: dict[str, float] = {}
        self.warmup_steps = warmup_steps
        self.unroll_len, self.scale_spread = unroll_len, scale_spread
        self.second_order, self.warmup_lr = second_order, warmup_lr
        # Set only while meta-training estimates (perturb.weight_noise): noise added at every use of the weights.
        self.weight_noise = None

    # ---- trajectories -------------------------------------------------------------------------------

    def new_state(self, seed: int) -> Trajectory:
        """A fresh trajectory: initialisation and scales from `seed`, then `warmup_steps` SGD steps."""
        params, buffers = self.problem.init(seed)
        generator = torch.Generator().manual_seed(seed)
        scales = log_uniform_scales(params, self.scale_spread, generator)
        stored = {k: p / scales[k] for k, p in params.items()}
        opt_state = {k: self.policy.init_state_for(p) for k, p in stored.items()}
        first = next(iter(stored.values())).reshape(-1)
        sampler = self.problem.sampler(seed)
        traj = Trajectory(
            stored, scales, buffers, opt_state, self.policy.init_global_state(first), 0, sampler.state_dict(), seed
        )
        if self.distill is not None and self.imitation_weight > 0:
            traj.teachers = self.distill.init(stored)
        return warm_up(self, traj, self.warmup_steps)

    def draw(self, traj: Trajectory, steps: int | None = None, split: str = "train") -> tuple[list, Trajectory]:
        """The batches of the next truncation (shared by every perturbation of it) and the advanced stream."""
        sampler = self.problem.sampler(traj.seed, split)
        sampler.load_state_dict(traj.sampler)
        batches = [self.problem.batch(sampler.next(), split) for _ in range(steps or self.unroll_len)]
        return batches, dataclasses.replace(traj, sampler=sampler.state_dict())

    # ---- the unroll ---------------------------------------------------------------------------------

    def unroll(
        self, weights: Params, traj: Trajectory, batches: list, *, differentiable: bool, warmup: bool = False
    ) -> tuple[Tensor, Trajectory, bool]:
        """Run one truncation; returns (meta-loss, next trajectory, finite). Non-finite losses stop it early."""
        policy, problem = self.policy, self.problem
        second = differentiable and self.second_order
        names = list(traj.params)
        theta = {k: v.detach().requires_grad_(True) for k, v in traj.params.items()}
        start = {k: v.detach() * traj.scales[k] for k, v in traj.params.items()}
        state = traj.opt_state
        global_state = traj.global_state
        terms: list[Tensor] = []
        teachers, imitation = traj.teachers if self.distill is not None else [], []
        finite = True
        step = traj.step
        for batch in batches:
            with torch.enable_grad():
                if not differentiable:
                    theta = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
                loss = problem.loss({**{k: theta[k] * traj.scales[k] for k in names}, **traj.buffers}, batch)
                grads = torch.autograd.grad(
                    loss, [theta[k] for k in names], create_graph=second, retain_graph=differentiable
                )
            with torch.no_grad():
                f0 = problem.loss({**start, **traj.buffers}, batch)
            if not bool(torch.isfinite(loss)):
                finite = False
                break
            value = loss if differentiable else loss.detach()
            terms.append(torch.log(value + EPS) - torch.log(f0 + EPS))
            with torch.enable_grad() if differentiable else torch.no_grad():
                t = torch.tensor(float(step), dtype=loss.dtype)
                new_state = {}
                for k, g in zip(names, grads):
                    flat = theta[k].reshape(-1)
                    delta, st = functional_call(policy, self._use(weights), (flat, g.reshape(-1), state[k], t, global_state))
                    if warmup:  # plain SGD; the recurrent state stays where it was
                        delta = self.warmup_lr * g.reshape(-1)
                        st = {key: (state[k][key] if key in policy.recurrent_keys else v) for key, v in st.items()}
                    theta[k] = theta[k] - delta.view_as(theta[k])
                    new_state[k] = st
                if global_state:
                    global_state = _update_global(policy, self._use(weights), new_state, global_state)
                state = new_state
                if teachers:  # the teachers' own step on the same batch; in warm-up they follow the student
                    follow = theta if warmup else None
                    teachers = self.distill.advance(problem, teachers, traj.scales, traj.buffers, batch, step, follow)
                    if not warmup:
                        imitation.append(self.distill.imitation(theta, teachers))
            step += 1
        meta = torch.stack(terms).mean() if terms else torch.tensor(float("nan"))
        self.last_parts = {"meta": float(meta.detach())}
        if imitation:  # distillation: meta-loss + w * (mean over steps of the reduced imitation distance)
            imit = torch.stack(imitation).mean()
            self.last_parts["imitation"] = float(imit.detach())
            meta = meta + self.imitation_weight * imit
        detach = lambda tree: {k: (detach(v) if isinstance(v, dict) else v.detach()) for k, v in tree.items()}  # noqa: E731
        nxt = dataclasses.replace(
            traj, params=detach(theta), opt_state=detach(state), global_state=detach(global_state), step=step,
            teachers=[detach(t) for t in teachers],
        )  # fmt: skip
        finite = finite and bool(torch.isfinite(meta)) and nxt.finite()
        return meta, nxt, finite

    def weights(self) -> Params:
        return dict(self.policy.named_parameters())

    def _use(self, weights: Params) -> Params:
        return weights if self.weight_noise is None else self.weight_noise(weights)


class _GlobalUpdate(nn.Module):
    """`policy.update_global` as a module's forward, so `functional_call` can run it with given weights."""

    def __init__(self, policy: Policy):
        super().__init__()
        self.policy = policy

    def forward(self, states: list, global_state: dict) -> dict:
        return self.policy.update_global(states, global_state)


def _update_global(policy: Policy, weights: Params, states: dict, global_state: dict) -> dict:
    prefixed = {f"policy.{k}": v for k, v in weights.items()}
    return functional_call(_GlobalUpdate(policy), prefixed, (list(states.values()), global_state))


def warm_up(system: LearnedOptimizerSystem, traj: Trajectory, steps: int) -> Trajectory:
    """`steps` SGD steps at the system's warm-up rate that advance the policy's statistics (no meta-loss)."""
    if steps <= 0:
        return traj
    batches, traj = system.draw(traj, steps)
    with torch.no_grad():
        weights = {k: v.detach() for k, v in system.weights().items()}
    _, traj, _ = system.unroll(weights, traj, batches, differentiable=False, warmup=True)
    return traj


def evaluate_meta_loss(system: LearnedOptimizerSystem, weights: Params, seeds: list[int], truncations: int) -> float:
    """Forward-only meta-loss over fresh trajectories (validation): the mean over trajectories and truncations;
    a trajectory that blows up counts as +inf."""
    total, count = 0.0, 0
    weights = {k: v.detach() for k, v in weights.items()}
    for seed in seeds:
        traj = system.new_state(seed)
        for _ in range(truncations):
            batches, traj = system.draw(traj)
            meta, traj, finite = system.unroll(weights, traj, batches, differentiable=False)
            if not finite:
                return float("inf")
            total, count = total + float(meta), count + 1
    return total / max(count, 1)
