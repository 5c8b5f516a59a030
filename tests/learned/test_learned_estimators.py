"""Meta-gradients: TBPTT equals finite differences (float64); ES and PES are unbiased on a quadratic.

The statistical tests use fixed seeds (they cannot flake) and a tolerance of 4 standard errors of the mean
estimate; each also checks that its tolerance is tight enough to reject the biased alternative.
"""

import pytest
import torch

from optimlab.learned import RNNProp, SmallFCLOpt
from optimlab.learned.estimators import PES, TBPTT, TruncatedES
from optimlab.learned.problems import LinearRegressionProblem, TinyMLPProblem
from optimlab.learned.unroll import LearnedOptimizerSystem


def _fd_check(system, seed=0, directions=3, h=1e-6):
    weights = {k: v.detach().clone() for k, v in system.weights().items()}
    traj = system.new_state(seed)
    data, traj = system.draw(traj)
    leaves = {k: v.clone().requires_grad_(True) for k, v in weights.items()}
    loss, _, finite = system.unroll(leaves, traj, data, differentiable=True)
    assert finite
    grads = torch.autograd.grad(loss, list(leaves.values()))
    g = torch.Generator().manual_seed(1)
    for _ in range(directions):
        d = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in weights.items()}
        plus = system.unroll({k: weights[k] + h * d[k] for k in weights}, traj, data, differentiable=False)[0]
        minus = system.unroll({k: weights[k] - h * d[k] for k in weights}, traj, data, differentiable=False)[0]
        numeric = float(plus - minus) / (2 * h)
        analytic = sum(float((gi * d[k]).sum()) for gi, k in zip(grads, weights))
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (numeric, analytic)
        assert abs(analytic) > 1e-4  # the check has something to compare


@pytest.mark.parametrize("policy_cls", [RNNProp, SmallFCLOpt])
def test_tbptt_meta_gradient_equals_finite_differences_float64(policy_cls):
    torch.manual_seed(0)
    policy = policy_cls().double()
    with torch.no_grad():  # larger steps than the untrained policy's, so the unroll moves
        for p in policy.parameters():
            p.mul_(3.0)
    problem = TinyMLPProblem(samples=96, batch_size=8, dtype=torch.float64)
    system = LearnedOptimizerSystem(policy, problem, unroll_len=4, scale_spread=1.0, second_order=True)
    _fd_check(system)


def test_first_order_meta_gradient_drops_the_hessian_terms():
    torch.manual_seed(0)
    policy = RNNProp().double()
    problem = LinearRegressionProblem(samples=64, batch_size=8, dtype=torch.float64)
    grads = {}
    for second in (True, False):
        system = LearnedOptimizerSystem(policy, problem, unroll_len=4, scale_spread=0.0, second_order=second)
        grads[second], loss, _ = TBPTT(system).estimate(system.weights(), TBPTT(system).reset(3), torch.Generator())
    first, full = (
        torch.cat([g.flatten() for g in grads[False].values()]),
        torch.cat([g.flatten() for g in grads[True].values()]),
    )
    assert torch.isfinite(first).all() and (first - full).abs().max() > 1e-9
    # same sign overall: the first-order gradient is an approximation of the same quantity
    assert float(first @ full) > 0


class LinearSystem:
    """x <- M x + B w for `steps` steps per truncation; loss = mean ||x - c||^2: quadratic in w."""

    def __init__(self, steps=2):
        self.M = torch.tensor([[0.9, 0.2], [-0.1, 0.8]], dtype=torch.float64)
        self.B = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, -0.5]], dtype=torch.float64)
        self.c = torch.tensor([1.0, -1.0], dtype=torch.float64)
        self.steps = steps
        self.w = {"w": torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)}

    def weights(self):
        return self.w

    def new_state(self, seed):
        return {"x": torch.tensor([0.5, 0.5], dtype=torch.float64)}

    def draw(self, state):
        return None, state

    def unroll(self, weights, state, data, differentiable):
        x = state["x"] if differentiable else state["x"].detach()
        total = 0.0
        for _ in range(self.steps):
            x = self.M @ x + self.B @ weights["w"]
            total = total + (x - self.c).pow(2).sum()
        loss = total / self.steps
        return loss, {"x": x.detach()}, True


def _mean_and_se(samples):
    stacked = torch.stack(samples)
    return stacked.mean(0), stacked.std(0) / len(samples) ** 0.5


def test_truncated_es_is_unbiased_on_a_quadratic():
    system = LinearSystem()
    w = {"w": system.w["w"].clone().requires_grad_(True)}
    loss, _, _ = system.unroll(w, system.new_state(0), None, differentiable=True)
    (truth,) = torch.autograd.grad(loss, [w["w"]])
    es = TruncatedES(system, std=0.1, pairs=1)
    generator = torch.Generator().manual_seed(0)
    samples = [es.estimate(system.w, es.reset(0), generator)[0]["w"] for _ in range(3000)]
    mean, se = _mean_and_se(samples)
    assert ((mean - truth).abs() <= 4 * se).all(), (mean, truth, se)
    assert (truth.abs() > 8 * se).all()  # the tolerance is tight enough to see the gradient itself


def test_pes_is_unbiased_for_the_whole_trajectory_where_tbptt_is_not():
    system, truncations = LinearSystem(steps=2), 3
    # The truth: the gradient of the summed truncation losses of the whole trajectory (state carried, w shared).
    w = {"w": system.w["w"].clone().requires_grad_(True)}
    state, total = system.new_state(0), 0.0
    x = state["x"]
    for _ in range(truncations):
        for _ in range(system.steps):
            x = system.M @ x + system.B @ w["w"]
            total = total + (x - system.c).pow(2).sum() / system.steps
    (truth,) = torch.autograd.grad(total, [w["w"]])

    pes = PES(system, std=0.1, pairs=1)
    generator = torch.Generator().manual_seed(0)
    samples = []
    for replicate in range(3000):
        state, summed = pes.reset(replicate), torch.zeros(3, dtype=torch.float64)
        for _ in range(truncations):
            grad, _, state = pes.estimate(system.w, state, generator)
            summed += grad["w"]
        samples.append(summed)
    mean, se = _mean_and_se(samples)
    assert ((mean - truth).abs() <= 4 * se).all(), (mean, truth, se)

    tbptt = TBPTT(system)
    state, biased = tbptt.reset(0), torch.zeros(3, dtype=torch.float64)
    for _ in range(truncations):
        grad, _, state = tbptt.estimate(system.w, state, generator)
        biased += grad["w"]
    assert ((biased - truth).abs() > 4 * se).any(), "TBPTT's truncation bias should be visible at this tolerance"


def test_registered_tasks_are_problems():
    """A registered task through its model factory and functional loss: same initial model and loss."""
    from optimlab.learned.problems import build_problem
    from optimlab.tasks import build_task

    problem = build_problem("logreg", batch_size=16)
    task = build_task("logreg")
    params, buffers = problem.init(5)
    model = task.new_model(5)
    assert all(torch.equal(params[k], v) for k, v in model.named_parameters())
    sampler = problem.sampler(0)
    batch = problem.batch(sampler.next())
    total, count = task.loss(task.forward(model, batch), batch)
    torch.testing.assert_close(problem.loss({**params, **buffers}, batch), total / count)
    system = LearnedOptimizerSystem(RNNProp(), problem, unroll_len=3, scale_spread=1.0, warmup_steps=2)
    traj = system.new_state(0)
    assert traj.step == 2  # the warm-up ran
    data, traj = system.draw(traj)
    loss, nxt, finite = system.unroll(system.weights(), traj, data, differentiable=True)
    assert finite and nxt.step == 5 and loss.requires_grad
