"""SVRG: the control variate against a float64 hand computation, side effects, training and resume."""

import torch
from resume_helpers import logged, stop_resume_matches
from torch import nn

from optimlab.config import load_config
from optimlab.directions import SVRG, Objective
from optimlab.directions.base import read_grads, write_grads
from optimlab.tasks import Split
from optimlab.train import train


def squared_error(outputs, batch):
    return 0.5 * ((outputs.squeeze(-1) - batch[-1]) ** 2).sum(), len(batch[-1])


def least_squares(n=40, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    return Split((x, y)), model, Objective(loss=squared_error)


def hand_gradient(x, y, w):
    """The mean gradient of 0.5 (x w - y)^2: x^T (x w - y) / n."""
    return x.T @ (x @ w - y) / len(y)


def test_svrg_direction_matches_the_hand_computation_in_float64():
    split, model, objective = least_squares()
    svrg = SVRG(model, snapshot_every=10).bind(split, device="cpu", batch_size=7)
    w_snap = model.weight.detach().clone().squeeze(0)
    svrg.infrequent(0, model, objective)
    with torch.no_grad():
        model.weight.add_(0.3)  # the live weights move away from the snapshot
    w = model.weight.detach().clone().squeeze(0)
    index = torch.tensor([3, 11, 17, 29])
    batch = split.batch(index)
    (x, y), (xb, yb) = split.tensors, batch
    expected = hand_gradient(x, y, w_snap) - hand_gradient(xb, yb, w_snap) + hand_gradient(xb, yb, w)
    direction = svrg.direction(model, objective, batch, index)["weight"].squeeze(0)
    torch.testing.assert_close(direction, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(svrg.mu["weight"].squeeze(0), hand_gradient(x, y, w_snap), rtol=1e-12, atol=1e-12)
    # the training path: the same direction from the gradient already in .grad
    model.zero_grad()
    loss_sum, count = objective(model, batch)
    (loss_sum / count).backward()
    write_grads(model, svrg.training_direction(model, objective, batch, index, read_grads(model)))
    torch.testing.assert_close(model.weight.grad.squeeze(0), expected, rtol=1e-12, atol=1e-12)
    assert svrg.costs.full_passes == 1 and svrg.costs.examples == 40


def test_the_control_variate_is_unbiased_over_the_batches():
    split, model, objective = least_squares(n=12)
    svrg = SVRG(model).bind(split, device="cpu", batch_size=5)
    svrg.infrequent(0, model, objective)
    with torch.no_grad():
        model.weight.mul_(-2.0)
    # the mean over every single-example batch is the full gradient at the live weights
    mean = sum(svrg.direction(model, objective, split.batch(torch.tensor([i])))["weight"] for i in range(12)) / 12
    x, y = split.tensors
    torch.testing.assert_close(mean.squeeze(0), hand_gradient(x, y, model.weight.detach().squeeze(0)))


def test_snapshots_and_directions_leave_no_trace():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    split, objective = Split((x, y)), Objective()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    for mode in ("eval", "train"):
        svrg = SVRG(model, snapshot_mode=mode).bind(split, device="cpu", batch_size=8)
        svrg.infrequent(0, model, objective)
        svrg.direction(model, objective, split.batch(torch.arange(6)))
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, buffers[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and model.training


def test_svrg_trains_from_the_config_and_logs_its_costs(tmp_path, toy_overrides):
    summary = train(load_config([*toy_overrides, "direction=svrg", "direction.snapshot_every=15", "train.steps=20"]))
    assert summary["status"] == "completed"
    passes = logged(tmp_path / "run", "direction/extra_full_passes")
    assert passes[-1] == 2.0  # snapshots before steps 0 and 15
    assert logged(tmp_path / "run", "direction/extra_grad_evals")[-1] == 20.0


def test_svrg_resumes_bit_exactly(monkeypatch, tmp_path, toy_overrides):
    overrides = [o for o in toy_overrides if not o.startswith("run_dir")]
    for mode in ("eval", "train"):
        extra = ["direction=svrg", "direction.snapshot_every=7", f"direction.snapshot_mode={mode}"]
        reference, resumed = stop_resume_matches(monkeypatch, tmp_path / mode, [*overrides, *extra])
        assert resumed["params_sha256"] == reference["params_sha256"]


def test_observed_directions_leave_the_trajectory_bit_identical(tmp_path, toy_overrides):
    # direction.apply=false / precond.apply=false: snapshots, clusterings and factor passes run on schedule
    # (dropout in the toy model: the RNG must be untouched), and training is plain SGD, bit for bit.
    overrides = [o for o in toy_overrides if not o.startswith("run_dir")]
    plain = train(load_config([*overrides, "train.steps=15", f"run_dir={tmp_path / 'plain'}"]))
    for name, extra in {
        "svrg": ["direction=svrg", "direction.snapshot_every=4", "direction.snapshot_mode=train"],
        "gc": ["direction=gc", "direction.gc_mode=online", "direction.snapshot_every=6", "direction.online_every=2"],
        "kfac": ["precond=kfac", "precond.t_cov=2", "precond.t_inv=3"],
    }.items():
        apply = "precond.apply=false" if name == "kfac" else "direction.apply=false"
        run_dir = tmp_path / name
        observed = train(load_config([*overrides, *extra, apply, "train.steps=15", f"run_dir={run_dir}"]))
        assert observed["params_sha256"] == plain["params_sha256"], name
        key = "precond/extra_grad_evals" if name == "kfac" else "direction/extra_examples"
        assert logged(run_dir, key)[-1] > 0  # the scheduled updates did run


def test_instruments_measure_the_observed_estimator_without_moving_the_trajectory(tmp_path, toy_overrides):
    # SVRG observed with a snapshot before every measured step: its direction's variance is ~0 there, far
    # below the plain gradient's (the instrument's sgd_ statistics), and training is still plain SGD.
    overrides = [o for o in toy_overrides if not o.startswith("run_dir")]
    measured = ["instruments=[direction_variance]", "instruments.every=5", "instruments.draws=4", "train.steps=10",
                "task.dropout=0.0"]  # with dropout the live gradient's masks would differ from the snapshot's
    plain = train(load_config([*overrides, *measured, f"run_dir={tmp_path / 'plain'}"]))
    run_dir = tmp_path / "svrg"
    observed = train(load_config([*overrides, *measured, "direction=svrg", "direction.apply=false",
                                  "direction.snapshot_every=5", "direction.snapshot_mode=eval",
                                  f"run_dir={run_dir}"]))  # fmt: skip
    assert observed["params_sha256"] == plain["params_sha256"]
    var, sgd_var = logged(run_dir, "instr/direction_variance/var"), logged(run_dir, "instr/direction_variance/sgd_var")
    assert len(var) == 2 and all(v < 1e-6 * s for v, s in zip(var, sgd_var))
