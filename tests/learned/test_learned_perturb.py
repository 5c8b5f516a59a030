"""Perturbations of the policy's weights: the rules against hand computations on a tiny float64 problem, the
meta-gradient taken at the perturbed weights, and clean weights in validation and the packaged optimizer."""

import pytest
import torch
from safetensors.torch import load_file
from test_learned_metatrain import TINY

from optimlab.errors import ConfigError
from optimlab.learned import RNNProp
from optimlab.learned.estimators import TBPTT
from optimlab.learned.metaconfig import PRESETS, load_meta_config
from optimlab.learned.metatrain import MetaTrainer, meta_train
from optimlab.learned.perturb import (
    PerturbConfig,
    Perturbation,
    fgsm_delta,
    perturbed_estimate,
    project,
    rms,
    weight_noise,
)
from optimlab.learned.problems import LinearRegressionProblem
from optimlab.learned.unroll import LearnedOptimizerSystem, evaluate_meta_loss


def _system():
    torch.manual_seed(0)
    policy = RNNProp().double()
    with torch.no_grad():  # larger steps than the untrained policy's, so the meta-loss depends on the weights
        for p in policy.parameters():
            p.mul_(3.0)
    problem = LinearRegressionProblem(samples=64, batch_size=8, dtype=torch.float64)
    return LearnedOptimizerSystem(policy, problem, unroll_len=4, scale_spread=0.5, second_order=True)


def _clean(system):
    return {k: v.detach().clone() for k, v in system.weights().items()}


def _add(a, b):
    return {k: a[k] + b[k] for k in a}


def test_rules_by_hand():
    g = {"a": torch.tensor([0.5, -2.0, 0.0]), "b": torch.tensor([[3.0, -1e-9]])}
    delta = fgsm_delta(g, 0.1)
    assert torch.equal(delta["a"], torch.tensor([0.1, -0.1, 0.0])) and torch.equal(
        delta["b"], torch.tensor([[0.1, -0.1]])
    )
    d = {"a": torch.tensor([0.3, -0.05, -2.0]), "b": torch.tensor([3.0, 4.0]), "c": torch.tensor([0.01, 0.0])}
    inf = project(d, 0.1, "inf")
    assert torch.equal(inf["a"], torch.tensor([0.1, -0.05, -0.1]))
    l2 = project(d, 1.0, "l2")
    assert torch.allclose(l2["b"], torch.tensor([0.6, 0.8]))  # norm 5 -> 1, same direction
    assert torch.equal(l2["c"], d["c"])  # inside the ball: unchanged
    w = torch.tensor([3.0, 4.0])
    assert float(rms(w)) == pytest.approx(((9 + 16) / 2 + 1e-8) ** 0.5)


def test_relative_gaussian_scales_each_tensor_by_its_rms():
    weights = {
        "small": torch.full((4000,), 0.01, dtype=torch.float64),
        "big": torch.full((4000,), 5.0, dtype=torch.float64),
    }
    noise = Perturbation(PerturbConfig("relative_gaussian", magnitude=0.1)).per_use(torch.Generator().manual_seed(0))
    out = noise(weights)
    for k, w in weights.items():
        std = float((out[k] - w).std())
        assert std == pytest.approx(0.1 * float(rms(w)), rel=0.05)


def _grad(system, traj):
    estimator = TBPTT(system)
    return lambda w: estimator.estimate(w, {"trajectory": traj}, torch.Generator())[0]


def test_fgsm_is_eps_sign_of_the_meta_gradient_and_the_estimate_is_taken_there():
    system = _system()
    traj = system.new_state(3)
    w = _clean(system)
    grad = _grad(system, traj)
    g0 = grad(w)
    eps = 1e-3
    at = Perturbation(PerturbConfig("fgsm", magnitude=eps)).weights_for_estimate(w, grad, torch.Generator())
    for k in w:
        assert torch.equal(at[k] - w[k], (w[k] + eps * torch.sign(g0[k])) - w[k])
    # The meta-trainer's estimate: the TBPTT gradient at W + δ, not at W, from the same truncation.
    est, loss, _ = perturbed_estimate(
        Perturbation(PerturbConfig("fgsm", magnitude=eps)),
        TBPTT(system),
        [system],
        w,
        {"trajectory": traj},
        torch.Generator(),
    )
    expected = grad(at)
    assert all(torch.allclose(est[k], expected[k], rtol=0, atol=1e-12) for k in w)
    assert max(float((est[k] - g0[k]).abs().max()) for k in w) > 1e-8
    # Ascent: the meta-loss at W + δ is larger (first order: by about eps * |g|_1).
    clean_loss = TBPTT(system).estimate(w, {"trajectory": traj}, torch.Generator())[1]
    assert loss > clean_loss


@pytest.mark.parametrize("norm", ["inf", "l2"])
def test_pgd_matches_a_hand_loop_and_stays_in_the_ball(norm):
    system = _system()
    traj = system.new_state(5)
    w = _clean(system)
    grad = _grad(system, traj)
    eps, lr, steps = 2e-3, 50.0, 3  # a large rate, so the projection is active
    at = Perturbation(PerturbConfig("pgd", magnitude=eps, steps=steps, norm=norm, lr=lr)).weights_for_estimate(
        w, grad, torch.Generator()
    )
    delta = {k: torch.zeros_like(v) for k, v in w.items()}
    for _ in range(steps):
        g = grad(_add(w, delta))
        for k in delta:
            d = delta[k] + lr * g[k]
            if norm == "inf":
                d = torch.clamp(d, -eps, eps)
            elif float(d.norm()) > eps:
                d = d * eps / d.norm()
            delta[k] = d
    clipped = 0
    for k in w:
        got = at[k] - w[k]
        assert torch.allclose(got, delta[k], rtol=0, atol=1e-12)
        size = float(got.abs().max()) if norm == "inf" else float(got.norm())
        assert size <= eps * (1 + 1e-9)
        clipped += size >= eps * (1 - 1e-9)
    assert clipped > 0  # the ball's boundary was reached


def test_adaptive_pgd_steps_relative_to_each_weight_norm():
    system = _system()
    traj = system.new_state(7)
    w = _clean(system)
    grad = _grad(system, traj)
    m, steps = 1e-3, 2
    at = Perturbation(PerturbConfig("adaptive_pgd", magnitude=m, steps=steps)).weights_for_estimate(
        w, grad, torch.Generator()
    )
    delta = {k: torch.zeros_like(v) for k, v in w.items()}
    for _ in range(steps):
        g = grad(_add(w, delta))
        for k in delta:
            bound = m * float(w[k].norm())
            step = g[k] * (bound / float(g[k].norm())) if float(g[k].norm()) > bound else g[k]
            delta[k] = delta[k] + step
    for k in w:
        assert torch.allclose(at[k] - w[k], delta[k], rtol=0, atol=1e-12)
        assert float((at[k] - w[k]).norm()) <= steps * m * float(w[k].norm()) * (1 + 1e-9)


def test_gaussian_noise_is_drawn_at_every_use_and_only_inside_the_block():
    system = _system()
    traj = system.new_state(1)
    data, traj = system.draw(traj)
    w = _clean(system)
    clean = system.unroll(w, traj, data, differentiable=False)[0]
    noise = Perturbation(PerturbConfig("gaussian", magnitude=1e-2)).per_use(torch.Generator().manual_seed(0))
    calls = []

    def counted(weights):
        calls.append(1)
        return noise(weights)

    with weight_noise([system], counted):
        noisy = system.unroll(w, traj, data, differentiable=False)[0]
    assert len(calls) == system.unroll_len * len(traj.params)  # every step, every optimizee tensor
    assert float(noisy) != float(clean)
    assert system.weight_noise is None
    assert float(system.unroll(w, traj, data, differentiable=False)[0]) == float(clean)


def test_persistent_gaussian_draws_once_per_estimate():
    w = {"a": torch.zeros(5, dtype=torch.float64)}
    p = Perturbation(PerturbConfig("persistent_gaussian", magnitude=0.5))
    assert p.per_use(torch.Generator()) is None
    at = p.weights_for_estimate(w, lambda _: pytest.fail("no gradient needed"), torch.Generator().manual_seed(2))
    expected = 0.5 * torch.randn(5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.equal(at["a"], expected)


def test_perturb_off_leaves_the_config_hash_as_before_the_group_existed():
    from optimlab import rundir
    from optimlab.learned.metaconfig import to_tree
    from optimlab.learned.metatrain import config_hash

    for overrides in ([], ["preset=quick"], ["perturb=none", "perturb.magnitude=0.5"]):
        cfg = load_meta_config(overrides)
        tree = to_tree(cfg)
        tree.pop("perturb")
        assert config_hash(cfg) == rundir.identity_hash(tree)
    assert config_hash(load_meta_config(["perturb=fgsm"])) != config_hash(load_meta_config([]))


def test_config_group_presets_and_errors():
    cfg = load_meta_config(["perturb=pgd", "perturb.norm=l2", "perturb.steps=3", "perturb.magnitude=1e-2"])
    assert (cfg.perturb.name, cfg.perturb.norm, cfg.perturb.steps) == ("pgd", "l2", 3)
    for name, expected in [("gaussian", 1e-3), ("relative_gaussian", 5e-4), ("fgsm", 1e-3), ("pgd", 1e-4),
                           ("adaptive_pgd", 1e-3), ("persistent_gaussian", 1e-3)]:  # fmt: skip
        cfg = load_meta_config([f"preset={name}"])
        assert cfg.perturb.name == name and cfg.perturb.magnitude == expected
        assert cfg.tasks == PRESETS["quick"]["tasks"]
    for bad, key in [("perturb=sam", "perturb.name"), ("perturb.norm=l1", "perturb.norm"),
                     ("perturb.magnitude=0", "perturb.magnitude"), ("perturb.steps=0", "perturb.steps")]:  # fmt: skip
        with pytest.raises(ConfigError, match=key):
            load_meta_config([bad])


SHORT = ["strategy.depths=[1]", "strategy.validation_depths=[2]", "strategy.epochs=2", "strategy.max_periods=2"]


def _trainer(tmp_path, *extra):
    cfg = load_meta_config([*TINY, f"run_dir={tmp_path}", *extra])
    return MetaTrainer(cfg, tmp_path)


def _first_meta_gradient(trainer):
    captured = {}
    step = trainer.meta_opt.step

    def capture(grads):
        captured.update({k: v.clone() for k, v in grads.items()})
        return step(grads)

    trainer.meta_opt.step = capture
    trainer.meta_iteration()
    return captured


@pytest.mark.parametrize("kind", ["gaussian", "fgsm"])
def test_meta_training_gradient_changes_and_validation_stays_clean(tmp_path, kind):
    clean = _trainer(tmp_path / "clean")
    perturbed = _trainer(tmp_path / kind, f"perturb={kind}", "perturb.magnitude=0.05")
    assert perturbed.validate() == clean.validate()  # validation never sees the perturbation
    g_clean, g_pert = _first_meta_gradient(clean), _first_meta_gradient(perturbed)
    assert max(float((g_clean[k] - g_pert[k]).abs().max()) for k in g_clean) > 1e-6
    assert all(system.weight_noise is None for system in perturbed.systems)
    # After one step both validate on their own weights, noise-free: repeated validation is identical.
    assert perturbed.validate() == perturbed.validate()


def test_packaged_optimizer_and_recorded_validation_use_the_clean_weights(tmp_path):
    run = tmp_path / "run"
    summary = meta_train(
        load_meta_config([*TINY, f"run_dir={run}", *SHORT, "perturb=gaussian", "perturb.magnitude=0.05"])
    )
    chosen = summary["final"]["checkpoint"]
    packaged = load_file(str(run / "weights.safetensors"))
    period = load_file(str(run / "periods" / f"{chosen}.safetensors"))
    assert packaged.keys() == period.keys() and all(torch.equal(packaged[k], period[k]) for k in period)
    trainer = MetaTrainer(load_meta_config([*TINY, f"run_dir={run}", *SHORT, "perturb=gaussian"]), run)
    trainer.policy.load_state_dict(period)
    s = trainer.cfg.strategy
    record = next(r for r in summary["periods"] if r["checkpoint"] == chosen)
    from optimlab.learned import strategies
    from optimlab.learned.problems import seed_mix

    seeds = [seed_mix(s.validation_seed, i) for i in range(s.validation_trajectories)]
    depth = strategies.validation_depth(s, record["stage"])
    value = evaluate_meta_loss(trainer.systems[0], trainer.weights, seeds, depth)
    assert value == record["val/meta_loss"]


def test_stopped_and_resumed_perturbed_run_ends_bit_identical(tmp_path, monkeypatch):
    from optimlab.learned import metatrain

    overrides = [*TINY, *SHORT, "perturb=relative_gaussian", "perturb.magnitude=0.05"]
    whole = meta_train(load_meta_config([*overrides, f"run_dir={tmp_path / 'whole'}"]))
    original, calls = MetaTrainer.meta_iteration, []

    def stopping(self):
        calls.append(1)
        if len(calls) == 2:
            metatrain.request_stop()
        return original(self)

    monkeypatch.setattr(MetaTrainer, "meta_iteration", stopping)
    split = load_meta_config([*overrides, f"run_dir={tmp_path / 'split'}"])
    assert meta_train(split)["status"] == "interrupted"
    monkeypatch.setattr(MetaTrainer, "meta_iteration", original)
    resumed = meta_train(split)
    assert resumed["status"] == "completed" and resumed["policy_sha256"] == whole["policy_sha256"]
