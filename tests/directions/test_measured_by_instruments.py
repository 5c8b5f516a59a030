"""direction_variance measures whichever estimator the run keeps (GC, K-FAC, both), on a plain trajectory."""

import math

import pytest

from optimlab.config import load_config
from optimlab.train import train

from resume_helpers import logged


@pytest.mark.parametrize("extra", [
    ["direction=gc", "direction.clusters=3", "direction.snapshot_every=5"],
    ["precond=kfac", "precond.t_cov=2", "precond.t_inv=4"],
    ["direction=gc", "direction.clusters=3", "direction.snapshot_every=5", "precond=kfac"],
])  # fmt: skip
def test_observed_estimators_are_measured(tmp_path, toy_overrides, extra):
    overrides = [o for o in toy_overrides if not o.startswith("run_dir")]
    measured = ["instruments=[direction_variance]", "instruments.every=5", "instruments.draws=3", "train.steps=10"]
    plain = train(load_config([*overrides, *measured, f"run_dir={tmp_path / 'plain'}"]))
    off = [f"{key.split('=')[0]}.apply=false" for key in extra if key.startswith(("direction=", "precond="))]
    observed = train(load_config([*overrides, *measured, *extra, *off, f"run_dir={tmp_path / 'observed'}"]))
    assert observed["params_sha256"] == plain["params_sha256"]
    var = logged(tmp_path / "observed", "instr/direction_variance/var")
    plain_var = logged(tmp_path / "plain", "instr/direction_variance/var")
    assert len(var) == 2 and all(math.isfinite(v) and v > 0 for v in var)
    assert var != plain_var  # the estimator's direction, not the plain gradient
    assert logged(tmp_path / "observed", "instr/direction_variance/sgd_var") == logged(tmp_path / "plain", "instr/direction_variance/sgd_var")
