"""Guard rails: HD optimizers refuse complex parameters and accept a tensor lr; the _C optimizers load a
state dict whose `step` is a plain number (older torch versions); an _hd optimizer does not take a schedule."""

import copy

import pytest
import torch

from optimlab.config import load_config
from optimlab.errors import ConfigError
from optimlab.optim import build_optimizer
from optimlab.optim.critical import Adam_C as AdamC
from optimlab.optim.critical import RMSprop_C as RMSpropC
from optimlab.optim.hypergradient_descent import SGDHD, AdamHD


@pytest.mark.parametrize("cls", [SGDHD, AdamHD])
def test_hd_rejects_complex_parameters(cls):
    real, complex_ = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3, dtype=torch.cfloat))
    with pytest.raises(ValueError, match="does not support complex parameters"):
        cls([real, complex_])
    optimizer = cls([real])
    with pytest.raises(ValueError, match="complex"):
        optimizer.add_param_group({"params": [complex_]})
    assert len(optimizer.param_groups) == 1


@pytest.mark.parametrize("cls", [SGDHD, AdamHD])
def test_hd_accepts_a_tensor_lr_as_torch_does(cls):
    w = torch.nn.Parameter(torch.ones(3))
    optimizer = cls([w], lr=torch.tensor(0.01))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01) and isinstance(optimizer.param_groups[0]["lr"], float)
    w.grad = torch.ones(3)
    optimizer.step()
    assert torch.allclose(w.detach(), torch.full((3,), 0.99))


@pytest.mark.parametrize("cls", [AdamC, RMSpropC])
def test_critical_optimizers_load_a_plain_number_step(cls):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))

    def run(optimizer, n):
        for _ in range(n):
            optimizer.zero_grad()
            (w**2).sum().backward()
            optimizer.step()

    first = cls([w], lr=0.01)
    run(first, 3)
    saved = copy.deepcopy(first.state_dict())  # the live state moves on with the next steps
    old_style = {**saved, "state": {0: {**saved["state"][0], "step": float(saved["state"][0]["step"])}}}
    start = w.detach().clone()
    run(first, 2)
    expected = w.detach().clone()
    with torch.no_grad():
        w.copy_(start)
    second = cls([w], lr=0.01)
    second.load_state_dict(old_style)
    assert torch.is_tensor(second.state[w]["step"]) and float(second.state[w]["step"]) == 3
    run(second, 2)
    assert torch.equal(w.detach(), expected)


@pytest.mark.parametrize("optim", ["sgd_hd", "adam_hd"])
def test_an_hd_optimizer_with_a_schedule_is_a_config_error(optim):
    with pytest.raises(ConfigError, match=f"optim={optim} tunes its own lr"):
        load_config([f"optim={optim}", "schedule=cosine"])
    with pytest.raises(ConfigError, match="schedule.warmup_steps"):
        load_config([f"optim={optim}", "schedule.warmup_steps=10"])
    assert load_config([f"optim={optim}"]).optim.name == optim
    build_optimizer(optim, [torch.nn.Parameter(torch.ones(1))])
