"""digits_cnn's `pools` option and the digits_resnet task (the deeper and BatchNorm problems of the
amalgamation evaluation suite)."""

import pytest
import torch
from torch import nn

from optimlab.errors import ConfigError
from optimlab.tasks import build_task


def test_pools_default_is_the_original_net_and_explicit_pools_place_the_max_pools():
    torch.manual_seed(0)
    default = build_task("digits_cnn", {}).model
    torch.manual_seed(0)
    explicit = build_task("digits_cnn", {"pools": [0, 1]}).model
    a, b = default.state_dict(), explicit.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    deeper = build_task("digits_cnn", {"channels": [16, 32, 32, 64, 64], "pools": [2, 4]}).model
    kinds = [type(m).__name__ for m in deeper.features]
    assert kinds.count("Conv2d") == 5 and [i for i, k in enumerate(kinds) if k == "MaxPool2d"] == [6, 11]
    assert deeper.classifier[1].in_features == 64 * 2 * 2
    assert deeper(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    for bad, match in (({"pools": [2]}, "pools"), ({"channels": [4, 4, 4, 4]}, "too small for 4 pooling")):
        with pytest.raises(ConfigError, match=match):
            build_task("digits_cnn", bad)
    build_task("digits_cnn", {"channels": [4, 4, 4, 4], "pools": [0, 1, 2]})  # fine: three pools


def test_digits_resnet_has_batch_norm_and_checks_its_depth():
    task = build_task("digits_resnet", {"depth": 14, "width": 4})
    assert any(isinstance(m, nn.BatchNorm2d) for m in task.model.modules())
    x, y = task.train.batch(torch.arange(5))
    assert task.model(x).shape == (5, 10)
    with pytest.raises(ConfigError, match="depth"):
        build_task("digits_resnet", {"depth": 10})
