"""pytorch_optimizer's optimizers as `po.<name>`: listed, validated like the others, and they train."""

import importlib.util

import pytest

from optimlab.config import load_config
from optimlab.errors import ConfigError
from optimlab.optim import available
from optimlab.optim import zoo

needs_zoo = pytest.mark.skipif(not zoo.installed(), reason="pytorch_optimizer is not installed (pip install 'optimlab[zoo]')")


@needs_zoo
@pytest.mark.parametrize("name, lr", [("po.lion", 3e-3), ("po.adabelief", 1e-2), ("po.lamb", 1e-2)])
def test_three_zoo_optimizers_train(tmp_path, name, lr):
    from optimlab.train import train

    summary = train(load_config([
        "task=digits_logreg", f"optim={name}", f"optim.lr={lr}", "train.steps=60", "train.eval_every=30",
        "train.log_every=10", f"run_dir={tmp_path / 'run'}", "log.progress=never",
    ]))  # fmt: skip
    assert summary["status"] == "completed" and summary["optim"] == name
    assert summary["final"]["val/accuracy"] > 0.5  # ten classes: chance is 0.1


@needs_zoo
def test_zoo_names_are_listed_and_validated():
    assert {"po.lion", "po.adabelief", "po.lamb"} <= set(available(zoo=True))
    assert not any(name.startswith("po.") for name in available())  # optimlab's own only
    assert load_config(["optim=po.lion"]).optim.kwargs["betas"] == (0.9, 0.99)
    with pytest.raises(ConfigError, match="unknown config key 'optim.momentum' for optimizer 'po.lion'"):
        load_config(["optim=po.lion", "optim.momentum=0.9"])
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(["optim=po.lion", "optim.lr=fast"])
    with pytest.raises(ConfigError, match="unknown optimizer 'po.lino'; did you mean po.lion"):
        load_config(["optim=po.lino"])


def test_without_the_package_a_po_name_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytorch_optimizer" else real(name, *a))
    assert zoo.zoo_names() == []
    with pytest.raises(ConfigError, match=r"pip install 'optimlab\[zoo\]'"):
        load_config(["optim=po.notregisteredyet"])
