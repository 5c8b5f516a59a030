"""Distillation: imitation-loss values on toy trajectories computed by hand, the teachers' trajectories (warm-up,
scaling mismatch, a learned teacher), the meta-gradient through the imitation term against finite differences
(float64), the `distill` config group and the amalgamation presets."""

import math

import pytest
import torch
from torch import nn

import optimlab.learned as lo
from optimlab.errors import ConfigError
from optimlab.learned.distill import (
    Distillation,
    PolicyTeacher,
    RuleTeacher,
    build_distillation,
    log_mean_sq_distance,
    reduce_teachers,
    stage_weight,
)
from optimlab.learned.metaconfig import DistillConfig, MetaTrainConfig, load_meta_config
from optimlab.learned.metatrain import config_hash
from optimlab.learned.policies import Policy
from optimlab.learned.pool import SGD, Adam, Momentum, RMSProp
from optimlab.learned.problems import Problem, TinyMLPProblem
from optimlab.learned.unroll import LearnedOptimizerSystem
from test_learned_estimators import _fd_check

THETA0 = [1.0, -2.0]


class Quadratic(Problem):
    """f(w) = 0.5 |w|^2 (the gradient is w), whatever the batch."""

    name, batch_size = "quadratic", 1

    def init(self, seed):
        return {"w": torch.tensor(THETA0, dtype=torch.float64)}, {}

    def num_samples(self, split="train"):
        return 4

    def batch(self, index, split="train"):
        return None

    def loss(self, params, batch):
        return 0.5 * params["w"].pow(2).sum()


class LearnedSGD(Policy):
    """delta = lr * g with a learnable lr: a student whose trajectory is known in closed form."""

    name = "learned_sgd"

    def __init__(self, lr=0.1):
        super().__init__(lr=lr)
        self.lr = nn.Parameter(torch.tensor(lr, dtype=torch.float64))

    def init_state(self, param):
        return {}

    def forward(self, param, grad, state, step, global_state):
        return self.lr * grad, {}


def system_with(teachers, reduce="max", weight=0.5, spread=0.0, scale="oracle", warmup=0, steps=3):
    distill = Distillation([RuleTeacher(t) for t in teachers], reduce, scale)
    system = LearnedOptimizerSystem(LearnedSGD(0.1), Quadratic(), steps, spread, warmup_steps=warmup,
                                    warmup_lr=0.1, distill=distill)  # fmt: skip
    system.imitation_weight = weight
    return system


def unroll(system, seed=0):
    traj = system.new_state(seed)
    batches, traj = system.draw(traj)
    return system.unroll(system.weights(), traj, batches, differentiable=True)


def test_distance_and_reductions_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    b = {"w": torch.tensor([0.0, 0.0]), "b": torch.tensor([1.0])}
    # 0.5 * (1 + 4 + 1) = 3 over 3 coordinates -> log(3 + eps) - log 3 = 0
    assert float(log_mean_sq_distance(a, b)) == pytest.approx(0.0, abs=1e-6)
    c = {"w": torch.tensor([3.0, 2.0]), "b": torch.tensor([0.0])}  # 0.5 * 4 = 2 -> log(2/3)
    assert float(log_mean_sq_distance(c, a)) == pytest.approx(math.log(2 / 3), rel=1e-6)
    assert float(log_mean_sq_distance(a, a)) == pytest.approx(math.log(1e-10) - math.log(3), rel=1e-6)
    d = torch.tensor([-1.0, 2.0, 0.5])
    assert float(reduce_teachers(d, "max")) == 2.0 and float(reduce_teachers(d, "mean")) == pytest.approx(0.5)
    with pytest.raises(ConfigError):
        reduce_teachers(d, "min")


def hand_losses(student_lr, teacher_lrs, reduce, weight, steps=3):
    """meta-loss and imitation of SGD students/teachers on 0.5|w|^2 from THETA0: w_i = w_0 (1 - lr)^i."""
    sq = sum(x * x for x in THETA0)
    f = [0.5 * sq * (1 - student_lr) ** (2 * i) for i in range(steps)]
    meta = sum(math.log(fi + 1e-10) - math.log(f[0] + 1e-10) for fi in f) / steps
    per_step = []
    for i in range(1, steps + 1):
        d = [
            math.log(0.5 * sq * ((1 - student_lr) ** i - (1 - c) ** i) ** 2 + 1e-10) - math.log(2) for c in teacher_lrs
        ]
        per_step.append(max(d) if reduce == "max" else sum(d) / len(d))
    imitation = sum(per_step) / steps
    return meta, imitation, meta + weight * imitation


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_unroll_loss_equals_the_hand_computed_one(reduce):
    system = system_with([SGD(lr=0.5), SGD(lr=0.25)], reduce=reduce, weight=0.3)
    loss, nxt, finite = unroll(system)
    meta, imitation, total = hand_losses(0.1, [0.5, 0.25], reduce, 0.3)
    assert finite
    assert float(loss.detach()) == pytest.approx(total, rel=1e-10)
    assert system.last_parts["meta"] == pytest.approx(meta, rel=1e-10)
    assert system.last_parts["imitation"] == pytest.approx(imitation, rel=1e-10)
    # The teachers ran their own trajectories: w_3 = w_0 (1 - c)^3; carried over for the next truncation.
    for traj, c in zip(nxt.teachers, (0.5, 0.25)):
        torch.testing.assert_close(traj["params"]["w"], torch.tensor(THETA0, dtype=torch.float64) * (1 - c) ** 3)
    loss2, _, _ = system.unroll(system.weights(), nxt, system.draw(nxt)[0], differentiable=False)
    assert torch.isfinite(loss2)


def test_weight_zero_or_no_distillation_leaves_the_meta_loss():
    meta, _, _ = hand_losses(0.1, [0.5], "max", 0.0)
    off = LearnedOptimizerSystem(LearnedSGD(0.1), Quadratic(), 3, 0.0)
    assert float(unroll(off)[0].detach()) == pytest.approx(meta, rel=1e-10)
    zero = system_with([SGD(lr=0.5)], weight=0.0)
    loss, nxt, _ = unroll(zero)
    assert float(loss.detach()) == pytest.approx(meta, rel=1e-10) and nxt.teachers == []


def test_oracle_and_student_teacher_scaling():
    w0 = torch.tensor(THETA0, dtype=torch.float64)
    for scale in ("oracle", "student"):
        system = system_with([SGD(lr=0.2)], spread=1.0, scale=scale)
        loss, nxt, finite = unroll(system)
        s = nxt.scales["w"]
        assert finite and not torch.allclose(s, torch.ones_like(s))
        x = nxt.teachers[0]["params"]["w"] * s  # the teacher's parameters in the original coordinates
        if scale == "oracle":  # plain SGD on f: the rescaling is invisible to the teacher
            torch.testing.assert_close(x, w0 * 0.8**3)
        else:  # SGD on the rescaled problem: gradient s * grad f, step in stored coordinates -> factor 1 - lr s^2
            torch.testing.assert_close(x, w0 * (1 - 0.2 * s**2) ** 3)


def test_warmup_teachers_follow_the_student_and_advance_their_state():
    system = system_with([Momentum(lr=0.5, beta_1=0.9)], warmup=2)
    traj = system.new_state(0)
    w0 = torch.tensor(THETA0, dtype=torch.float64)
    # SGD warm-up at 0.1: w -> 0.9 w -> 0.81 w; the EMA momentum saw 0.1 * w0 then 0.9 * 0.1 w0 + 0.1 * 0.9 w0
    torch.testing.assert_close(traj.params["w"], 0.81 * w0)
    torch.testing.assert_close(traj.teachers[0]["params"]["w"], 0.81 * w0)
    torch.testing.assert_close(traj.teachers[0]["state"]["w"]["m"], 0.18 * w0)


def test_a_saved_choice_policy_is_a_teacher(tmp_path):
    torch.manual_seed(0)
    choice = lo.build_policy("choice", pool="small")
    path = lo.save(choice, tmp_path / "teacher")
    distill = build_distillation(DistillConfig(name="choice", teacher=str(path)))
    assert isinstance(distill.teachers[0], PolicyTeacher)
    system = LearnedOptimizerSystem(LearnedSGD(0.1), Quadratic(), 3, 0.0, distill=distill)
    system.imitation_weight = 0.1
    _, nxt, finite = unroll(system)
    ref = lo.load(path).policy.double()  # by hand, in float64 as the problem
    w = torch.tensor(THETA0, dtype=torch.float64)
    state = ref.init_state_for(w)
    for t in range(3):
        delta, state = ref(w, w.clone(), state, torch.tensor(float(t), dtype=torch.float64), {})
        w = w - delta
    assert finite
    torch.testing.assert_close(nxt.teachers[0]["params"]["w"], w)


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_tbptt_with_imitation_equals_finite_differences_float64(reduce):
    torch.manual_seed(0)
    policy = lo.RNNProp().double()
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(3.0)
    problem = TinyMLPProblem(samples=96, batch_size=8, dtype=torch.float64)
    teachers = [RuleTeacher(Adam()), RuleTeacher(RMSProp())]
    system = LearnedOptimizerSystem(policy, problem, unroll_len=4, scale_spread=1.0, second_order=True,
                                    distill=Distillation(teachers, reduce))  # fmt: skip
    system.imitation_weight = 0.5
    _fd_check(system)
    assert "imitation" in system.last_parts


def test_stage_weights():
    assert [stage_weight([0.2, 0.1, 0.05, 0.02], "curriculum", s, 3) for s in range(5)] == [0.2, 0.1, 0.05, 0.02, 0.02]
    assert stage_weight([0.0], "repeat", 0, 4) == 0.0 and stage_weight([1.0, 0.5], "repeat", 0, 3) == 0.5


def test_config_group_is_off_by_default_and_hashes_are_unchanged():
    assert config_hash(MetaTrainConfig()) == "ca8d9208b2"
    assert config_hash(load_meta_config(["preset=quick"])) == "357e8a2a20"
    assert config_hash(load_meta_config(["distill=none", "distill.reduce=mean"])) == "ca8d9208b2"
    assert config_hash(load_meta_config(["distill=analytical", "distill.teachers=[adam]"])) != "ca8d9208b2"


def test_presets_compose_like_the_originals():
    cfg = load_meta_config(["preset=conv_train,adam,rmsprop,il_more"])
    assert cfg.distill.name == "analytical" and cfg.distill.teachers == ["adam", "rmsprop"]
    assert cfg.distill.reduce == "max" and cfg.distill.weights == [0.2, 0.1, 0.05, 0.02]
    assert (
        cfg.tasks == ["digits_cnn"]
        and cfg.strategy.name == "curriculum"
        and cfg.preset == "conv_train,adam,rmsprop,il_more"
    )
    assert load_meta_config(["preset=conv_train,adam,rmsprop,il_more,reduce_mean"]).distill.reduce == "mean"
    choice = load_meta_config(["preset=conv_train,cl_fixed", "policy=choice", "policy.pool=small"])
    assert choice.strategy.name == "repeat" and choice.strategy.num_periods == 5 and choice.strategy.depths == [1, 2, 5]
    assert choice.strategy.repeat_threshold == 0.9 and choice.distill.name == "none"
    less = load_meta_config(["preset=conv_train,less_choice"])
    assert (
        less.policy.name == "choice" and less.policy.options == {"pool": "small"} and less.strategy == choice.strategy
    )
    assert load_meta_config(["preset=more_choice"]).policy.options == {"pool": "large"}
    step2 = load_meta_config(["preset=conv_train,il_more", "distill=choice", "distill.teacher=runs/meta/less_choice"])
    assert step2.distill.name == "choice" and step2.policy.name == "rnnprop"


def test_a_missing_teacher_directory_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="distill.teacher"):
        build_distillation(DistillConfig(name="choice", teacher=str(tmp_path / "nothing")))


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["distill=analytical"], "distill.teachers"),
        (["distill=analytical", "distill.teachers=[adamm]"], "adamm"),
        (["distill=choice"], "distill.teacher"),
        (["preset=adam", "distill.reduce=min"], "distill.reduce"),
        (["preset=adam", "distill.weights=[]"], "distill.weights"),
        (["preset=adam", "distill.teacher_scale=both"], "distill.teacher_scale"),
        (["distill=pool"], "distill.name"),
    ],
)
def test_bad_distill_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_meta_config(overrides)


def closed_form_gradient(alpha, teacher_lrs, reduce, weight, second_order, steps=3):
    """d(meta + w * imitation)/d(lr) for the SGD student on 0.5|w|^2: w_i = w_0 r^i with r = 1 - lr. The
    exact derivative of w_i is -i w_0 r^(i-1); the first-order one treats each gradient g_j = w_0 r^j as a
    constant: -w_0 sum_{j<i} r^j."""
    w0 = torch.tensor(THETA0, dtype=torch.float64)
    r = 1 - alpha

    def w(i):
        return w0 * r**i

    def dw(i):
        return -i * w0 * r ** (i - 1) if second_order else -w0 * sum(r**j for j in range(i))

    f = lambda i: 0.5 * float(w(i).pow(2).sum())  # noqa: E731
    meta = sum(float(w(i) @ dw(i)) / (f(i) + 1e-10) for i in range(steps)) / steps  # the log f(w_0) term is constant
    imitation = 0.0
    for i in range(1, steps + 1):
        grads, values = [], []
        for c in teacher_lrs:
            diff = w(i) - w0 * (1 - c) ** i
            dist = 0.5 * float(diff.pow(2).sum())
            values.append(math.log(dist + 1e-10))
            grads.append(float(diff @ dw(i)) / (dist + 1e-10))
        imitation += grads[values.index(max(values))] if reduce == "max" else sum(grads) / len(grads)
    return meta + weight * imitation / steps


@pytest.mark.parametrize("second_order", [True, False])
@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_first_and_second_order_meta_gradients_with_imitation_in_closed_form(second_order, reduce):
    from optimlab.learned.estimators import TBPTT

    system = system_with([SGD(lr=0.5), SGD(lr=0.25)], reduce=reduce, weight=0.3)
    system.second_order = second_order
    estimator = TBPTT(system)
    grads, _, _ = estimator.estimate(system.weights(), estimator.reset(0), torch.Generator())
    expected = closed_form_gradient(0.1, [0.5, 0.25], reduce, 0.3, second_order)
    assert float(grads["lr"]) == pytest.approx(expected, rel=1e-9)
