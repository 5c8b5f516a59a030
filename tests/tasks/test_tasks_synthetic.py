"""Generated problems: the noisy quadratic, Rosenbrock and logistic regression."""

from __future__ import annotations

import pytest
import torch

from optimlab.errors import ConfigError
from optimlab.tasks import build_task


def _full_batch(task, split="train"):
    data = getattr(task, split)
    return data.batch(torch.arange(len(data)))


def _set_point(task, point):
    with torch.no_grad():
        task.model.weight.copy_(torch.as_tensor(point, dtype=torch.float32))


def test_quadratic_without_noise_is_the_exact_quadratic(tmp_path):
    task = build_task("quadratic", {"dim": 5, "condition": 1000.0, "noise": 0.0, "train_samples": 10}, tmp_path)
    h = torch.tensor(task.info["curvature"], dtype=torch.float32)
    assert float(h.max() / h.min()) == pytest.approx(1000.0, rel=1e-4)
    w_star = torch.tensor(task.info["optimum"], dtype=torch.float32)
    w = w_star + torch.arange(5.0)
    _set_point(task, w)
    batch = _full_batch(task)
    outputs = task.forward(task.model, batch)
    total, count = task.loss(outputs, batch)
    expected = 0.5 * (h * (w - w_star) ** 2).sum()
    torch.testing.assert_close(total / count, expected)
    metrics = task.metrics(outputs, batch)
    torch.testing.assert_close(metrics["excess_loss"][0] / metrics["excess_loss"][1], expected)
    torch.testing.assert_close(metrics["distance_to_optimum"][0] / count, (w - w_star).norm())
    assert task.main_metric == "loss" and not task.higher_is_better


def test_quadratic_gradient_noise_follows_the_curvature(tmp_path):
    task = build_task("quadratic", {"dim": 4, "condition": 100.0, "noise": 0.5}, tmp_path)
    x = task.train.tensors[0]
    w_star = torch.tensor(task.info["optimum"])
    h = torch.tensor(task.info["curvature"])
    # Per-sample gradient H (w - x): mean H (w - w*), covariance noise^2 H, i.e. x = w* + noise h^-1/2 z.
    z = ((x - w_star) * h.sqrt() / 0.5).double()
    torch.testing.assert_close(z.mean(0), torch.zeros(4, dtype=torch.float64), atol=0.05, rtol=0)  # 5 SE
    torch.testing.assert_close(z.var(0), torch.ones(4, dtype=torch.float64), rtol=0.1, atol=0)


def test_quadratic_start_follows_the_run_seed_and_data_does_not(tmp_path):
    torch.manual_seed(0)
    a = build_task("quadratic", {"dim": 3}, tmp_path)
    torch.manual_seed(1)
    b = build_task("quadratic", {"dim": 3}, tmp_path)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert not torch.equal(a.model.weight, b.model.weight)
    assert not torch.equal(a.train.tensors[0][:5], a.val.tensors[0][:5])


def test_rosenbrock_value_and_optimum(tmp_path):
    task = build_task("rosenbrock", {}, tmp_path)
    batch = _full_batch(task, "val")
    assert task.model.weight.tolist() == [-1.5, 2.0]
    total, count = task.loss(task.forward(task.model, batch), batch)
    assert float(total.detach() / count) == pytest.approx(12.5)
    _set_point(task, [1.0, 1.0])
    outputs = task.forward(task.model, batch)
    total, count = task.loss(outputs, batch)
    total.backward()
    assert float(total.detach()) == 0.0 and task.model.weight.grad.abs().max() == 0
    assert float(task.metrics(outputs.detach(), batch)["distance_to_optimum"][0]) == 0.0


def test_noisy_rosenbrock_is_unbiased(tmp_path):
    task = build_task("rosenbrock", {"noise": 2.0, "start_noise": 0.1}, tmp_path)
    eps = task.train.tensors[0]
    assert eps.std().item() == pytest.approx(2.0, rel=0.05)
    batch = _full_batch(task)
    outputs = task.forward(task.model, batch)
    total, count = task.loss(outputs, batch)
    value = task.metrics(outputs, batch)["function_value"]
    torch.testing.assert_close(total / count, value[0] / value[1] + eps.mean(0) @ task.model.weight)


def test_logreg_labels_follow_the_true_weights(tmp_path):
    torch.manual_seed(0)
    task = build_task("logreg", {"dim": 10, "margin": 4.0}, tmp_path)
    x, y = task.test.tensors
    assert set(y.unique().tolist()) == {0.0, 1.0}
    w_star = torch.tensor(task.info["w_star"], dtype=torch.float32)
    with torch.no_grad():
        task.model.linear.weight.copy_(w_star[None])
        task.model.linear.bias.zero_()
    batch = _full_batch(task, "test")
    metrics = task.metrics(task.forward(task.model, batch), batch)
    assert float(metrics["accuracy"][0] / metrics["accuracy"][1]) > 0.8


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("quadratic", {"condition": 0.5}, "condition"),
        ("quadratic", {"dim": 0}, "dim"),
        ("rosenbrock", {"noise": -1.0}, "noise"),
        ("logreg", {"label_noise": 0.7}, "label_noise"),
        ("logreg", {"train_samples": 0}, "train_samples"),
    ],
)
def test_synthetic_bad_options(name, options, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        build_task(name, options, tmp_path)
