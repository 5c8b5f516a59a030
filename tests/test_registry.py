"""The one registry shape, and the registries built on it: names, did-you-mean errors, choice lists."""

from __future__ import annotations

import dataclasses

import pytest

from optimlab.config import _CHOICES, load_config
from optimlab.errors import ConfigError
from optimlab.registry import Registry, RegistryNames


def test_register_get_names_describe_contains():
    registry: Registry = Registry("widget")
    registry.register("beta", 2, description="the second")

    @registry.register("alpha")
    def alpha():
        """The first widget.

        More text."""

    assert registry.get("alpha") is alpha and registry.get("beta") == 2
    assert registry.names() == ["alpha", "beta"] and list(registry) == ["alpha", "beta"]
    assert registry.describe("alpha") == "The first widget." and registry.describe("beta") == "the second"
    assert "alpha" in registry and "gamma" not in registry
    registry.register("beta", 2)  # the same object again: no-op
    with pytest.raises(ValueError, match="widget name 'beta' is already registered"):
        registry.register("beta", 3)


def test_unknown_name_is_a_config_error_naming_kind_and_name():
    registry: Registry = Registry("widget")
    registry.register("alpha", 1)
    with pytest.raises(ConfigError, match=r"unknown widget 'alpah'; did you mean alpha\?"):
        registry.get("alpah")
    with pytest.raises(ConfigError, match="unknown widget 'zzz'; choose from alpha"):
        registry.describe("zzz")


def test_config_choice_lists_are_the_registries():
    from optimlab.hyper import CONTROLLERS
    from optimlab.train.schedules import SCHEDULES

    assert list(_CHOICES["schedule.name"]) == SCHEDULES.names() == ["constant", "cosine", "exponential", "sgdr", "step"]
    assert list(_CHOICES["hyper.name"]) == CONTROLLERS.names() == ["marthe", "none", "rtho"]
    assert isinstance(_CHOICES["schedule.name"], RegistryNames)
    with pytest.raises(ConfigError, match="'schedule.name'"):
        load_config(["schedule=cosin"])


def test_a_registered_schedule_becomes_a_config_choice():
    from optimlab.train.schedules import SCHEDULES

    name = "test_registry_halving"
    SCHEDULES.register(name, lambda cfg, optimizer, steps: None, description="test only")
    try:
        assert load_config([f"schedule={name}"]).schedule.name == name
    finally:
        SCHEDULES._objects.pop(name)
        SCHEDULES._descriptions.pop(name)


def test_unknown_hyper_and_backend_name_the_name():
    import torch

    from optimlab.config import HyperConfig
    from optimlab.hyper import build_hyper
    from optimlab.sweep.runner import BACKENDS, make_backend

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ConfigError, match=r"unknown hyper.name 'marth'; did you mean marthe"):
        build_hyper(HyperConfig(name="marth"), optimizer)
    assert BACKENDS == ("fresh", "local", "population", "ray", "slurm")
    with pytest.raises(ConfigError, match=r"unknown backend 'lcoal'; did you mean local\?"):
        make_backend("lcoal", workers=1, cpus_per_run=1, folder=None)


def test_tasks_are_one_explicit_table_and_plugins_still_register():
    from optimlab.tasks import available_tasks, get_task_spec, register_task
    from optimlab.tasks.catalogue import TASKS

    builtin = [spec.name for spec in TASKS]
    assert len(set(builtin)) == len(builtin) and set(builtin) <= set(available_tasks())
    with pytest.raises(ConfigError, match=r"unknown task 'mnist1d_ml'; did you mean mnist1d_mlp"):
        get_task_spec("mnist1d_ml")

    @dataclasses.dataclass
    class Options:
        size: int = 3

    def build(options, data_dir):
        """A plugin task."""

    register_task("test_registry_plugin", options=Options)(build)
    spec = get_task_spec("test_registry_plugin")
    assert spec.build is build and spec.options is Options and spec.description == "A plugin task."
    with pytest.raises(ValueError, match="already registered"):
        register_task("mnist1d_mlp")(build)


def test_optimizer_registry_functions():
    import torch

    from optimlab.optim import available, build_optimizer, get_optimizer_class, register

    assert {"adam", "sgd", "sgd_c", "adam_hd"} <= set(available())
    assert get_optimizer_class("adam") is torch.optim.Adam
    register("adam", torch.optim.Adam)  # the same class again: no-op
    with pytest.raises(ValueError, match="optimizer name 'adam' is already registered"):
        register("adam", torch.optim.SGD)
    with pytest.raises(ConfigError, match=r"unknown optimizer 'adma'; did you mean adam"):
        build_optimizer("adma", [torch.zeros(1, requires_grad=True)])
