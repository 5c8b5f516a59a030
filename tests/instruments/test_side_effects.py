"""Instruments never change the trajectory: same parameters, buffers, RNG and .grad with and without them."""

import functools

import pytest
import torch
from instrument_loop import ALL, cnn_batch_norm, instruments_config, mlp_dropout, train

from optimlab.hyper.marthe import Marthe
from optimlab.optim import get_optimizer_class

OPTIMIZERS = {
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2),
    "sgd_c": lambda params: get_optimizer_class("sgd_c")(params, lr=0.05),
}


def assert_same(a, b):
    for x, y in zip(a.params, b.params):
        assert torch.equal(x, y)
    for x, y in zip(a.buffers, b.buffers):
        assert torch.equal(x, y)
    assert torch.equal(a.rng, b.rng)
    for x, y in zip(a.grads, b.grads):
        assert (x is None and y is None) or torch.equal(x, y)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("model", [mlp_dropout, cnn_batch_norm], ids=["dropout", "batch_norm"])
def test_every_instrument_leaves_the_trajectory_unchanged(optimizer, model):
    plain = train(model, OPTIMIZERS[optimizer], None)
    measured = train(model, OPTIMIZERS[optimizer], instruments_config())
    assert_same(plain, measured)
    logged = {key for stats in measured.stats for key in stats}
    for name in ALL:
        assert f"instr/{name}/cost/seconds" in logged
    assert "instr/direction_variance/nvar/3.weight" in logged or "instr/direction_variance/nvar/5.weight" in logged


def test_marthe_controlled_sgd_is_unchanged():
    hyper = functools.partial(Marthe, hyper_lr=1e-4)
    sgd = OPTIMIZERS["sgd_momentum"]
    plain = train(mlp_dropout, sgd, None, hyper=hyper)
    measured = train(mlp_dropout, sgd, instruments_config(), hyper=hyper)
    assert_same(plain, measured)


def test_clipping_and_study_compat_are_unchanged():
    plain = train(cnn_batch_norm, OPTIMIZERS["adam"], None, clip=0.1)
    measured = train(cnn_batch_norm, OPTIMIZERS["adam"], instruments_config(compat="study", log_spaced=3), clip=0.1)
    assert_same(plain, measured)


def test_stats_are_emitted_once_per_measurement():
    out = train(mlp_dropout, OPTIMIZERS["adam"], instruments_config(names=["step_stats"], every=3), steps=7)
    steps = [stats.get("instr/step_stats/step") for stats in out.stats]
    assert steps == [0.0, None, None, 3.0, None, None, 6.0]


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def test_grad_stats_by_product_equals_its_recomputation_and_changes_nothing():
    cfg = instruments_config(names=["grad_stats"], every=2)
    plain = train(mlp, OPTIMIZERS["adam"], None)
    recomputed = train(mlp, OPTIMIZERS["adam"], cfg)
    byproduct = train(mlp, OPTIMIZERS["adam"], cfg, grad_scale=True)
    assert_same(plain, byproduct)
    for a, b in zip(recomputed.stats, byproduct.stats):
        assert a.keys() == b.keys()
        for key in a:
            if key.endswith(("byproduct", "cost/seconds", "cost/grad_evals")):
                continue
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-9), key
    assert byproduct.stats[0]["instr/grad_stats/byproduct"] == 1.0
    assert byproduct.stats[0]["instr/grad_stats/cost/grad_evals"] == 0
    assert recomputed.stats[0]["instr/grad_stats/byproduct"] == 0.0


def test_by_product_mode_with_dropout_leaves_the_trajectory_unchanged():
    plain = train(mlp_dropout, OPTIMIZERS["sgd_c"], None)
    measured = train(mlp_dropout, OPTIMIZERS["sgd_c"], instruments_config(), grad_scale=True)
    assert_same(plain, measured)
    assert measured.stats[0]["instr/grad_stats/byproduct"] == 1.0
