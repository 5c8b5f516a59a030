"""The direction and precond config groups: shorthand, validation naming the key, identity, conflicts."""

import pytest

from optimlab.config import Config, config_hash, identity, load_config, to_tree
from optimlab.errors import ConfigError
from optimlab.train import train


def test_shorthand_and_defaults_leave_identity_alone():
    cfg = load_config(["direction=gc", "direction.clusters=4", "precond=kfac", "precond.kl_clip=null"])
    assert (cfg.direction.name, cfg.direction.clusters, cfg.precond.name, cfg.precond.kl_clip) == ("gc", 4, "kfac", None)
    assert to_tree(Config())["direction"]["name"] == "sgd" and "direction" not in identity(Config())
    assert config_hash(Config()) == "31fc522a65"
    assert config_hash(load_config(["direction=sgd", "precond=none"])) == config_hash(load_config([]))
    assert config_hash(load_config(["direction=svrg"])) != config_hash(Config())


@pytest.mark.parametrize("override, key", [
    ("direction=bogus", "direction.name"), ("direction.beta=1.5", "direction.beta"),
    ("direction.snapshot_every=0", "direction.snapshot_every"), ("precond.fisher=exact", "precond.fisher"),
    ("precond.damping=-1", "precond.damping"), ("precond.t_inv=0", "precond.t_inv"),
    ("direction.allocation=neyman", "direction.allocation"),
])  # fmt: skip
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config([override])


@pytest.mark.parametrize("extra, conflict", [
    (["direction=gc", "train.clip_grad_norm=1.0"], "train.clip_grad_norm"),
    (["direction=svrg", "hyper=marthe"], "hyper=marthe"),
    (["precond=kfac", "hyper=rtho"], "hyper=rtho"),
])  # fmt: skip
def test_conflicts_are_one_line_naming_them(tmp_path, toy_overrides, extra, conflict):
    overrides = [o for o in toy_overrides if not o.startswith("optim.momentum")]
    with pytest.raises(ConfigError, match=conflict):
        train(load_config([*overrides, *extra]))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
