"""Config: typed groups, dotted overrides, YAML files, and errors that name the key."""

import pytest

from optimlab.config import config_hash, from_tree, load_config, load_config_file, to_tree, to_yaml
from optimlab.errors import ConfigError


def test_overrides_and_shorthand():
    cfg = load_config(["task=toy", "optim=sgd", "optim.lr=0.1", "optim.momentum=0.9", "train.steps=7", "seed=3"])
    assert cfg.task.name == "toy" and cfg.optim.name == "sgd"
    assert cfg.optim.kwargs["lr"] == 0.1 and cfg.optim.kwargs["momentum"] == 0.9
    assert cfg.train.steps == 7 and cfg.seed == 3


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(["task=toy", "task.features=4", "optim=adam", "optim.betas=[0.8,0.9]", "schedule=step",
                       "schedule.milestones=[5,10]"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    again = load_config_file(path)
    assert again == cfg
    assert from_tree(to_tree(cfg)) == cfg
    assert config_hash(again) == config_hash(cfg)
    assert again.optim.kwargs["betas"] == (0.8, 0.9)  # tuples stay tuples for torch


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: toy\noptim:\n  name: sgd\n  lr: 0.5\ntrain.steps: 9\n")
    cfg = load_config_file(path, ["optim.lr=0.25"])
    assert cfg.optim.kwargs["lr"] == 0.25 and cfg.train.steps == 9


def test_hash_ignores_run_dir_and_logging_but_not_hyperparameters():
    a = load_config(["task=toy", "run_dir=/x", "log.tensorboard=true"])
    b = load_config(["task=toy", "run_dir=/y"])
    c = load_config(["task=toy", "optim.lr=0.5"])
    assert config_hash(a) == config_hash(b) != config_hash(c)


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["trian.steps=1"], "trian"),
        (["train.stepz=1"], "stepz"),
        (["train.steps=abc"], "train.steps"),
        (["train.steps=-1"], "train.steps"),
        (["train.log_every=0"], "train.log_every"),
        (["task=toy", "task.featurez=3"], "featurez"),
        (["task=toy", "task.features=1.5"], "task.features"),
        (["task=nosuchtask"], "nosuchtask"),
        (["optim=adamm"], "adamm"),
        (["optim=adam", "optim.momentum=0.9"], "optim.momentum"),
        (["optim=sgd", "optim.momentum=fast"], "optim.momentum"),
        (["optim=sgd", "optim.nesterov=3"], "optim.nesterov"),
        (["optim.lr=-1"], "optim.lr"),
        (["schedule=cosin"], "schedule.name"),
        (["train.amp=fp8"], "train.amp"),
        (["hyper.holdout_fraction=1.5"], "hyper.holdout_fraction"),
        (["seed"], "seed"),
    ],
)
def test_bad_input_names_the_key(overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(["task=toy", *overrides] if not overrides[0].startswith("task=") else overrides)


def test_unknown_optimizer_suggests_close_match():
    with pytest.raises(ValueError, match="did you mean adam"):
        load_config(["optim=adamm"])


def test_missing_or_malformed_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config_file(bad)
